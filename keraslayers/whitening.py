"""Whitening normalizers: Decorrelated Batch Normalization (ZCA by
eigendecomposition) and Iterative Normalization (Newton iterations)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from keraslayers import _linalg, _utils

# Up to this many groups, each group's product reads its (n, m) columns
# in place, as a strided slice of the (n, channels) rows; beyond it, one
# batched product on a group-major copy (groups, n, m) saves compiling a
# product per group. On XLA's CPU backend (JAX, training step of the
# whitening alone, forward and backward, T = 5) the sliced form was the
# faster on every shape tried, (4096, 256) in groups of 16 and of 64,
# (8192, 64) and (256, 512) in groups of 16: the copies to and from the
# group-major layout and XLA's batched thin products cost more than the
# strided reads. The benchmark's whitening shapes all take the sliced
# form (`make bench`, groups whitening, activation_conv and
# activation_dense); it does not time the batched one.
SLICED_GROUPS = 32


class _Groups:
    """The columns of (n, channels) rows as `groups` groups of `size`, and
    the two products whitening needs on them: per group, Aᵀ B (m × m) and
    A·M (n × m)."""

    def __init__(self, rows, groups: int, size: int):
        self.size = size
        self.groups = groups
        if groups <= SLICED_GROUPS:
            self.slices = [
                rows[:, i * size : (i + 1) * size] for i in range(groups)
            ]
        else:
            self.slices = None
            grouped = ops.reshape(rows, (-1, groups, size))
            self.batched = ops.transpose(grouped, (1, 0, 2))

    def gram(self, other: _Groups):
        """(groups, m, m): selfᵀ other, group by group."""
        if self.slices is None:
            return ops.matmul(
                ops.transpose(self.batched, (0, 2, 1)), other.batched
            )
        return ops.stack(
            [
                ops.matmul(ops.transpose(a), b)
                for a, b in zip(self.slices, other.slices, strict=True)
            ]
        )

    def times(self, mats, transpose: bool):
        """(n, groups · m): each group's rows times its matrix of the
        (groups, m, m) `mats` (transposed with `transpose`)."""
        if self.slices is None:
            if transpose:
                mats = ops.transpose(mats, (0, 2, 1))
            out = ops.transpose(ops.matmul(self.batched, mats), (1, 0, 2))
            return ops.reshape(out, (-1, self.groups * self.size))
        return ops.concatenate(
            [
                ops.matmul(a, ops.transpose(mats[i]) if transpose else mats[i])
                for i, a in enumerate(self.slices)
            ],
            axis=-1,
        )

    @staticmethod
    def sum_of_times(terms):
        """(n, groups · m): Σ_k of `terms`' (groups_k, mats_k) products
        A_k·M_k, summed group by group and concatenated once (a row-vector
        term, one row, broadcasts over the n rows). One pass writes the
        result where adding concatenated products wrote each of them first
        (faster on JAX, whitening's forward and backward on (8192, 64) in
        groups of 16; the benchmark times only this form)."""
        first = terms[0][0]
        if first.slices is None:
            out = sum(ops.matmul(g.batched, mats) for g, mats in terms)
            out = ops.transpose(out, (1, 0, 2))
            return ops.reshape(out, (-1, first.groups * first.size))
        return ops.concatenate(
            [
                sum(ops.matmul(g.slices[i], mats[i]) for g, mats in terms)
                for i in range(first.groups)
            ],
            axis=-1,
        )


class _GroupWhitening(_utils.AffineMixin, keras.layers.Layer):
    """Shared machinery: grouping, centering, covariance, running
    statistics, affine. Subclasses give the whitening matrix of Σ."""

    def __init__(
        self,
        group_size: int,
        axis: int = -1,
        epsilon: float = 1e-5,
        momentum: float = 0.9,
        center: bool = True,
        scale: bool = True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        synchronized: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.synchronized = _utils.check_bool(
            self, "synchronized", synchronized
        )
        # Statistics over the unmasked positions only, and the mask is
        # passed on, as in Keras's BatchNormalization.
        self.supports_masking = True
        _utils.check_layer_dtype(self)
        self.group_size = _utils.check_int(
            self, "group_size", group_size, minimum=1
        )
        self.axis = _utils.check_axis_argument(self, axis)
        # ε must be positive: it is what keeps Σ invertible on
        # rank-deficient batches (fewer samples than channels in a group,
        # constant channels).
        self.epsilon = _utils.check_number(
            self, "epsilon", epsilon, minimum=0.0, strict_minimum=True
        )
        self.momentum = _utils.check_momentum(self, momentum)
        self._init_affine(
            center,
            scale,
            beta_initializer,
            gamma_initializer,
            beta_regularizer,
            gamma_regularizer,
            beta_constraint,
            gamma_constraint,
        )
        # Inputs are cast to the math dtype in `call` (float32, or float64
        # for a float64 layer), not by the base layer: see
        # BatchRenormalization.
        self.autocast = False

    def build(self, input_shape):
        self._axis = _utils.resolve_axis(self, self.axis, input_shape)
        channels = input_shape[self._axis]
        # A group larger than the channels means one group of all channels.
        size = min(self.group_size, channels)
        self._size = size
        self._groups = channels // size
        # Channels that do not fill a last group of `group_size` form a
        # smaller last group (as in the official DBN code), whitened on its
        # own with its own running Φ.
        self._last = channels % size
        self._channels = channels
        self._build_affine(channels)
        self.moving_mean = _utils.add_statistic(
            self, "moving_mean", (channels,), "zeros"
        )

        def identities(shape, dtype=None):
            return ops.cast(ops.broadcast_to(ops.eye(shape[-1]), shape), dtype)

        self.moving_whitening = _utils.add_statistic(
            self, "moving_whitening", (self._groups, size, size), identities
        )
        self.moving_whitening_last = (
            _utils.add_statistic(
                self,
                "moving_whitening_last",
                (1, self._last, self._last),
                identities,
            )
            if self._last
            else None
        )
        self.input_spec = keras.layers.InputSpec(
            ndim=len(input_shape), axes={self._axis: channels}
        )

    def _parts(self, rows):
        """(n, channels) → one `_Groups` per statistic: the full groups,
        and the smaller last group if the channels leave one."""
        full = self._groups * self._size
        parts = [_Groups(rows[:, :full], self._groups, self._size)]
        if self._last:
            parts.append(_Groups(rows[:, full:], 1, self._last))
        return parts

    def _running_whitening(self):
        statistics = [self.moving_whitening]
        if self._last:
            statistics.append(self.moving_whitening_last)
        return statistics

    def whitening_matrix(self, sigma):
        """Returns Φ ≈ Σ^{-1/2} for a (groups, m, m) batch of covariances."""
        raise NotImplementedError

    def inference_affine(self):
        """`(A, b)` with `y = A h + b` on each position's channel vector in
        inference: A = diag(γ)·blockdiag(Φ), b = β − A μ (running Φ, μ).
        Used by `fold_batch_normalization`."""
        channels = self._channels
        dtype = keras.ops.convert_to_numpy(self.moving_whitening).dtype
        a = np.zeros((channels, channels), dtype)
        start = 0
        for statistic in self._running_whitening():
            for phi in np.asarray(keras.ops.convert_to_numpy(statistic)):
                block = slice(start, start + phi.shape[0])
                a[block, block] = phi
                start += phi.shape[0]
        if self.scale:
            a = keras.ops.convert_to_numpy(self.gamma)[:, None] * a
        b = -a @ keras.ops.convert_to_numpy(self.moving_mean)
        if self.center:
            b = b + keras.ops.convert_to_numpy(self.beta)
        return a, b

    def call(self, inputs, training=None, mask=None):
        inputs = _utils.floating_input(self, inputs)
        weights = _utils.mask_weights(self, mask, inputs, self._axis)
        dtype = _utils.math_dtype(self)
        x = ops.moveaxis(ops.cast(inputs, dtype), self._axis, -1)
        moved_shape = ops.shape(x)
        channels = self._channels
        flat = ops.reshape(x, (-1, channels))
        if training:
            context = _utils.replica_context(self)
            if weights is None and context is None:
                # The common case, with a hand-written backward pass (γ
                # applied inside it).
                y, mean, phis, count = self._whiten_batch(flat)
                self._update_moving(mean, phis, count)
                return self._finish(y, moved_shape, scaled=True)
            else:
                # Only the unmasked rows enter the mean and the covariance;
                # under a synchronized strategy, the rows of all replicas
                # (sums all-reduced: the global mean first, then the
                # covariance around it).
                if weights is None:
                    w = ops.ones_like(flat[:, :1])
                else:
                    w = ops.reshape(
                        ops.moveaxis(weights, self._axis, -1), (-1, 1)
                    )
                total, count = _utils.replica_sum(
                    context, [ops.sum(flat * w, axis=0), ops.sum(w)]
                )
                mean = total / ops.maximum(count, 1.0)
                centered = flat - mean
                rows = centered * w
            centered = self._parts(centered)
            products = _utils.replica_sum(
                context,
                [r.gram(r) for r in self._parts(rows)],
            )
            phis = [
                self.whitening_matrix(
                    p / ops.maximum(count, 1.0)
                    + self.epsilon * ops.eye(p.shape[-1], dtype=dtype)
                )
                for p in products
            ]
            self._update_moving(mean, phis, count)
        else:
            mean = ops.cast(self.moving_mean, dtype)
            centered = self._parts(flat - mean)
            phis = [ops.cast(v, dtype) for v in self._running_whitening()]
        return self._finish(self._apply(centered, phis), moved_shape)

    def _apply(self, parts, phis, transpose=True):
        """The whitened (n, channels) rows: each group's rows times Φᵀ
        (times Φ with `transpose=False`)."""
        return ops.concatenate(
            [
                part.times(phi, transpose)
                for part, phi in zip(parts, phis, strict=True)
            ],
            axis=-1,
        )

    def _finish(self, y, moved_shape, scaled=False):
        dtype = y.dtype
        if self.scale and not scaled:
            y = y * ops.cast(self.gamma, dtype)
        if self.center:
            y = y + ops.cast(self.beta, dtype)
        y = ops.moveaxis(ops.reshape(y, moved_shape), -1, self._axis)
        return ops.cast(y, self.compute_dtype)

    def _update_moving(self, mean, phis, count):
        # A batch with one row has no covariance (Σ = εI): it leaves the
        # moving statistics as they are instead of pulling the moving Φ
        # towards ε^{-1/2} I (e.g. the last, one-sample batch of an epoch).
        m = ops.where(
            count > 1,
            ops.cast(self.momentum, self.moving_mean.dtype),
            ops.cast(1.0, self.moving_mean.dtype),
        )
        self.moving_mean.assign(
            m * self.moving_mean
            + (1 - m)
            * ops.cast(ops.stop_gradient(mean), self.moving_mean.dtype)
        )
        for statistic, phi in zip(self._running_whitening(), phis, strict=True):
            statistic.assign(
                m * statistic
                + (1 - m) * ops.cast(ops.stop_gradient(phi), statistic.dtype)
            )

    def whitening_matrix_vjp(self, sigma):
        """`(Φ, backward)`: Φ as `whitening_matrix` gives it, and the map
        from ∂L/∂Φ to ∂L/∂Σ."""
        raise NotImplementedError

    def _whiten_batch(self, flat):
        """Training-mode whitening of the (n, channels) rows of an unmasked
        batch on one replica: `(γ ŷ, μ, [Φ per part], n)`, before β.

        The backward pass is written out instead of derived by automatic
        differentiation: with X_c the centered rows of a group, Φ' = diag(γ)
        Φ (γ scales the rows of Φ, so the affine scale costs no pass over
        the tensor), y = X_c Φ'ᵀ and Σ = X_cᵀ X_c / n + εI,

            ∂L/∂Φ' = Ḡᵀ X_c  (Ḡ = ∂L/∂y),  ∂L/∂γ = rowsum(∂L/∂Φ' ⊙ Φ),
            ∂L/∂Φ = diag(γ) ∂L/∂Φ',  ∂L/∂Σ from Φ's own backward,
            ∂L/∂x = Ḡ Φ' + X_c A − mean_rows(Ḡ) Φ',  A = (∂L/∂Σ + ∂L/∂Σᵀ)/n,

        (the centering's gradient subtracts the row mean of Ḡ Φ'; X_c A has
        none), which takes two n-row matrix products forward and two
        backward, where the derived backward took four and more transposes
        (the book's cost chapter, book/ch16_cost.md, records the one-off
        comparison). γ in Φ' and mean_rows(Ḡ) Φ' as one row made the
        layer's forward and backward faster on JAX ((8192, 64) in groups of
        16) than γ applied to the output and a centered copy of Ḡ. The
        benchmark times this backward (`make bench`, groups whitening,
        activation_conv and activation_dense), not the alternatives."""
        dtype = flat.dtype
        count = ops.cast(ops.shape(flat)[0], dtype)
        rows = ops.maximum(count, 1.0)
        if self.scale:
            gamma = ops.cast(self.gamma, dtype)
        else:
            gamma = ops.ones((self._channels,), dtype)

        def split(vector):
            # γ's entries per part, as (groups, m, 1) columns.
            full = self._groups * self._size
            out = [ops.reshape(vector[:full], (self._groups, self._size, 1))]
            if self._last:
                out.append(ops.reshape(vector[full:], (1, self._last, 1)))
            return out

        def join(columns):
            return ops.concatenate([ops.reshape(c, (-1,)) for c in columns], 0)

        @ops.custom_gradient
        def whiten(flat, gamma):
            mean = _utils.mean(flat, [0])
            parts = self._parts(flat - mean)
            phis, scaled, backwards = [], [], []
            for c, g in zip(parts, split(gamma), strict=True):
                sigma = c.gram(c) / rows
                sigma = sigma + self.epsilon * ops.eye(c.size, dtype=dtype)
                phi, backward = self.whitening_matrix_vjp(sigma)
                phis.append(phi)
                scaled.append(g * phi)
                backwards.append(backward)
            y = self._apply(parts, scaled)

            def grad(*args, upstream=None):
                if upstream is None:
                    upstream = args if len(args) > 1 else args[0]
                d_y = (
                    upstream[0]
                    if isinstance(upstream, (tuple, list))
                    else (upstream)
                )
                d_sigmas, d_gammas = [], []
                for c, backward, d, g, phi in zip(
                    parts,
                    backwards,
                    self._parts(d_y),
                    split(gamma),
                    phis,
                    strict=True,
                ):
                    d_scaled = d.gram(c)
                    d_gammas.append(
                        ops.sum(d_scaled * phi, axis=-1, keepdims=True)
                    )
                    d_sigma = backward(g * d_scaled)
                    d_sigmas.append(
                        (d_sigma + ops.transpose(d_sigma, (0, 2, 1))) / rows
                    )
                # The centering's gradient subtracts the row mean of Ḡ Φ',
                # which is mean_rows(Ḡ) Φ': one row through the products,
                # not a centered copy of Ḡ. X_c A has no row mean.
                negative_mean = self._parts(-_utils.mean(d_y, [0], True))
                d_flat = ops.concatenate(
                    [
                        _Groups.sum_of_times(
                            [(d, phi), (c, d_sigma), (d_mean, phi)]
                        )
                        for d, c, d_mean, phi, d_sigma in zip(
                            self._parts(d_y),
                            parts,
                            negative_mean,
                            scaled,
                            d_sigmas,
                            strict=True,
                        )
                    ],
                    axis=-1,
                )
                return d_flat, join(d_gammas)

            return (y, mean, *phis), grad

        y, mean, *phis = whiten(flat, gamma)
        return y, mean, phis, count

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            **self._affine_config(),
            "group_size": self.group_size,
            "axis": self.axis,
            "epsilon": self.epsilon,
            "momentum": self.momentum,
            "synchronized": self.synchronized,
        }


@keras.saving.register_keras_serializable(package="keraslayers")
class DecorrelatedBatchNormalization(_GroupWhitening):
    """Decorrelated Batch Normalization: ZCA whitening of each group of
    channels over the batch (and spatial) axes.

    For each group of `group_size` channels, with X_c the centered group
    (one column per element of the batch and spatial positions, n columns):

    ```
    Σ = X_c X_cᵀ / n + εI = U Λ Uᵀ
    Φ = U Λ^{-1/2} Uᵀ            (ZCA)
    y = γ · Φ X_c + β           (per-channel γ, β)
    ```

    so the output covariance on the batch is I − εΣ⁻¹. ZCA rather than PCA
    whitening: PCA's rotation Λ^{-1/2}Uᵀ swaps and flips axes from batch to
    batch (stochastic axis swapping) and does not train. Inference uses the
    running mean and the running Φ (exponential moving averages).

    Robustness: the backward pass of an eigendecomposition divides by
    λ_i − λ_j and is NaN for repeated eigenvalues (Σ = c·I is typical right
    after initialization). This layer differentiates Σ^{-1/2} with the
    Daleckii–Krein formula in closed form instead, finite for any positive
    spectrum; ε > 0 keeps Σ positive-definite on rank-deficient batches
    (fewer samples than channels in a group, constant channels). A batch of
    a single sample whitens to zero (β), finite, and, carrying no
    covariance, leaves the moving mean and moving Φ unchanged.

    On JAX, `fit` updates the moving statistics only if a subclassed
    model's `call` passes `training=training` on to this layer (README,
    "Pitfalls").

    Cost: one eigendecomposition per group per training step. TensorFlow's
    XLA compiles it into a Jacobi iteration, much slower than without XLA
    from about 128 channels per group on; the layer warns when that
    happens. `IterativeNormalization` needs only matrix products. The
    benchmark times the two side by side on TensorFlow with and without
    XLA and on JAX (`make bench`, group whitening, groups of 16 to 64;
    rows dbn16 and iternorm16 of activation_conv and activation_dense);
    `eigh` of wider matrices under XLA shows in the orth_eigh rows of
    weight_dense_medium and weight_dense_large.

    Args:
        group_size: channels per whitened group (the paper's m). When it
            does not divide the channels, the last group is smaller (the
            remainder), as in the official code. A group size larger than
            the channel count whitens all channels together.
        axis: the channel axis (default -1, channels last; pass
            `axis=1` for channels-first data, as with Keras's
            `BatchNormalization`).
        epsilon: added to the diagonal of Σ, > 0.
        momentum: of the running mean and running Φ (Keras convention:
            new = momentum · old + (1 − momentum) · batch; the official
            code's 0.1 is momentum=0.9 here).
        center, scale: whether to learn the per-channel β and γ.
        initializers: `beta_initializer`, `gamma_initializer`, and likewise
            `beta_regularizer`, `gamma_regularizer`, `beta_constraint`,
            `gamma_constraint`, for β and γ.
        synchronized: under a `tf.distribute` strategy, all-reduce
            across replicas the sums behind the batch statistics (the
            groups' sums and their covariance sums); see
            `BatchRenormalization` for what this gives and where it
            matters.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: floating tensor of rank >= 2.
        training: whether to whiten with batch statistics (and update the
            running ones).

    Input shape:
        any rank >= 2 with a known channel dimension. Output: same shape.

    Reference:
        - [Huang et al., 2018](https://arxiv.org/abs/1804.08450),
          Decorrelated Batch Normalization.

    Example:

    >>> import keras
    >>> from keraslayers import DecorrelatedBatchNormalization
    >>> layer = DecorrelatedBatchNormalization(group_size=16)
    >>> y = layer(keras.random.normal((64, 32)), training=True)
    """

    def __init__(
        self,
        group_size: int = 16,
        axis: int = -1,
        epsilon: float = 1e-5,
        momentum: float = 0.9,
        **kwargs,
    ):
        super().__init__(
            group_size=group_size,
            axis=axis,
            epsilon=epsilon,
            momentum=momentum,
            **kwargs,
        )

    def whitening_matrix(self, sigma):
        _linalg.warn_if_slow_eigh(
            self,
            self._size,
            "Use IterativeNormalization, or a smaller `group_size`.",
        )
        return _linalg.inverse_sqrt_eigh(sigma)

    def whitening_matrix_vjp(self, sigma):
        _linalg.warn_if_slow_eigh(
            self,
            self._size,
            "Use IterativeNormalization, or a smaller `group_size`.",
        )
        return _linalg.inverse_sqrt_eigh_vjp(sigma)


@keras.saving.register_keras_serializable(package="keraslayers")
class IterativeNormalization(_GroupWhitening):
    """Iterative Normalization (IterNorm): whitening by Newton iterations,
    no eigendecomposition.

    For each group of channels, with Σ as in `DecorrelatedBatchNormalization`:

    ```
    Σ_N = Σ / tr(Σ)
    P_0 = I,  P_{k+1} = 1.5 P_k − 0.5 P_k³ Σ_N   (k < T)
    Φ = P_T / √tr(Σ)
    y = γ · Φ X_c + β
    ```

    With T = `num_iterations` = 0 the output is X_c / √tr Σ; as T grows Φ
    tends to Σ^{-1/2} (full whitening); the paper's T = 5 whitens only
    partly, which the paper argues is a useful middle ground.

    Numerics: the iteration is computed in its coupled Newton–Schulz form
    (Y_0 = Σ_N, Z_0 = I, T_k = (3I − Z_k Y_k)/2, Y ← Y T_k, Z ← T_k Z),
    equal to the paper's P_k in exact arithmetic. The paper's uncoupled
    form loses the commutativity of P_k and Σ_N to rounding and diverges
    for many iterations on an ill-conditioned Σ (NaN in float32 with
    κ(Σ) = 1e4); the coupled form converges instead. Gradients come from
    automatic differentiation through the iterations (matrix products
    only), finite for repeated or tiny eigenvalues. As in DBN, a training
    batch of a single sample carries no covariance and leaves the moving
    mean and moving Φ unchanged.

    On JAX, `fit` updates the moving statistics only if a subclassed
    model's `call` passes `training=training` on to this layer (README,
    "Pitfalls").

    Args:
        group_size: channels per whitened group (default 64, the paper's).
        num_iterations: T, >= 0 (default 5).
        others: `axis`, `epsilon`, `momentum`, `center`, `scale`,
            `synchronized` and the
            β/γ initializers, regularizers and constraints, as in
            `DecorrelatedBatchNormalization`.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: floating tensor of rank >= 2.
        training: whether to whiten with batch statistics (and update the
            running ones).

    Input shape:
        any rank >= 2 with a known channel dimension. Output: same shape.

    Reference:
        - [Huang et al., 2019](https://arxiv.org/abs/1904.03441), Iterative
          Normalization: Beyond Standardization towards Efficient Whitening.

    Example:

    >>> import keras
    >>> from keraslayers import IterativeNormalization
    >>> layer = IterativeNormalization(group_size=16, num_iterations=5)
    >>> y = layer(keras.random.normal((8, 4, 4, 32)), training=True)
    """

    def __init__(
        self,
        group_size: int = 64,
        num_iterations: int = 5,
        axis: int = -1,
        epsilon: float = 1e-5,
        momentum: float = 0.9,
        **kwargs,
    ):
        super().__init__(
            group_size=group_size,
            axis=axis,
            epsilon=epsilon,
            momentum=momentum,
            **kwargs,
        )
        self.num_iterations = _utils.check_int(
            self, "num_iterations", num_iterations, minimum=0
        )

    def whitening_matrix(self, sigma):
        phi, _ = _linalg.inverse_sqrt_newton(sigma, self.num_iterations)
        return phi

    def whitening_matrix_vjp(self, sigma):
        return _linalg.inverse_sqrt_newton_vjp(sigma, self.num_iterations)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_iterations": self.num_iterations}
