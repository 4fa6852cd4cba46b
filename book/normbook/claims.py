"""The checks behind the book's sentences.

A sentence that states an experimental result is written after a cell that
computes the numbers and calls :func:`claim` with the condition the
sentence asserts. If a change (a library, a seed, another processor) makes
the numbers stop supporting the sentence, the chapter fails to build and
somebody rewrites the sentence: the text changes, not the check.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ClaimError(AssertionError):
    """A sentence of the book that its own numbers no longer support."""


def claim(condition, statement: str, evidence: str = "") -> None:
    """Fails the build unless ``condition`` holds; shows what was checked.

    Args:
        condition: the comparison the sentence makes, on the numbers the
            chapter computed (a bool or a NumPy bool).
        statement: the sentence's claim in a few words, shown to the reader
            as ``checked: <statement>``.
        evidence: the numbers behind it, shown in parentheses.
    """
    text = statement + (f" ({evidence})" if evidence else "")
    if not bool(condition):
        raise ClaimError(f"the book claims: {text}; the numbers disagree.")
    print(f"checked: {text}")


def spread(values: Sequence[float], digits: int = 3) -> str:
    """``mean [min–max]`` of one quantity over seeds, for tables and text."""
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.{digits}f} [{v.min():.{digits}f}–{v.max():.{digits}f}]"
