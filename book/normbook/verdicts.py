"""The vocabulary of verdicts the book uses for runs over seeds.

A sentence that compares two methods names one verdict, and its check
fails when the numbers support any other: a stronger one, a weaker one or
the reverse. Each comparison of A against B over seeds falls into exactly
one of five verdicts, from the per-seed values of a quantity where larger
is better (pass ``higher_is_better=False`` for losses and errors):

* **A beats B on every seed** — A's worst seed is above B's best;
* **A beats B on average** — not on every seed, but A's mean is above B's
  by more than the seeds' noise: twice the standard error of the
  difference of the means, 2·√(s_A²/n_A + s_B²/n_B) with s the standard
  deviation over seeds (a difference that large arises by chance in about
  one comparison in twenty when the two do not differ);
* **A and B cannot be ranked** — the ranges of their seeds overlap and the
  difference of their means is within that noise;
* **A trails B on average** and **A trails B on every seed** — the same
  verdicts with A and B exchanged.

A sentence that says only "A beats B" (or "trails") without "on every
seed" names the verdict **beats** (**trails**): on average at least, so
either of the two stronger rankings holds it and anything else fails it.
Use it where the draw of seeds decides between the two (another processor
can move one seed across the other method's range) and the sentence does
not depend on which. **Does not beat** (**does not trail**) is the
one-sided complement: A cannot be ranked against B or trails it (beats
it), for a sentence that only rules one direction out. A sentence that
says how much ("beats it on average by more than two points") adds a
margin to the verdict of the same name.
Two more verdicts are about sizes rather than rankings, and two-sided:
**within x of** (the means differ by at most x, either way) and **about
v** (a value lies within a stated tolerance of v). **At least** and
**more than** are the one-sided bounds, for the sentences that say only
that much.

The functions here only compute; :func:`normbook.claims.claim_verdict` and
its siblings turn them into the checks the chapters print.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Ranking = Literal[
    "beats on every seed",
    "beats on average",
    "cannot be ranked",
    "trails on average",
    "trails on every seed",
]
RANKINGS: tuple[Ranking, ...] = (
    "beats on every seed",
    "beats on average",
    "cannot be ranked",
    "trails on average",
    "trails on every seed",
)
# "beats" and "trails": on average at least (the sentence does not say
# whether on every seed); "does not beat" / "does not trail": everything
# but those two.
COMBINED: dict[str, tuple[Ranking, ...]] = {
    "beats": ("beats on every seed", "beats on average"),
    "trails": ("trails on every seed", "trails on average"),
    "does not beat": (
        "cannot be ranked",
        "trails on average",
        "trails on every seed",
    ),
    "does not trail": (
        "cannot be ranked",
        "beats on average",
        "beats on every seed",
    ),
}
VERDICTS: tuple[str, ...] = RANKINGS + tuple(COMBINED)


def supports(ranking: Ranking, verdict: str) -> bool:
    """Whether evidence ranked ``ranking`` supports the stated ``verdict``
    (one of :data:`VERDICTS`)."""
    return ranking in COMBINED.get(verdict, (verdict,))


def _values(values, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=float).ravel()
    if v.size < 2:
        raise ValueError(
            f"A comparison over seeds needs at least two runs of {name}. "
            f"Received: {name}={values!r}"
        )
    if not np.all(np.isfinite(v)):
        raise ValueError(
            f"A comparison over seeds needs finite values. Received: "
            f"{name}={values!r}"
        )
    return v


@dataclass(frozen=True)
class Comparison:
    """A against B over seeds, oriented so that larger is better.

    Attributes:
        a, b: the per-seed values, negated when smaller is better.
        difference: mean(A) − mean(B) in that orientation (positive when A
            is better).
        noise: twice the standard error of ``difference``,
            2·√(s_A²/n_A + s_B²/n_B) (standard deviations with ``ddof=1``).
        ranking: the one verdict of :data:`RANKINGS` the numbers support.
    """

    a: np.ndarray
    b: np.ndarray
    difference: float
    noise: float
    ranking: Ranking


def compare(a, b, *, higher_is_better: bool = True) -> Comparison:
    """Which of the five ranking verdicts A against B supports."""
    sign = 1.0 if higher_is_better else -1.0
    a = sign * _values(a, "a")
    b = sign * _values(b, "b")
    difference = float(a.mean() - b.mean())
    noise = float(2 * np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size))
    if a.min() > b.max():
        ranking = "beats on every seed"
    elif b.min() > a.max():
        ranking = "trails on every seed"
    elif difference > noise:
        ranking = "beats on average"
    elif -difference > noise:
        ranking = "trails on average"
    else:
        ranking = "cannot be ranked"
    return Comparison(a, b, difference, noise, ranking)


def within(a, b, distance: float) -> bool:
    """The means of A and B differ by at most ``distance``, either way."""
    if not distance > 0:
        raise ValueError(f"distance must be positive. Received: {distance=}")
    difference = _values(a, "a").mean() - _values(b, "b").mean()
    return bool(abs(difference) <= distance)


def about(value: float, target: float, tolerance: float) -> bool:
    """``value`` lies within ``tolerance`` of ``target``, either way."""
    if not tolerance > 0:
        raise ValueError(f"tolerance must be positive. Received: {tolerance=}")
    if not np.isfinite(value):
        return False
    return bool(abs(value - target) <= tolerance)
