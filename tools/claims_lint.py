"""Checks that a claim's words and its check agree (part of ``make lint``).

Some words promise more than a one-sided comparison of means can check:

* "cannot be ranked", "indistinguishable" — the ranking verdict of that
  name (``nb.claim_verdict(..., "cannot be ranked")``), which also fails
  when one method's worst seed beats the other's best;
* "trails" — a "trails ..." verdict, which fails when A beats B ("does
  not trail": that verdict);
* "within", "about", "far from" — a two-sided check (``nb.claim_within``,
  ``nb.claim_about``, or a condition on an absolute difference, a closeness
  test or a chained bound ``lo < x < hi``);
* "every", "all", "each", "never", "none" said of seeds or runs — a check
  of every run (``all``, ``any``, a minimum or maximum), not of a mean;
  with ``claim_verdict``, "every seed" needs an "on every seed" verdict.

A condition computed before the call (``nb.claim(ok, ...)``) is not seen;
only the statement's words are then checked against the verdict. Where
the words and a check agree in a way this cannot see (a drift that is
already an absolute difference), a comment on the line above the call or
on one of its lines says why and silences it:
``# claims-lint: drift is |median - start|``.

The chapters' code cells are parsed, and each call of ``nb.claim``,
``nb.claim_verdict``, ``nb.claim_within`` and ``nb.claim_about`` whose
statement is written out (a string or an f-string) is checked. Statements
built elsewhere are not seen: this lint catches the common slip (words
stronger than the check), it does not prove a check right.

    python tools/claims_lint.py            # exit 1 and list the mismatches
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import jupytext

BOOK = Path(__file__).resolve().parents[1] / "book"
CLAIMS = ("claim", "claim_verdict", "claim_within", "claim_about")

RANKED = re.compile(r"cannot be ranked|indistinguishable")
TRAILS = re.compile(r"\btrail(s|ing)?\b")
NOT_TRAIL = re.compile(r"\bdo(es)? not trail\b")
TWO_SIDED = re.compile(r"\b(within|about|far from)\b")
EVERY = re.compile(
    r"\b(every|all|each|never|none)\b(?=.*\b(seeds?|runs?)\b)"
    r"|\b(seeds?|runs?)\b(?=.*\b(every|all|each|never|none)\b)"
)
# A condition that bounds a difference on both sides.
TWO_SIDED_CONDITION = re.compile(
    r"\babs\(|\bnp\.abs\(|isclose\(|allclose\(|\bwithin\(|\babout\("
)
# A condition on every element rather than on a mean.
EACH_CONDITION = re.compile(
    r"\ball\(|\bany\(|\.all\(|\.any\(|\bmin\(|\bmax\(|\.min\(|\.max\(|"
    r"\bamin\(|\bamax\(|\bfor\b|\branking\b"
)


def literal(node: ast.AST | None) -> str | None:
    """The text of a written-out statement; ``{}`` for an f-string's
    fields; None when the statement is computed elsewhere."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) else "{}"
            for v in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = literal(node.left), literal(node.right)
        if left is not None and right is not None:
            return left + right
    return None


def _argument(call: ast.Call, position: int, name: str) -> ast.AST | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    if len(call.args) > position:
        return call.args[position]
    return None


def _chained(node: ast.AST | None) -> bool:
    """A bound on both sides (``lo < x < hi``) anywhere in the condition."""
    if node is None:
        return False
    return any(
        isinstance(n, ast.Compare) and len(n.ops) >= 2 for n in ast.walk(node)
    )


def _spread(condition_text: str) -> bool:
    """The largest minus the smallest (or their ratio) of the same values:
    bounded both ways."""
    largest = set(re.findall(r"\bmax\(([^()]*)\)", condition_text))
    smallest = set(re.findall(r"\bmin\(([^()]*)\)", condition_text))
    return bool(largest & smallest)


ANNOTATION = re.compile(r"#\s*claims-lint:\s*\S")


def problems_in(source: str) -> list[tuple[int, str, str]]:
    """(line, statement, what is wrong) for every mismatch in one cell."""
    # IPython syntax (magics, shell escapes) is not Python.
    lines = [
        "" if line.lstrip().startswith(("%", "!")) else line
        for line in source.splitlines()
    ]
    code = "\n".join(lines)
    tree = ast.parse(code)
    found = []
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        func = call.func
        name = func.attr if isinstance(func, ast.Attribute) else None
        if name not in CLAIMS:
            continue
        position = 1 if name == "claim" else 99
        text = literal(_argument(call, position, "statement"))
        if text is None:
            continue
        words = text.lower()
        condition = _argument(call, 0, "condition") if name == "claim" else None
        condition_text = (
            ast.get_source_segment(code, condition) or ""
            if condition is not None
            else ""
        )
        # A condition computed before the call cannot be judged here.
        opaque = isinstance(condition, ast.Name | ast.Attribute | ast.Subscript)
        verdict = None
        if name == "claim_verdict":
            verdict = literal(_argument(call, 2, "verdict"))

        def wrong(why, _text=text, _line=call.lineno, _cond=condition_text):
            if _cond:
                why += f"; condition: {' '.join(_cond.split())}"
            found.append((_line, _text, why))

        if RANKED.search(words) and verdict != "cannot be ranked":
            wrong(
                'says "cannot be ranked": use claim_verdict with that verdict'
            )
        if NOT_TRAIL.search(words):
            if verdict != "does not trail":
                wrong(
                    'says "does not trail": use claim_verdict with that verdict'
                )
        elif TRAILS.search(words) and not (verdict or "").startswith("trails"):
            wrong('says "trails": use claim_verdict with a "trails" verdict')
        span = lines[max(call.lineno - 2, 0) : call.end_lineno]
        if any(ANNOTATION.search(line) for line in span):
            continue
        if TWO_SIDED.search(words) and name == "claim" and not opaque:
            two_sided = (
                TWO_SIDED_CONDITION.search(condition_text)
                or _chained(condition)
                or _spread(condition_text)
            )
            if not two_sided:
                word = TWO_SIDED.search(words).group(1)
                wrong(
                    f'says "{word}": the check must be two-sided '
                    "(claim_within, claim_about, or an absolute difference)"
                )
        if EVERY.search(words):
            word = EVERY.search(words).group(0)
            if (
                name == "claim"
                and not opaque
                and not EACH_CONDITION.search(condition_text)
            ):
                wrong(
                    f'says "{word}": check every element (all, any, min, '
                    "max), not a mean"
                )
            if name == "claim_within":
                wrong(f'says "{word}": claim_within compares means only')
            if (
                name == "claim_verdict"
                and "every seed" in words
                and not (verdict or "").endswith("on every seed")
            ):
                wrong('says "every seed": use an "on every seed" verdict')
    return found


def main() -> int:
    failures = 0
    for path in sorted(BOOK.glob("ch*.md")):
        notebook = jupytext.read(path)
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            for line, statement, why in problems_in(cell.source):
                failures += 1
                print(
                    f"{path.relative_to(BOOK.parent)}: cell {index}, line "
                    f"{line}: {why}\n    statement: {statement!r}"
                )
    if failures:
        print(f"{failures} claim(s) whose words promise more than the check")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
