"""Orthogonal weight normalization: OWN (Huang et al., 2018, by
eigendecomposition) and ONI (Huang et al., 2020, by Newton iterations), as
Dense and Conv2D layers and as a wrapper for any Keras layer with a
kernel."""

from __future__ import annotations

import warnings
from typing import Any

import keras
from keras import ops

from keraslayers import _linalg, _utils
from keraslayers._kernel_layers import (
    ReparameterizedConv2D,
    ReparameterizedDense,
    ScaleMixin,
)
from keraslayers._kernel_wrapper import KernelWrapper, wrapper_doc

ORTHOGONALIZATIONS = ("newton", "eigh")
FORMS = ("auto", "rows", "columns")


# What a layer's config means. Revision 2 (this one): centered rows span
# at most fan-in − 1 dimensions, so row groups have at most fan-in − 1 rows
# and the column form centers each column over its group's units; ε is
# relative to the group's mean eigenvalue. Revision 1, what a config saved
# without a `revision` entry loads as: groups of up to fan-in rows, the
# column form centered like the rows (as the official ONI code does), an
# absolute ε. A saved model keeps the function it was saved with.
REVISION = 2


def default_group_size(units: int, fan_in: int, revision: int = REVISION):
    """The largest divisor of `units` that is at most the number of
    centered rows that can be orthonormal: fan-in − 1 (fan-in for a
    revision-1 config)."""
    limit = fan_in - 1 if revision >= 2 else fan_in
    return max(d for d in range(1, min(units, limit) + 1) if units % d == 0)


