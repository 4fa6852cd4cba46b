"""The checks behind the book's sentences.

A sentence that states an experimental result is written after a cell that
computes the numbers and calls :func:`claim` with the condition the
sentence asserts. If a change (a library, a seed, another processor) makes
the numbers stop supporting the sentence, the chapter fails to build and
somebody rewrites the sentence: the text changes, not the check.

A claim given a ``key`` also leaves a record of what was checked, so that a
later chapter can quote it with :func:`checked` instead of re-running the
experiment: chapter 15's decision table is built from such records. The
records are JSON files in ``$NORMBOOK_CLAIMS_DIR``, one per key, written
only when the claim holds and only when that variable is set: the build
(``tools/execute_chapters.py``) sets it to ``_build/claims``, so that a
chapter run in JupyterLab, on another backend or with other seeds, cannot
replace the records of the numbers the book shows. :func:`checked` reads
them from ``_build/claims`` when the variable is unset.

Training runs on another processor round differently, and a few hundred
chaotic steps turn the last bits into another draw of each seed's result.
A claim must therefore hold for the distribution of the runs, not for
three lucky draws. Two switches check that, and the build never sets them:

* ``NORMBOOK_SEED_OFFSET=k`` shifts every comparison's seeds by ``k``
  (:func:`seeds`): the same experiment on fresh draws;
* ``NORMBOOK_CLAIMS_SURVEY=<file>`` makes :func:`claim` append one JSON
  line per claim (statement, evidence, whether it held) to the file
  instead of failing, so one run reports every claim of a chapter.

``tools/claim_survey.py`` runs chapters under several offsets in survey
mode and tabulates which claims held.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from normbook import verdicts

REPO_ROOT = Path(__file__).resolve().parents[2]
BOOK_DIR = REPO_ROOT / "book"
_KEY = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


class ClaimError(AssertionError):
    """A sentence of the book that its own numbers no longer support."""


def claims_dir() -> Path:
    """Where keyed claims are read from: ``$NORMBOOK_CLAIMS_DIR`` if set,
    else ``_build/claims`` at the repository's root."""
    return _recording_dir() or REPO_ROOT / "_build" / "claims"


def _recording_dir() -> Path | None:
    """Where keyed claims are written: ``$NORMBOOK_CLAIMS_DIR``, or
    nowhere when it is unset (a chapter run outside the build)."""
    override = os.environ.get("NORMBOOK_CLAIMS_DIR")
    return Path(override) if override else None


