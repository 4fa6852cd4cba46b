"""Writes every chapter in the form JupyterLab saves it, or checks it is.

JupyterLab opens a chapter through jupytext and, when the kernel starts,
sets the notebook's kernelspec to the running kernel's; saving then writes
jupytext's canonical MyST (its version in the header, ``ipython3`` code
cells, a blank line after cell options). A chapter kept in exactly that
form opens unmodified and saves byte-identical, so opening a chapter in
Lab never leaves a change in ``git status``.

    python tools/canonical_chapters.py          # rewrite book/*.md in place
    python tools/canonical_chapters.py --check  # exit 1 if one would change
"""

import sys
from pathlib import Path

import jupytext

BOOK = Path(__file__).resolve().parents[1] / "book"
# What ipykernel reports; JupyterLab writes it into the notebook on start.
KERNELSPEC = {
    "display_name": "Python 3 (ipykernel)",
    "language": "python",
    "name": "python3",
}
# Part of what ipykernel reports as language_info; jupytext keeps it out of
# the header but names the code cells' language after its lexer.
LANGUAGE_INFO = {
    "name": "python",
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
}


def canonical(text: str) -> str:
    notebook = jupytext.reads(text, fmt="md:myst")
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    notebook.metadata["language_info"] = dict(LANGUAGE_INFO)
    return jupytext.writes(notebook, fmt="md:myst")


def chapters() -> list[Path]:
    return sorted(
        p
        for p in BOOK.glob("*.md")
        if p.read_text().startswith("---\njupytext:")
    )


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    for path in chapters():
        text = path.read_text()
        new = canonical(text)
        if new != text:
            stale.append(path.name)
            if not check:
                path.write_text(new)
    if check and stale:
        print("not in JupyterLab's saved form:", ", ".join(stale))
        print("run: python tools/canonical_chapters.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
