"""Batch Kalman Normalization (Wang et al., 2018): the layer, with its running
or depth-wise prior, and the transition that propagates statistics."""

from __future__ import annotations

import math
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

    On JAX, `fit` updates the moving statistics only if a subclassed
    model's `call` passes `training=training` on to this layer (README,
    "Pitfalls").

    **Which formulation.** Both forms of the layer implement the
    official code's simplification (per-channel statistics, the mixture
    formula above, the gate at a ratio of 100, moving averages of the
    combined statistics with decay 0.9, ε = 1e-5), not the paper's
    transition formulation with full covariance matrices propagated by a
    transition matrix A_k. They differ in where the prior comes from:

    - **Depth-wise prior (the official code's).** Pass `prior`, the
      previous layer's statistics propagated through this layer's weights
      by a `KalmanTransition` (the official code samples
      relu(N(μ_{k−1}, σ²_{k−1})) and convolves the samples with the
      layer's kernel), and set `return_state=True` on the previous layer
      so that it hands its statistics on. This needs the functional API:
      the statistics and the weights are threaded through the network.
      Gradients flow through the prior into the earlier layers and into
      the kernel, as in the official code.
    - **Running-estimate prior (this project's simplification, the
      default).** Without `prior`, the prior is the layer's own running
      estimate (μ̂, σ̂²) = (moving mean, moving variance) from the previous
      steps: a Kalman update over training steps with an identity
      transition, instead of one over depth. It works in any `Sequential`
      or functional model; gradients do not flow into the prior (it is a
      running average).

    Keep that in mind when comparing with the paper's numbers: the paper's
    claim (comparable accuracy with 64× smaller batches on CIFAR) was
    measured with the depth-wise prior.

    Further differences from the official code (`KalmanNorm` in
    `KalmanNorm/kalman_norm.py`): its `split_num` splits a batch of 128
    into 64 micro-batches of 2 normalized separately, averages the gate's
    ratio over all of them and updates the moving averages from the first
    micro-batch only; here the layer's batch is the micro-batch (train with
    batch size 2 for micro-batches of 2). Its first layer, which has no
    prior, is batch normalization through `tf.nn.fused_batch_norm`, which
    hands on (and averages) the batch variance with Bessel's correction
    n/(n − 1); `prior_weight=0` here uses the biased variance throughout.

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
        epsilon: added to the variance, > 0 (1e-5, the code's).
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
        return_state: also return the statistics the layer normalized
            with, for the next `KalmanTransition` (the official code's
            `KalmanNorm` returns them too). A layer that returns its state
            is left unfolded by `fold_batch_normalization`.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: floating tensor of rank >= 2.
        training: whether to use (and update) batch statistics.
        prior: optional tensor of shape (2, channels), the prior mean (row
            0) and variance (row 1) of the inputs' channels, from a
            `KalmanTransition` or a sum of such states (a residual
            connection); used instead of the running estimate in training,
            ignored in inference.

    Returns:
        The normalized inputs, or with `return_state` a pair `(outputs,
        state)`: `state` of shape (2, channels) holds the mean and the
        variance used (the combined ones in training, the moving averages
        in inference), in float32 (float64 for a float64 layer) whatever
        the compute dtype.

    Input shape:
        any rank >= 2 with a known channel dimension. Output: same shape.

    Reference:
        - [Wang et al., 2018](https://arxiv.org/abs/1802.03133), Batch
          Kalman Normalization: Towards Training Deep Neural Networks with
          Micro-Batches. Official code: github.com/wanggrun/
          Kalman-Normalization (`KalmanNorm/kalman_norm.py`,
          `KalmanNorm/cifar-kn-microbatch.py`).

    Examples:

    The running-estimate form, in any model:

    >>> import keras
    >>> from keraslayers import BatchKalmanNormalization
    >>> model = keras.Sequential([
    ...     keras.Input((16, 16, 3)),
    ...     keras.layers.Conv2D(8, 3, use_bias=False),
    ...     BatchKalmanNormalization(),
    ...     keras.layers.ReLU(),
    ... ])

    The official code's depth-wise form, in a two-layer network: the first
    layer has no prior (batch normalization, as in the code) and hands its
    statistics on; the second layer's prior is them propagated through its
    convolution:

    >>> import keras
    >>> from keraslayers import BatchKalmanNormalization, KalmanTransition
    >>> inputs = keras.Input((16, 16, 3))
    >>> z = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    >>> h, state = BatchKalmanNormalization(
    ...     prior_weight=0.0, return_state=True)(z)
    >>> h = keras.layers.ReLU()(h)
    >>> conv = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)
    >>> z, prior = KalmanTransition(conv)(h, state)
    >>> h = BatchKalmanNormalization()(z, prior=prior)
    >>> model = keras.Model(inputs, keras.layers.ReLU()(h))
    >>> model.output_shape
    (None, 16, 16, 8)
    >>> tuple(prior.shape)
    (2, 8)
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
        return_state: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.synchronized = _utils.check_bool(
            self, "synchronized", synchronized
        )
        self.return_state = _utils.check_bool(
            self, "return_state", return_state
        )
        if self.return_state:
            # `fold_batch_normalization` folds a layer that exposes an
            # inference affine map into the Dense/Conv before it; one that
            # hands its statistics on has a second output that folding
            # would drop, so it exposes none.
            self.inference_affine = None
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

    def _check_prior(self, prior, channels: int):
        if tuple(prior.shape) != (2, channels):
            raise ValueError(
                f"{type(self).__name__}: `prior` must have shape (2, "
                f"{channels}): the prior mean and variance of each of the "
                f"{channels} channels. Received: prior.shape="
                f"{tuple(prior.shape)}"
            )

    def call(self, inputs, training=None, mask=None, prior=None):
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
            if prior is None:
                prior_mean = ops.cast(self.moving_mean, x.dtype)
                prior_var = ops.cast(self.moving_variance, x.dtype)
            else:
                # The depth-wise prior: gradients flow into it.
                prior = ops.convert_to_tensor(prior)
                self._check_prior(prior, x.shape[axis])
                prior = ops.cast(prior, x.dtype)
                prior_mean, prior_var = prior[0], prior[1]
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
            if prior is not None:  # checked in inference too
                self._check_prior(ops.convert_to_tensor(prior), x.shape[axis])
            scale, offset = BatchKalmanNormalization.inference_affine(self)
            mean = ops.cast(self.moving_mean, x.dtype)
            var = ops.cast(self.moving_variance, x.dtype)
        y = x * ops.reshape(scale, shape) + ops.reshape(offset, shape)
        outputs = ops.cast(restore(y), self.compute_dtype)
        if self.return_state:
            return outputs, ops.stack([mean, var])
        return outputs

    def compute_output_shape(self, input_shape):
        if not self.return_state:
            return input_shape
        axis = _utils.resolve_axis(self, self.axis, input_shape)
        return input_shape, (2, input_shape[axis])

    def compute_output_spec(self, inputs, *args, prior=None, **kwargs):
        axis = _utils.resolve_axis(self, self.axis, inputs.shape)
        if prior is not None:
            self._check_prior(prior, inputs.shape[axis])
        outputs = keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)
        if not self.return_state:
            return outputs
        state = keras.KerasTensor(
            (2, inputs.shape[axis]), dtype=_utils.math_dtype(self)
        )
        return outputs, state

    def compute_mask(self, inputs, mask=None):
        if self.return_state:
            return [mask, None]
        return mask

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
            "return_state": self.return_state,
        }


