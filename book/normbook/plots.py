"""Plotting helpers: curves over seeds with their spread."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def band(ax, x, runs, label: str = "", color=None, **kwargs):
    """The mean over seeds as a line and their range (min–max) as a band.

    ``runs`` has one row per seed. Returns the line.
    """
    runs = np.asarray(runs, dtype=float)
    (line,) = ax.plot(x, runs.mean(0), label=label, color=color, **kwargs)
    ax.fill_between(
        x, runs.min(0), runs.max(0), color=line.get_color(), alpha=0.2, lw=0
    )
    return line


def min_max(groups):
    """Means and min–max whiskers of several groups of runs, for
    ``ax.bar(..., yerr=...)`` or ``ax.errorbar``.

    Returns ``(means, [below, above])``. When every run of a group agrees,
    the mean can differ from the min or max in the last bit, in either
    direction; the whiskers are clipped at 0 so matplotlib never sees a
    negative length (it raises on one).
    """
    groups = [np.asarray(g, dtype=float) for g in groups]
    means = np.array([g.mean() for g in groups])
    below = np.maximum(means - [g.min() for g in groups], 0)
    above = np.maximum(np.array([g.max() for g in groups]) - means, 0)
    return means, [below, above]


def plot_curves(results, key: str = "loss", ax=None, title: str = ""):
    """One band per entry of :func:`normbook.grid`'s results (name →
    :class:`~normbook.training.Runs`): the mean over seeds and their range,
    per record."""
    if ax is None:
        fig, ax = plt.subplots()
    else:
        fig = ax.figure
    for name, runs in results.items():
        curves = runs.curves(key)
        band(ax, np.arange(1, curves.shape[1] + 1), curves, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(key.replace("_", " "))
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    return fig
