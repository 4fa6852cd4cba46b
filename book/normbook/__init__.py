"""Helpers shared by the chapters: data, training, sliders, plots, claims.

Import it in a chapter's first (hidden) cell: ``import normbook as nb``
and call ``nb.setup()``. One package so the chapters stay short; one
module per concern:

* :mod:`normbook.sliders` — figures with sliders, live in Jupyter and
  precomputed for the static site;
* :mod:`normbook.data` — MNIST-1D and scikit-learn's digits, generated or
  shipped locally;
* :mod:`normbook.experiments` — the chapters' models by name
  (:func:`normalizer`, :func:`mlp`, :func:`convnet`) and a grid of
  configurations over seeds (:func:`grid`);
* :mod:`normbook.training` — the one training API (:class:`Trainer`:
  ``fit`` runs, or many runs in one compiled call), results over seeds
  (:class:`Runs`), callbacks, autodiff helpers;
* :mod:`normbook.numerics` — condition numbers on the non-null spectrum;
* :mod:`normbook.plots` — curves with their spread over seeds;
* :mod:`normbook.claims` — the checks behind every sentence that states
  an experimental result;
* :mod:`normbook.verdicts` — the verdicts a comparison over seeds can
  support (beats on every seed, beats on average, cannot be ranked, ...).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import matplotlib  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from normbook import verdicts  # noqa: E402,F401
from normbook.claims import (  # noqa: E402,F401
    ClaimError,
    checked,
    claim,
    claim_about,
    claim_verdict,
    claim_within,
    seeds,
    spread,
)
from normbook.data import digits, mnist1d  # noqa: E402,F401
from normbook.experiments import (  # noqa: E402,F401
    KINDS,
    activation,
    convnet,
    grid,
    mlp,
    normalizer,
)
from normbook.numerics import condition_number  # noqa: E402,F401
from normbook.plots import band, min_max, plot_curves  # noqa: E402,F401
from normbook.sliders import (  # noqa: E402,F401
    SliderFigure,
    figure_png,
    slider_figure,
)
from normbook.training import (  # noqa: E402,F401
    BatchStatisticsAccuracy,
    NoisyShift,
    PreactivationTracker,
    Progress,
    Runs,
    Trainer,
    sync_weights,
    vjp,
    weight_gradients,
)

# Ten distinct colours (matplotlib's C0-C9), so that a figure with up to ten
# series never gives two of them one colour.
COLORS = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


def setup(seed: int = 0) -> None:
    """Seeds every generator, raises floating-point errors, sets the style.

    NumPy raises on division by zero and invalid operations (0/0, inf-inf,
    sqrt of a negative) instead of warning, so a number produced by a
    singular matrix fails the chapter on every machine, not only on the
    ones whose BLAS rounds a zero eigenvalue to exactly zero.
    """
    keras.utils.set_random_seed(seed)
    np.seterr(divide="raise", invalid="raise", over="warn", under="ignore")
    plt.rcParams.update(
        {
            "figure.figsize": (6.4, 3.6),
            "figure.dpi": 100,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            # 11 pt at the frames' 100 dpi: labels of about 15 px.
            "font.size": 11,
            "axes.prop_cycle": matplotlib.cycler(color=COLORS),
        }
    )
