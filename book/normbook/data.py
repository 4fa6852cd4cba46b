"""Data generated or shipped locally: nothing is downloaded."""

from __future__ import annotations

import numpy as np


def mnist1d(num_samples: int = 4000, seed: int = 0):
    """MNIST-1D generated locally (never downloaded): returns
    (x_train, y_train, x_test, y_test) with x of shape (n, 40, 1)."""
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset reseeds the global generators; keep the caller's state.
    py_state = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 (mnist1d uses it)
    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    data = make_dataset(args)
    random.setstate(py_state)
    np.random.set_state(np_state)  # noqa: NPY002
    x_train = data["x"].astype("float32")[..., None]
    x_test = data["x_test"].astype("float32")[..., None]
    return x_train, data["y"], x_test, data["y_test"]


def digits(seed: int = 0, test_fraction: float = 0.25):
    """scikit-learn's 8×8 digits (shipped with the package), flattened and
    scaled to [0, 1]: (x_train, y_train, x_test, y_test)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    cut = int(len(x) * (1 - test_fraction))
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]
