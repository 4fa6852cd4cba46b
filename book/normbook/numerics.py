"""Numbers that mean the same on every machine."""

from __future__ import annotations

import numpy as np


def condition_number(matrix) -> tuple[float, int]:
    """κ of a symmetric positive semi-definite matrix over its non-null
    spectrum, and the rank it was computed on.

    Eigenvalues below ``λ_max · n · machine epsilon`` (NumPy's
    ``matrix_rank`` tolerance) are rounding residues of exact zeros: their
    sign and size depend on the BLAS kernel, so they are left out rather
    than divided by.
    """
    lam = np.linalg.eigvalsh(np.asarray(matrix, dtype=np.float64))
    tol = lam[-1] * len(lam) * np.finfo(np.float64).eps
    nonnull = lam[lam > tol]
    return float(nonnull[-1] / nonnull[0]), len(nonnull)
