"""Batch Kalman Normalization (Wang et al., 2018), as a standalone layer."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keraslayers import _utils


@keras.saving.register_keras_serializable(package="keraslayers")
class BatchKalmanNormalization(_utils.AffineMixin, keras.layers.Layer):
    """Batch Kalman Normalization: batch statistics combined with a prior
    estimate, so that tiny batches are normalized with steadier statistics.

    In training, with batch statistics (μ_B, σ_B²) and a prior (μ̂, σ̂²) per
    channel, and the prior weight p:

    ```
    μ  = p μ̂ + (1 − p) μ_B
    σ² = p σ̂² + (1 − p) σ_B² + p (1 − p) (μ_B − μ̂)²
    y  = γ (x − μ) / √(σ² + ε) + β
    ```

    (the moments of the mixture of the two estimates), used only while the
    prior is plausible, mean(σ̂² / σ_B²) < `gate_ratio`; otherwise the batch
    statistics alone are used. In inference the moving averages of the
    combined (μ, σ²) are used. With `prior_weight=0` the layer is batch
    normalization.

    **Which formulation.** This layer implements the official code's
    simplification (per-channel statistics, the mixture formula above, the
    gate at a ratio of 100, moving averages of the combined statistics with
    decay 0.9, ε = 1e-5), not the paper's transition formulation with full
    covariance matrices propagated by a transition matrix A_k. And it takes
    the prior from a different place: the official code propagates the
    previous layer's statistics through the current layer's convolution
    (sampling relu(N(μ_{k−1}, σ²_{k−1})) and convolving the samples), which
    needs the previous layer's statistics and the current layer's weights
    threaded through the network by hand. A layer in an ordinary
    `Sequential` or functional model sees neither, so here the prior is the
    layer's own running estimate (μ̂, σ̂²) = (moving mean, moving
    variance) from the previous steps: a Kalman update over training steps
    with an identity transition, instead of one over depth. Gradients do not
    flow into the prior (it is a running average), which also differs from
    the official code, where they flow through the sampled prior into the
    earlier layers.

    Keep that in mind when comparing with the paper's numbers: the paper's
    claim (comparable accuracy with 64× smaller batches on CIFAR) was
    measured with the depth-wise prior.

    A batch that reduces over a single element per channel (a dense input
    with batch size 1) has σ_B² = 0; the gate then falls back to the batch
    statistics and the output is β, finite. With two elements per channel
    (a dense input with batch size 2) σ_B² is a one-degree-of-freedom
    estimate, often tiny: the ratio's mean then usually exceeds the gate,
    and the layer mostly behaves as BN (the book's chapter 10 measures the
    gate passing in about 10% of such batches of a 128-unit layer). Raise
    `gate_ratio` for micro-batches of 2 in dense layers.

    Args:
        axis: the channel axis (default -1, channels last; pass
            `axis=1` for channels-first data, as with Keras's
            `BatchNormalization`).
        momentum: of the moving statistics (0.9, the code's decay).
        epsilon: added to the variance (1e-5, the code's).
        prior_weight: p in [0, 1] (0.9, the code's value for micro-batches;
            the code uses 0.05 for large batches).
        gate_ratio: the prior is used while mean(σ̂² / σ_B²) is below this.
        center, scale: whether to learn β and γ.
        initializers: `beta_initializer`, `gamma_initializer`,
            `moving_mean_initializer`, `moving_variance_initializer`, as in
            `BatchNormalization`; likewise `beta_regularizer`,
            `gamma_regularizer`, `beta_constraint`, `gamma_constraint`.
        synchronized: under a `tf.distribute` strategy, all-reduce
            across replicas the sums behind the batch statistics (the
            per-channel sums and squared deviations, so that the gate
            compares the prior with the global batch's variance); see
            `BatchRenormalization` for what this gives and where it
            matters.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: floating tensor of rank >= 2.
        training: whether to use (and update) batch statistics.

    Input shape:
        any rank >= 2 with a known channel dimension. Output: same shape.

    Reference:
        - [Wang et al., 2018](https://arxiv.org/abs/1802.03133), Batch
          Kalman Normalization: Towards Training Deep Neural Networks with
          Micro-Batches. Official code: github.com/wanggrun/
          Kalman-Normalization (`KalmanNorm/kalman_norm.py`).

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((16, 16, 3)),
    ...     keras.layers.Conv2D(8, 3, use_bias=False),
    ...     BatchKalmanNormalization(),
    ...     keras.layers.ReLU(),
    ... ])
    """

    def __init__(
        self,
        axis: int = -1,
        momentum: float = 0.9,
        epsilon: float = 1e-5,
        prior_weight: float = 0.9,
        gate_ratio: float = 100.0,
        center: bool = True,
        scale: bool = True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
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
        self.axis = _utils.check_axis_argument(self, axis)
        self.momentum = _utils.check_momentum(self, momentum)
        self.epsilon = _utils.check_epsilon(self, epsilon)
        self.prior_weight = _utils.check_number(
            self, "prior_weight", prior_weight, minimum=0.0, maximum=1.0
        )
        self.gate_ratio = _utils.check_number(
            self, "gate_ratio", gate_ratio, minimum=0.0, strict_minimum=True
        )
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
        self.moving_mean_initializer = keras.initializers.get(
            moving_mean_initializer
        )
        self.moving_variance_initializer = keras.initializers.get(
            moving_variance_initializer
        )
        self.autocast = False  # see BatchRenormalization

    def build(self, input_shape):
        self._axis = _utils.resolve_axis(self, self.axis, input_shape)
        channels = input_shape[self._axis]
        shape = (channels,)
        self._build_affine(channels)
        self.moving_mean = _utils.add_statistic(
            self, "moving_mean", shape, self.moving_mean_initializer
        )
        self.moving_variance = _utils.add_statistic(
            self, "moving_variance", shape, self.moving_variance_initializer
        )
        self.input_spec = keras.layers.InputSpec(
            ndim=len(input_shape), axes={self._axis: channels}
        )

    def inference_affine(self):
        """Per-channel `(scale, offset)` of the inference map; used by
        `fold_batch_normalization`."""
        scale = ops.rsqrt(self.moving_variance + self.epsilon)
        if self.scale:
            scale = scale * self.gamma
        offset = -self.moving_mean * scale
        if self.center:
            offset = offset + self.beta
        return scale, offset

    def call(self, inputs, training=None, mask=None):
        inputs = _utils.floating_input(self, inputs)
        weights = _utils.mask_weights(self, mask, inputs, self._axis)
        x = _utils.cast_for_math(self, inputs)
        x, axis, restore = _utils.as_matrix(x, self._axis)
        rank = len(x.shape)
        shape = _utils.broadcast_shape(rank, axis, -1)
        if training:
            axes = _utils.reduction_axes(rank, axis)
            if weights is not None:
                weights, _, _ = _utils.as_matrix(weights, self._axis)
            batch_mean, batch_var = _utils.moments(
                x, axes, weights, _utils.replica_context(self)
            )
            batch_var = ops.maximum(batch_var, 0.0)
            prior_mean = ops.cast(self.moving_mean, x.dtype)
            prior_var = ops.cast(self.moving_variance, x.dtype)
            p = self.prior_weight
            mean = p * prior_mean + (1 - p) * batch_mean
            var = (
                p * prior_var
                + (1 - p) * batch_var
                + p * (1 - p) * ops.square(batch_mean - prior_mean)
            )
            # The gate only selects; no gradient flows through it. A zero
            # batch variance gives an infinite (or NaN) ratio, which fails
            # the test and falls back to the batch statistics.
            ratio = _utils.mean(
                ops.stop_gradient(prior_var) / ops.stop_gradient(batch_var),
                [0],
            )
            use_prior = ops.logical_and(p > 0, ratio < self.gate_ratio)
            mean = ops.where(use_prior, mean, batch_mean)
            var = ops.where(use_prior, var, batch_var)
            m = self.momentum
            self.moving_mean.assign(
                m * self.moving_mean
                + (1 - m)
                * ops.cast(ops.stop_gradient(mean), self.moving_mean.dtype)
            )
            self.moving_variance.assign(
                m * self.moving_variance
                + (1 - m)
                * ops.cast(ops.stop_gradient(var), self.moving_variance.dtype)
            )
            scale = ops.rsqrt(var + self.epsilon)
            if self.scale:
                scale = scale * self.gamma
            offset = -mean * scale
            if self.center:
                offset = offset + self.beta
        else:
            scale, offset = self.inference_affine()
        y = x * ops.reshape(scale, shape) + ops.reshape(offset, shape)
        return ops.cast(restore(y), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        ser = _utils.serialize
        return {
            **super().get_config(),
            **self._affine_config(),
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "prior_weight": self.prior_weight,
            "gate_ratio": self.gate_ratio,
            "moving_mean_initializer": ser(
                self.moving_mean_initializer, "initializers"
            ),
            "moving_variance_initializer": ser(
                self.moving_variance_initializer, "initializers"
            ),
            "synchronized": self.synchronized,
        }