class _OrthogonalMixin(ScaleMixin):
    """Rows of each group of `group_size` output units made orthonormal
    (or, in the column form, the columns of each group)."""

    def _init_orthogonal(
        self,
        orthogonalization,
        num_iterations,
        group_size,
        scale,
        learnable_scale,
        epsilon,
        form="auto",
    ):
        if form not in FORMS:
            raise ValueError(
                f"{type(self).__name__}: unknown `form`, expected one of "
                f"{FORMS}. Received: form={form!r}"
            )
        self.form = form
        if orthogonalization not in ORTHOGONALIZATIONS:
            raise ValueError(
                f"{type(self).__name__}: unknown `orthogonalization`, "
                f"expected one of {ORTHOGONALIZATIONS}. Received: "
                f"orthogonalization={orthogonalization!r}"
            )
        self.orthogonalization = orthogonalization
        self.num_iterations = _utils.check_int(
            self, "num_iterations", num_iterations, minimum=0
        )
        self.group_size = (
            None
            if group_size is None
            else _utils.check_int(self, "group_size", group_size, minimum=1)
        )
        self._init_scale(scale, learnable_scale)
        self.epsilon = _utils.check_number(
            self, "epsilon", epsilon, minimum=0.0, strict_minimum=True
        )
        self._revision = REVISION

    @classmethod
    def from_config(cls, config, *args, **kwargs):
        config = dict(config)
        # A config without `revision` was saved by revision 1 (see
        # REVISION); one without `form` orthogonalized rows.
        revision = config.pop("revision", 1)
        config.setdefault("form", "rows")
        layer = super().from_config(config, *args, **kwargs)
        layer._revision = revision
        return layer

    def _resolved_form(self, units, fan_in):
        if self.form != "auto":
            return self.form
        # The official ONI code (ONI_Linear, ONI_Conv2d) orthogonalizes the
        # columns of a layer with more output units than fan-in; OWN's code
        # has rows only. An explicit `group_size` asks for row groups.
        tall = units > fan_in and self.group_size is None
        if self._revision >= 2:
            # Columns centered over a group's units span at most units − 1
            # dimensions: fan-in of them need units > fan-in too.
            tall = tall and units - 1 >= fan_in
        return (
            "columns" if tall and self.orthogonalization == "newton" else "rows"
        )

    def _build_reparameterization(self, units, fan_in):
        self._form = self._resolved_form(units, fan_in)
        # Centering takes one dimension: fan-in − 1 centered rows, or (in
        # the column form) fan-in columns centered over fan-in + 1 units.
        centered = 1 if self._revision >= 2 else 0
        if fan_in - centered < 1:
            raise ValueError(
                f"{type(self).__name__}: centered rows of fan-in 1 are zero; "
                "orthogonalization needs a fan-in of at least 2. Received: "
                f"fan_in={fan_in}"
            )
        if self._form == "columns":
            size = self.group_size or units
            if size < fan_in or units % size:
                raise ValueError(
                    f"{type(self).__name__}: in the column form each group "
                    f"of output units must have at least fan-in "
                    f"({fan_in}) rows, for its columns to be orthonormal, "
                    f"and divide the units ({units}). Received: group_size="
                    f"{self.group_size}, form={self.form!r}"
                )
            if size < fan_in + centered:
                self._warn_rank_deficient(size, "columns", fan_in)
            self._size = size
            self._groups = units // size
            self._build_scale(units)
            return
        size = self.group_size or default_group_size(
            units, fan_in, self._revision
        )
        if size > fan_in:
            raise ValueError(
                f"{type(self).__name__}: at most fan-in ({fan_in}) rows can "
                f"be orthonormal, so `group_size` must be <= {fan_in} "
                f"(<= {fan_in - 1} for centered rows). Received: "
                f"group_size={self.group_size}"
            )
        if size > fan_in - centered:
            self._warn_rank_deficient(size, "rows", fan_in)
        if units % size:
            raise ValueError(
                f"{type(self).__name__}: `group_size` must divide the number "
                f"of output units ({units}). Received: "
                f"group_size={self.group_size}"
            )
        self._size = size
        self._groups = units // size
        self._build_scale(units)

    def _warn_rank_deficient(self, size, form, fan_in):
        # A legitimate choice (the papers allow groups of fan-in rows), but
        # not what the docstring's W Wᵀ = I promises: say so once, at build.
        gram = "W Wᵀ" if form == "rows" else "Wᵀ W"
        warnings.warn(
            f"{type(self).__name__}: a group of {size} centered {form} "
            f"on fan-in {fan_in} spans {size - 1} dimensions, so one "
            f"direction of each group stays at zero ({gram} has a zero "
            f"eigenvalue, not only ones). group_size={size} was asked for; "
            f"the default groups are orthonormal.",
            stacklevel=3,
        )

    def _reparameterize(self, v):
        fan_in = v.shape[-1]
        columns = self._form == "columns"
        if columns and self._revision >= 2:
            # WᵀW = I instead of WWᵀ = I: the same computation on Vᵀ, whose
            # rows (V's columns within a group) are the ones centered.
            z = ops.reshape(v, (self._groups, self._size, fan_in))
            z = ops.swapaxes(z, -1, -2)
            z = z - _utils.mean(z, [2], keepdims=True)
        else:
            z = v - _utils.mean(v, [1], keepdims=True)
            z = ops.reshape(z, (self._groups, self._size, fan_in))
            if columns:
                # Revision 1's column form: the rows centered, then Zᵀ.
                z = ops.swapaxes(z, -1, -2)
        s = ops.matmul(z, ops.swapaxes(z, -1, -2))
        if self._revision >= 2:
            # ε relative to the group's mean eigenvalue tr(S)/n, so that W
            # does not depend on V's scale (a small initializer or weight
            # decay would otherwise let an absolute ε dominate S).
            n = s.shape[-1]
            trace = ops.sum(
                ops.diagonal(s, axis1=-2, axis2=-1), axis=-1, keepdims=True
            )
            epsilon = self.epsilon * ops.expand_dims(trace, -1) / n
        else:
            epsilon = self.epsilon
        if self.orthogonalization == "eigh":
            _linalg.warn_if_slow_eigh(
                self,
                s.shape[-1],
                "Use orthogonalization='newton' (ONI), or a smaller "
                "`group_size`.",
            )
            # Eigenvalues below ε are treated as ε: a rank-deficient group
            # (e.g. a zero row) stays finite, a full-rank one is exact.
            floor = epsilon
            if self._revision >= 2:
                # (groups, 1), against the eigenvalues' (groups, n).
                floor = ops.stop_gradient(ops.squeeze(epsilon, -1))
            phi = _linalg.inverse_sqrt_eigh(s, floor=floor)
        else:
            eye = ops.eye(s.shape[-1], dtype=s.dtype)
            phi, _ = _linalg.inverse_sqrt_newton(
                s + epsilon * eye, self.num_iterations, norm="frobenius"
            )
        w = ops.matmul(phi, z)
        if self.orthogonalization == "eigh":
            # One Newton–Schulz polar step, W ← 1.5W − 0.5WWᵀW: the polar
            # factor is its fixed point and the step squares the residual
            # ‖WWᵀ − I‖, so float32 eigh's κ-sized error on a badly
            # conditioned group (seen: 3e-5) drops to rounding level.
            w = 1.5 * w - 0.5 * ops.matmul(
                ops.matmul(w, ops.swapaxes(w, -1, -2)), w
            )
        if columns:
            w = ops.swapaxes(w, -1, -2)
        return self._apply_scale(ops.reshape(w, (-1, fan_in)))

    def _orthogonal_config(self):
        return {
            "revision": self._revision,
            "orthogonalization": self.orthogonalization,
            "num_iterations": self.num_iterations,
            "group_size": self.group_size,
            "form": self.form,
            **self._scale_config(),
            "epsilon": self.epsilon,
        }