def _show(text: str) -> None:
    """``checked: <text>``, set apart as a result on the page: in a kernel
    as a block with its own style (book/_static/normbook.css), which also
    wraps on a narrow page; plain text everywhere else."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover - IPython comes with the book
        shell = None
    if shell is None or not hasattr(shell, "kernel"):
        print(f"checked: {text}")
        return
    from IPython.display import display

    markup = (
        '<div class="normbook-checked"><span class="normbook-checked-mark">'
        f"checked</span> {html.escape(text)}</div>"
    )
    display({"text/plain": f"checked: {text}", "text/html": markup}, raw=True)


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(
            "A claim's key must be a short slug of lowercase letters, digits "
            f"and single hyphens, like 'brn-small-batch'. Received: key={key!r}"
        )


def claim(
    condition, statement: str, evidence: str = "", key: str | None = None
) -> None:
    """Fails the build unless ``condition`` holds; shows what was checked.

    Args:
        condition: the comparison the sentence makes, on the numbers the
            chapter computed (a bool or a NumPy bool).
        statement: the sentence's claim in a few words, shown to the reader
            as ``checked: <statement>``.
        evidence: the numbers behind it, shown in parentheses.
        key: a short slug, unique across the book (``"brn-small-batch"``).
            When given, the condition holds and ``$NORMBOOK_CLAIMS_DIR``
            is set, ``{key, statement, evidence}`` is written there as
            ``<key>.json`` for :func:`checked`; when the condition fails,
            an earlier record of the key is deleted, so nothing quotes a
            claim that no longer holds.
    """
    if key is not None:
        _check_key(key)
    text = statement + (f" ({evidence})" if evidence else "")
    survey = os.environ.get("NORMBOOK_CLAIMS_SURVEY")
    if survey:
        holds = bool(condition)
        record = {"statement": statement, "evidence": evidence, "holds": holds}
        with open(survey, "a", encoding="utf-8") as log:
            log.write(json.dumps(record, ensure_ascii=False) + "\n")
        print(f"{'checked' if holds else 'FAILS'}: {text}")
        return
    folder = _recording_dir()
    if not bool(condition):
        if key is not None and folder is not None:
            (folder / f"{key}.json").unlink(missing_ok=True)
        raise ClaimError(f"the book claims: {text}; the numbers disagree.")
    if key is not None and folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        record = {"key": key, "statement": statement, "evidence": evidence}
        partial = folder / f".{key}.json.tmp"
        partial.write_text(json.dumps(record, ensure_ascii=False, indent=1))
        partial.replace(folder / f"{key}.json")
    _show(text)


def checked(key: str, chapter: str, *, book_dir: Path | None = None) -> dict:
    """The record of a keyed claim that ``chapter`` checked when it ran.

    Args:
        key: the claim's key, as passed to :func:`claim`.
        chapter: the chapter's file name without ``.md``
            (``"ch10_small_batches"``).
        book_dir: the folder of the chapters; the book's by default.

    Returns:
        ``{"key": ..., "statement": ..., "evidence": ...}``.

    Raises:
        ClaimError: if there is no record (the chapter has not run, or its
            claim failed), if the chapter no longer contains
            ``key="<key>"`` (a stale record of a removed claim), or if the
            key appears in another chapter too.
    """
    _check_key(key)
    book = Path(book_dir) if book_dir is not None else BOOK_DIR
    chapter = chapter.removesuffix(".md")
    source = book / f"{chapter}.md"
    if not source.is_file():
        raise ClaimError(f"there is no chapter {source}. Received: {chapter=}")
    pattern = re.compile(rf"""key=(["']){re.escape(key)}\1""")
    uses = {
        path.stem: len(pattern.findall(path.read_text(encoding="utf-8")))
        for path in sorted(book.glob("*.md"))
    }
    uses = {name: n for name, n in uses.items() if n}
    if chapter not in uses:
        raise ClaimError(
            f'{chapter}.md no longer contains key="{key}": the record '
            f"{claims_dir() / (key + '.json')} (if any) is stale, left by a "
            "claim that was removed or renamed"
            + (f"; the key is now in {', '.join(uses)}" if uses else "")
            + ". Quote the claim from the chapter that makes it."
        )
    if len(uses) > 1 or uses[chapter] > 1:
        where = ", ".join(f"{name} ({n}x)" for name, n in uses.items())
        raise ClaimError(
            f"the claim key {key!r} must appear once in the book; found in "
            f"{where}."
        )
    path = claims_dir() / f"{key}.json"
    if not path.is_file():
        raise ClaimError(
            f"no record of the claim {key!r} in {path.parent}: chapter "
            f"{chapter} must run first (`make book` runs the chapters in "
            "order), and its claim must hold."
        )
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("key") != key:
        raise ClaimError(f"{path} records the key {record.get('key')!r}.")
    return record


def seeds(count: int) -> tuple[int, ...]:
    """The seeds of a comparison over ``count`` runs: ``0 … count - 1``,
    shifted by ``$NORMBOOK_SEED_OFFSET`` (0 unless set) to re-draw them."""
    offset = int(os.environ.get("NORMBOOK_SEED_OFFSET", "0"))
    return tuple(range(offset, offset + count))


def spread(values: Sequence[float], digits: int = 3) -> str:
    """``mean [min–max]`` of one quantity over seeds, for tables and text."""
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.{digits}f} [{v.min():.{digits}f}–{v.max():.{digits}f}]"