_LINEAR_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
)
_PROPAGATIONS = ("moments", "sampling")
# Variances are floored here before a square root: sqrt has an infinite
# derivative at 0, and a zero variance gives 0/0 in relu's moments.
_TINY_VARIANCE = 1e-12


def _normal_cdf(t):
    return 0.5 * (1.0 + ops.erf(t * (1.0 / math.sqrt(2.0))))


def _relu_moments(mean, variance):
    """Mean and variance of relu(h) for h ~ N(mean, variance), elementwise.

    With σ = √variance and t = mean / σ, Φ and φ the standard normal CDF
    and density: E[relu(h)] = mean Φ(t) + σ φ(t) and
    E[relu(h)²] = (mean² + σ²) Φ(t) + mean σ φ(t).
    """
    sigma = ops.sqrt(ops.maximum(variance, _TINY_VARIANCE))
    t = mean / sigma
    cdf = _normal_cdf(t)
    pdf = ops.exp(-0.5 * ops.square(t)) * (1.0 / math.sqrt(2.0 * math.pi))
    first = mean * cdf + sigma * pdf
    second = (ops.square(mean) + ops.square(sigma)) * cdf + mean * sigma * pdf
    return first, ops.maximum(second - ops.square(first), 0.0)


@keras.saving.register_keras_serializable(package="keraslayers")
class KalmanTransition(keras.layers.Wrapper):
    """The predict step of Batch Kalman Normalization over depth: a Dense or
    convolution layer that also propagates the previous layer's statistics
    through its weights, as the prior of the `BatchKalmanNormalization`
    that follows it.

    Called as `outputs, prior = KalmanTransition(layer)(inputs, state)`:
    `outputs = layer(inputs)`, and `prior` (shape (2, units)) is the
    per-channel mean (row 0) and variance (row 1) of `layer(relu(h))` for
    h ~ N(m, v), independent at every position and channel, where
    (m, v) = `state` are the previous `BatchKalmanNormalization`'s
    statistics (`return_state=True`). Pass it on with
    `BatchKalmanNormalization()(outputs, prior=prior)`.

    **Relation to the official code.** This is the official code's
    transition (`state_input` and the weight-shared second `Conv2D` call in
    `build_graph` of `KalmanNorm/cifar-kn-microbatch.py`): it draws one
    image of the layer's input size from N(m, v) per micro-batch, applies
    relu, convolves it with the layer's kernel, and takes `tf.nn.moments`
    of the result over its positions. Like the official code, the layer
    propagates the statistics of the previous layer's input to its
    normalization, through relu only: the normalization and its γ, β in
    between are not part of the transition. Gradients flow into the state
    and into the kernel. With `propagation`:

    - `"moments"` (default): the exact moments the sampling estimates,
      the limit of the official estimate for many samples. For a
      convolution, with M and V the convolutions of constant inputs of
      the input's size holding E[relu(h)] and Var[relu(h)] with the kernel
      W (plus the bias) and with W², the prior mean is the mean of M over
      the output positions and the variance is the mean of V plus the
      variance of M over them (the positions near a "same"-padded border
      see fewer inputs, as in the official code's estimate). For a Dense
      layer every position is alike: m' = E[relu(h)] W + b,
      v' = Var[relu(h)] W². Deterministic and smooth; it costs two
      convolutions of one input.
    - `"sampling"`: the official code's Monte Carlo estimate, from
      `samples` inputs (1, the code's) drawn at every call with a
      `keras.random.SeedGenerator(seed)`. A Dense layer sees each sample
      as one row, so it needs `samples >= 2`.

    The prior is used in training only (`BatchKalmanNormalization` uses
    its moving averages in inference, as the official code does); the
    layer still computes it in inference.

    For a residual connection the official code adds the two branches'
    states (means and variances, as for independent branches) and uses the
    sum as the prior of the normalization of the sum, with no transition:
    `keras.layers.Add()([state_a, state_b])`.

    Args:
        layer: a `keras.layers.Dense`, `Conv1D`, `Conv2D` or `Conv3D` with
            no activation (any strides, dilation, groups; not causal
            padding). The layer's own dtype policy applies to `outputs`.
        propagation: `"moments"` or `"sampling"`, see above.
        samples: number of sampled inputs per call for `"sampling"`.
        seed: seed of the sampling's generator (int or None).
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: the layer's input (the previous layer's activations).
        state: tensor of shape (2, channels of `inputs`).
        training: unused (the prior is computed in both modes).

    Returns:
        `(outputs, prior)`; `prior` is float32 (float64 for a float64
        layer) whatever the compute dtype, and is computed from the float32
        kernel.

    Reference:
        - [Wang et al., 2018](https://arxiv.org/abs/1802.03133), Batch
          Kalman Normalization: Towards Training Deep Neural Networks with
          Micro-Batches. Official code: github.com/wanggrun/
          Kalman-Normalization (`KalmanNorm/cifar-kn-microbatch.py`).

    Example:

    >>> import keras
    >>> from keraslayers import KalmanTransition
    >>> conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
    >>> transition = KalmanTransition(conv)
    >>> h = keras.random.uniform((2, 8, 8, 3))
    >>> state = keras.ops.convert_to_tensor([[0.5, 0.0, -0.5], [1.0, 2.0, 1.0]])
    >>> z, prior = transition(h, state)
    >>> tuple(z.shape), tuple(prior.shape)
    ((2, 8, 8, 4), (2, 4))
    """

    def __init__(
        self,
        layer,
        propagation: str = "moments",
        samples: int = 1,
        seed: int | None = None,
        **kwargs,
    ):
        name = type(self).__name__
        if not isinstance(layer, _LINEAR_LAYERS):
            raise ValueError(
                f"{name}: `layer` must be a keras Dense, Conv1D, Conv2D or "
                f"Conv3D layer. Received: layer={layer!r}"
            )
        if layer.activation not in (None, keras.activations.linear):
            raise ValueError(
                f"{name}: the wrapped layer must have no activation (the "
                "transition applies relu to its input and assumes a linear "
                "layer). Received: layer.activation="
                f"{getattr(layer.activation, '__name__', layer.activation)}"
            )
        if getattr(layer, "padding", None) == "causal":
            raise ValueError(
                f"{name}: causal padding is not supported. Received: "
                "layer.padding='causal'"
            )
        super().__init__(layer, **kwargs)
        _utils.check_layer_dtype(self)
        if propagation not in _PROPAGATIONS:
            raise ValueError(
                f"{name}: `propagation` must be one of {_PROPAGATIONS}. "
                f"Received: propagation={propagation!r}"
            )
        self.propagation = propagation
        self.samples = _utils.check_int(self, "samples", samples, minimum=1)
        if seed is not None:
            seed = _utils.check_int(self, "seed", seed, minimum=0)
        self.seed = seed
        if propagation == "sampling":
            self.seed_generator = keras.random.SeedGenerator(seed)
        # The state math reads the wrapped layer's float32 kernel: no
        # autocast scope around this layer's call (the wrapped layer opens
        # its own for `outputs`).
        self.autocast = False

    def _channel_axis(self, rank: int) -> int:
        data_format = getattr(self.layer, "data_format", "channels_last")
        return 1 if data_format == "channels_first" else rank - 1

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        rank = len(input_shape)
        if rank < 2:
            raise ValueError(
                f"{type(self).__name__}: expects inputs of rank >= 2. "
                f"Received: input_shape={input_shape}"
            )
        if input_shape[self._channel_axis(rank)] is None:
            raise ValueError(
                f"{type(self).__name__}: the channel axis must have a known "
                f"size. Received: input_shape={input_shape}"
            )
        if (
            self.propagation == "sampling"
            and isinstance(self.layer, keras.layers.Dense)
            and rank == 2
            and self.samples < 2
        ):
            raise ValueError(
                f"{type(self).__name__}: a Dense layer sees each sample as "
                "one row, so sampling its input's statistics needs "
                f"samples >= 2. Received: samples={self.samples}"
            )
        super().build(input_shape)

    def _check_state(self, state, channels: int):
        if tuple(state.shape) != (2, channels):
            raise ValueError(
                f"{type(self).__name__}: `state` must have shape (2, "
                f"{channels}): the mean and variance of each of the "
                f"{channels} input channels. Received: state.shape="
                f"{tuple(state.shape)}"
            )

    def _linear(self, x, kernel, bias):
        """The wrapped layer's map with the given kernel (and bias)."""
        if isinstance(self.layer, keras.layers.Dense):
            y = ops.matmul(x, kernel)
        else:
            y = self.layer.convolution_op(x, kernel)
        if bias is not None:
            rank = len(y.shape)
            axis = self._channel_axis(rank)
            y = y + ops.reshape(bias, _utils.broadcast_shape(rank, axis, -1))
        return y

    def call(self, inputs, state, training=None):
        outputs = self.layer(inputs)
        dtype = _utils.math_dtype(self)
        rank = len(inputs.shape)
        axis = self._channel_axis(rank)
        state = ops.convert_to_tensor(state)
        self._check_state(state, inputs.shape[axis])
        state = ops.cast(state, dtype)
        mean, var = state[0], state[1]
        kernel = ops.cast(self.layer.kernel, dtype)
        bias = ops.cast(self.layer.bias, dtype) if self.layer.use_bias else None
        channel_shape = _utils.broadcast_shape(rank, axis, -1)
        if self.propagation == "moments":
            relu_mean, relu_var = _relu_moments(mean, var)
            # Constant inputs of the input's size: the output positions
            # near a padded border see fewer of them, as the samples do.
            ones = ops.ones_like(ops.cast(inputs[:1], dtype))
            m = self._linear(
                ones * ops.reshape(relu_mean, channel_shape), kernel, bias
            )
            v = self._linear(
                ones * ops.reshape(relu_var, channel_shape),
                ops.square(kernel),
                None,
            )
            axes = _utils.reduction_axes(rank, axis)
            prior_mean = _utils.mean(m, axes)
            spread = _utils.mean(
                ops.square(m - ops.reshape(prior_mean, channel_shape)), axes
            )
            prior_var = _utils.mean(v, axes) + spread
        else:
            dynamic = ops.shape(inputs)
            shape = [self.samples] + [
                d if d is not None else dynamic[i + 1]
                for i, d in enumerate(inputs.shape[1:])
            ]
            noise = keras.random.normal(
                shape, dtype=dtype, seed=self.seed_generator
            )
            sigma = ops.sqrt(ops.maximum(var, _TINY_VARIANCE))
            drawn = ops.relu(
                noise * ops.reshape(sigma, channel_shape)
                + ops.reshape(mean, channel_shape)
            )
            y = self._linear(drawn, kernel, bias)
            prior_mean, prior_var = _utils.moments(
                y, _utils.reduction_axes(rank, axis)
            )
        return outputs, ops.stack([prior_mean, prior_var])

    def compute_output_shape(self, input_shape, state_shape=None):
        output_shape = tuple(self.layer.compute_output_shape(input_shape))
        channels = output_shape[self._channel_axis(len(output_shape))]
        return output_shape, (2, channels)

    def compute_output_spec(self, inputs, state, *args, **kwargs):
        self._check_state(
            state, inputs.shape[self._channel_axis(len(inputs.shape))]
        )
        outputs = self.layer.compute_output_spec(inputs)
        channels = outputs.shape[self._channel_axis(len(outputs.shape))]
        prior = keras.KerasTensor((2, channels), dtype=_utils.math_dtype(self))
        return outputs, prior

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Keras's `Wrapper.from_config` pops "layer" from the dict it gets.
        return super().from_config(dict(config), custom_objects)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "propagation": self.propagation,
            "samples": self.samples,
            "seed": self.seed,
        }