_DOC = """
    The stored `kernel` weight is V; the `kernel` property is the effective
    W. Per group of `group_size` output units (rows of W in the papers'
    (units, fan_in) notation), with Z the group's rows centered (each row
    minus its mean over the fan-in):

    ```
    OWN  ("eigh"):   S = Z Zᵀ = U Λ Uᵀ,  W = U Λ^{-1/2} Uᵀ Z
    ONI  ("newton"): S = Z Zᵀ + ε̄I,  S_N = S / ‖S‖_F,
                     B_0 = I,  B_{t+1} = 1.5 B_t − 0.5 B_t³ S_N  (t < T),
                     W = B_T Z / √‖S‖_F
    ```

    with ε̄ = ε · tr(ZZᵀ)/n, `epsilon` relative to the mean eigenvalue of
    the group's n × n matrix ZZᵀ (OWN floors its eigenvalues at ε̄), so
    that W does not depend on V's scale: a small initializer or weight
    decay on V leaves the groups as orthonormal as before.

    **What is orthonormal.** OWN makes the rows of each group orthonormal,
    W Wᵀ = I (times `scale`²), and orthogonal to the vector of ones:
    centered rows span fan-in − 1 dimensions, so a group holds at most
    fan-in − 1 rows, and W·1 = 0 (the layer ignores the mean of its input's
    features, as the papers' centering intends). Rows of different groups
    are not orthogonal to each other. ONI with T iterations approaches the
    same; with the defaults (T = 5) its singular values are within a few
    percent of 1 on well-conditioned groups, not exactly 1.

    times `scale` (1.414 by default, or learned per output unit). The
    defaults, T = 5 and 1.414, are the official ONI code's for
    convolutions (`ONI_Conv2d`); its fully connected `ONI_Linear` uses
    T = 4 and scale 1, which `OrthogonalDense(num_iterations=4, scale=1.0)`
    reproduces. This library keeps one default for both. OWN gives
    W Wᵀ = I in each group: W is the polar factor of Z. ONI with T
    iterations gives singular values b_T(λ/‖S‖_F)·√(λ − ε)/√‖S‖_F for the
    eigenvalues λ of S and the scalar map b ← 1.5b − 0.5b³x from b = 1,
    and tends to OWN as T grows.

    Numerics: ONI's iteration is evaluated in the coupled Newton–Schulz form
    (equal in exact arithmetic); the uncoupled form above diverges for many
    iterations (NaN at 12 on a random 8×16 kernel in float32). OWN's
    eigendecomposition is differentiated in closed form, finite for
    repeated eigenvalues (an orthogonal initializer gives S = I exactly);
    its eigenvalues are floored at ε, so a rank-deficient group (a zero or
    constant row) stays finite, and its result is refined by one
    Newton–Schulz step towards the polar factor (float32 accuracy on badly
    conditioned groups).

    Cost: the kernel side is paid once per step, whatever the batch: per
    group, two products of size `group_size`² × fan-in (S = ZZᵀ and W) and
    either 3T − 3 products of `group_size` × `group_size` matrices
    ("newton") or one eigendecomposition ("eigh"), differentiated too.
    One 512-wide group costs far more than a Dense layer's own products at
    batch 128: its 512 × 512 products do not shrink with the batch.
    `group_size=64` makes the Newton products (512/64)² = 64 times cheaper
    in FLOPs and S = ZZᵀ and W 8 times. The benchmark measures both
    (`make bench`, group weight_dense_large, rows orth_newton and
    orth_newton_g64 against plain; discussed in the book's cost chapter,
    book/ch16_cost.md). TensorFlow's XLA compiles `eigh` into a Jacobi
    iteration, much slower than without XLA at large sizes (the
    benchmark's orth_eigh rows, TensorFlow + XLA against TensorFlow
    without XLA); the layer warns when that happens. JAX uses LAPACK.

    `group_size` rows are made orthonormal together; it must divide the
    number of output units, and the default is the largest divisor within
    fan-in − 1 (64 units on fan-in 64: two groups of 32). A group of
    fan-in rows, as the papers allow, is accepted with a warning: one
    direction of each such group stays at zero.

    More output units than fan-in: rows cannot all be orthonormal, but
    columns can. `form="columns"` computes the same on Vᵀ within each
    group, its columns centered over the group's units, so that WᵀW = I
    in each group (each group then needs at least fan-in + 1 units; the
    default is one group of all units). `form="auto"` (default) takes the
    column form where the official ONI code does, for "newton" when the
    units exceed the fan-in and no `group_size` is given, and row groups
    otherwise; `form="rows"` always takes row groups. The official column
    code centers the rows, as in the row form, which leaves WᵀW = I − 11ᵀ/
    fan-in rather than I, and skips the division of S by ‖S‖_F before its
    iterations; here the columns are centered and both forms normalize, so
    WᵀW = I and the iteration converges.

    A model saved by an earlier version (its config has no `revision`)
    loads with the function it was saved with: groups of up to fan-in
    rows, the column form centered like the rows, an absolute ε.

    Args:
        orthogonalization: "newton" (ONI, default) or "eigh" (OWN).
        num_iterations: T for "newton" (default 5), >= 0.
        group_size: rows per orthogonalized group (default: see above).
        form: "auto" (default), "rows" or "columns": which of WWᵀ and
            WᵀW is made the identity (see above).
        scale: the scale (> 0), 1.414 by default.
        learnable_scale: whether to learn the scale per output unit.
        epsilon: ε (> 0), relative to the mean eigenvalue of ZZᵀ: ONI adds
            ε̄I to S, OWN floors its eigenvalues at ε̄.
        layer_arguments: those of `keras.layers.Dense` or
            `keras.layers.Conv2D`.

    Reference:
        - [Huang et al., 2018](https://arxiv.org/abs/1709.06079),
          Orthogonal Weight Normalization: Solution to Optimization over
          Multiple Dependent Stiefel Manifolds in Deep Neural Networks
          (AAAI 2018).
        - [Huang et al., 2020](https://arxiv.org/abs/2004.00917),
          Controllable Orthogonalization in Training DNNs (CVPR 2020).
"""