def _ranking_words(verdict: str, first: str, second: str) -> str:
    """ "beats on average", "OWN", "BN" -> "OWN beats BN on average"."""
    if verdict == "cannot be ranked":
        return f"{first} and {second} cannot be ranked"
    if verdict in ("beats", "trails"):
        return f"{first} {verdict} {second} (on average at least)"
    if verdict in verdicts.COMBINED:
        return f"{first} {verdict} {second}"
    verb, rest = verdict.split(" ", 1)
    return f"{first} {verb} {second} {rest}"


def claim_within(
    a,
    b,
    distance: float,
    *,
    names: tuple[str, str],
    digits: int = 3,
    statement: str | None = None,
    key: str | None = None,
) -> None:
    """Checks that the means of A and B over seeds differ by at most
    ``distance``, either way ("A stays within a point of B")."""
    first, second = names
    mean_a = float(np.mean(a))
    mean_b = float(np.mean(b))
    claim(
        verdicts.within(a, b, distance),
        statement or f"{first} is within {distance:g} of {second}",
        f"{first} {spread(a, digits)} vs {second} {spread(b, digits)}; "
        f"means differ by {abs(mean_a - mean_b):.{digits}f}",
        key=key,
    )


def claim_about(
    value: float,
    target: float,
    tolerance: float,
    *,
    what: str,
    digits: int = 3,
    statement: str | None = None,
    key: str | None = None,
) -> None:
    """Checks that ``value`` is ``target`` give or take ``tolerance``
    ("about 1.5")."""
    claim(
        verdicts.about(value, target, tolerance),
        statement or f"{what} is about {target:g}",
        f"{what} = {value:.{digits}f}, about {target:g} means within "
        f"±{tolerance:g}",
        key=key,
    )


def claim_verdict(
    a,
    b,
    verdict: str,
    *,
    names: tuple[str, str],
    by: float | None = None,
    higher_is_better: bool = True,
    digits: int = 3,
    statement: str | None = None,
    key: str | None = None,
) -> None:
    """Checks that A against B over seeds supports ``verdict`` and no other.

    Args:
        a, b: per-seed values of the same quantity for A and B.
        verdict: one of :data:`normbook.verdicts.VERDICTS`: a ranking
            ("beats on every seed", "beats on average", "cannot be
            ranked", "trails on average", "trails on every seed") or
            "beats" / "trails" (on average at least, either of the two),
            or "does not beat" / "does not trail" (the one-sided
            complements).
        names: what A and B are called in the sentence.
        by: for "beats/trails on average", the margin the sentence states
            ("by more than two points": ``by=0.02``).
        higher_is_better: False for losses and errors.
        digits: decimals in the evidence.
        statement: the sentence's claim; by default the verdict's words.
        key: as for :func:`claim`.

    The check fails when the numbers support a stronger, a weaker or the
    reversed verdict; the failure names the verdict they support.
    """
    if verdict not in verdicts.VERDICTS:
        raise ValueError(
            f"verdict must be one of {verdicts.VERDICTS}. Received: "
            f"verdict={verdict!r}"
        )
    on_average = ("beats on average", "trails on average", "beats", "trails")
    if by is not None and verdict not in on_average:
        raise ValueError(
            "A margin goes with 'beats on average' or 'trails on average' "
            "(or 'beats' / 'trails'). "
            f"Received: verdict={verdict!r}, by={by!r}"
        )
    result = verdicts.compare(a, b, higher_is_better=higher_is_better)
    holds = verdicts.supports(result.ranking, verdict)
    margin = abs(result.difference)
    if by is not None:
        holds = holds and margin > by
    first, second = names
    if statement is None:
        statement = _ranking_words(verdict, first, second)
        if by is not None:
            statement += f" by more than {by:g}"
    sign = 1.0 if higher_is_better else -1.0
    evidence = (
        f"{first} {spread(sign * result.a, digits)} vs {second} "
        f"{spread(sign * result.b, digits)}; means differ by "
        f"{margin:.{digits}f}, seeds' noise {result.noise:.{digits}f}: "
        f"{_ranking_words(result.ranking, first, second)}"
    )
    claim(holds, statement, evidence, key=key)
