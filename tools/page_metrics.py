"""What a reader of each chapter sees: visible code against prose.

    python tools/page_metrics.py            # the table
    python tools/page_metrics.py --check    # exit 1 when a chapter misses

A code cell is visible unless a tag collapses or removes its input
(``hide-input``, ``hide-cell``, ``remove-input``, ``remove-cell``): a
collapsed cell stays on the page, one click away, but is not read on the
way through. Prose is the text of the Markdown cells. The targets are the
book's (issue 29): visible code at most 0.6 times the prose, by
characters, and no visible cell longer than 40 lines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = {"hide-input", "hide-cell", "remove-input", "remove-cell"}
MAX_RATIO = 0.6
MAX_LINES = 40


def chapter_metrics(path: Path) -> dict:
    notebook = jupytext.read(path)
    code = prose = 0
    longest = (0, 0)  # (lines, cell number)
    for number, cell in enumerate(notebook.cells, 1):
        text = cell.source.strip()
        if cell.cell_type == "markdown":
            prose += len(text)
        elif cell.cell_type == "code":
            tags = set(cell.metadata.get("tags", ()))
            if tags & HIDDEN:
                continue
            code += len(text)
            lines = len(text.splitlines())
            longest = max(longest, (lines, number))
    return {
        "chapter": path.stem,
        "code": code,
        "prose": prose,
        "ratio": code / prose if prose else float("inf"),
        "longest_lines": longest[0],
        "longest_cell": longest[1],
    }


def misses(m: dict) -> list[str]:
    out = []
    if m["ratio"] > MAX_RATIO:
        out.append(
            f"visible code is {m['ratio']:.2f}× the prose (at most {MAX_RATIO})"
        )
    if m["longest_lines"] > MAX_LINES:
        out.append(
            f"cell {m['longest_cell']} shows {m['longest_lines']} lines "
            f"(at most {MAX_LINES})"
        )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("chapters", nargs="*", type=Path)
    args = parser.parse_args(argv)
    paths = args.chapters or sorted((ROOT / "book").glob("ch*.md"))
    failed = False
    print(
        f"{'chapter':34} {'code':>6} {'prose':>6} {'ratio':>6} {'longest':>8}"
    )
    for path in paths:
        m = chapter_metrics(path)
        print(
            f"{m['chapter']:34} {m['code']:6d} {m['prose']:6d} "
            f"{m['ratio']:6.2f} {m['longest_lines']:5d} "
            f"(cell {m['longest_cell']})"
        )
        for miss in misses(m):
            failed = True
            print(f"  {m['chapter']}: {miss}")
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