@keras.saving.register_keras_serializable(package="keraslayers")
class OrthogonalDense(_OrthogonalMixin, ReparameterizedDense):
    """Dense layer with orthogonal weight normalization (OWN / ONI).

    Example:

    >>> from keraslayers import OrthogonalDense
    >>> layer = OrthogonalDense(64, orthogonalization="newton")
    """

    __doc__ = (__doc__ or "") + _DOC

    def __init__(
        self,
        units: int,
        orthogonalization: str = "newton",
        num_iterations: int = 5,
        group_size: int | None = None,
        scale: float = 1.414,
        learnable_scale: bool = False,
        epsilon: float = 1e-5,
        form: str = "auto",
        **kwargs,
    ):
        super().__init__(units=units, **kwargs)
        self._init_orthogonal(
            orthogonalization,
            num_iterations,
            group_size,
            scale,
            learnable_scale,
            epsilon,
            form,
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._orthogonal_config()}


@keras.saving.register_keras_serializable(package="keraslayers")
class OrthogonalConv2D(_OrthogonalMixin, ReparameterizedConv2D):
    """Conv2D layer with orthogonal weight normalization (OWN / ONI); the
    fan-in of a filter is kernel height × width × input channels.

    Example:

    >>> from keraslayers import OrthogonalConv2D
    >>> layer = OrthogonalConv2D(32, 3, padding="same")
    """

    __doc__ = (__doc__ or "") + _DOC

    def __init__(
        self,
        filters: int,
        kernel_size,
        orthogonalization: str = "newton",
        num_iterations: int = 5,
        group_size: int | None = None,
        scale: float = 1.414,
        learnable_scale: bool = False,
        epsilon: float = 1e-5,
        form: str = "auto",
        **kwargs,
    ):
        super().__init__(filters=filters, kernel_size=kernel_size, **kwargs)
        self._init_orthogonal(
            orthogonalization,
            num_iterations,
            group_size,
            scale,
            learnable_scale,
            epsilon,
            form,
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._orthogonal_config()}


@keras.saving.register_keras_serializable(package="keraslayers")
class OrthogonalWeightNormalization(_OrthogonalMixin, KernelWrapper):
    """Orthogonal weight normalization (OWN / ONI) of any Keras layer with a
    kernel.

    The wrapper version of `OrthogonalDense` / `OrthogonalConv2D`, with the
    same math and arguments (one implementation; their docstring has the
    equations, the costs and the numerics): per group of `group_size`
    output units, the centered rows Z of the (units, fan_in) view of V are
    mapped to W = Φ(ZZᵀ) Z, orthonormal rows (OWN, "eigh": the polar
    factor) or nearly so (ONI, "newton", T iterations), times `scale`;
    `form="columns"` makes the columns of each group orthonormal instead
    (WᵀW = I), for layers with more output units than fan-in, and
    `form="auto"` takes it where the official ONI code does ("newton",
    more units than fan-in, no `group_size`). `group_size` must divide the
    units; it defaults to the largest divisor within fan-in − 1 (centered
    rows), and a group of fan-in rows is accepted with a warning. A
    depthwise kernel typically has more units (channels × multiplier) than
    fan-in (the kernel window).

    Args:
        @LAYER@
        orthogonalization: "newton" (ONI, default) or "eigh" (OWN).
        num_iterations: T for "newton" (default 5), >= 0.
        group_size: output units per orthogonalized group.
        form: "auto" (default), "rows" or "columns": which of WWᵀ and
            WᵀW is made the identity.
        scale: the scale (> 0), 1.414 by default.
        learnable_scale: whether to learn the scale per output unit.
        epsilon: ε (> 0), relative to the mean eigenvalue of ZZᵀ: ONI adds
            ε̄I to S, OWN floors its eigenvalues at ε̄.
        **kwargs: base `Layer` arguments.

    @UNITS@

    Reference:
        - [Huang et al., 2018](https://arxiv.org/abs/1709.06079),
          Orthogonal Weight Normalization: Solution to Optimization over
          Multiple Dependent Stiefel Manifolds in Deep Neural Networks
          (AAAI 2018).
        - [Huang et al., 2020](https://arxiv.org/abs/2004.00917),
          Controllable Orthogonalization in Training DNNs (CVPR 2020).

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keraslayers import OrthogonalWeightNormalization
    >>> layer = OrthogonalWeightNormalization(
    ...     keras.layers.Conv1D(8, 3), orthogonalization="eigh"
    ... )
    >>> tuple(layer(np.ones((2, 10, 4))).shape)
    (2, 8, 8)
    """

    __doc__ = wrapper_doc(__doc__ or "")

    def __init__(
        self,
        layer,
        orthogonalization: str = "newton",
        num_iterations: int = 5,
        group_size: int | None = None,
        scale: float = 1.414,
        learnable_scale: bool = False,
        epsilon: float = 1e-5,
        form: str = "auto",
        **kwargs,
    ):
        super().__init__(layer, **kwargs)
        self._init_orthogonal(
            orthogonalization,
            num_iterations,
            group_size,
            scale,
            learnable_scale,
            epsilon,
            form,
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._orthogonal_config()}
