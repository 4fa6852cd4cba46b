"""Weight Normalization (Salimans & Kingma, 2016) and Centered Weight
Normalization (Huang et al., 2017): Dense and Conv2D layers, and wrappers
for any Keras layer with a kernel."""

from __future__ import annotations

import warnings
from typing import Any

import keras
from keras import ops

from keraslayers import _utils
from keraslayers._kernel_layers import (
    ReparameterizedConv2D,
    ReparameterizedDense,
    ScaleMixin,
)
from keraslayers._kernel_wrapper import KernelWrapper, wrapper_doc


def _row_norm(v, epsilon, axis=-1):
    return ops.sqrt(ops.sum(ops.square(v), axis=axis, keepdims=True) + epsilon)


class _WeightNormMixin:
    """w_i = g_i · v_i / ‖v_i‖ per output unit, optional data-dependent
    initialization of g and the bias on the first training batch."""

    def _init_weight_norm(self, data_init, epsilon, init_scale=1.0):
        self.data_init = _utils.check_bool(self, "data_init", data_init)
        self.init_scale = _utils.check_number(
            self, "init_scale", init_scale, minimum=0.0, strict_minimum=True
        )
        self.epsilon = _utils.check_number(
            self, "epsilon", epsilon, minimum=0.0, strict_minimum=True
        )
        if self.data_init and not self.use_bias:
            raise ValueError(
                f"{type(self).__name__}: data-dependent initialization sets "
                "the bias, so it needs `use_bias=True`. Received: "
                "use_bias=False"
            )

    def _build_reparameterization(self, units, fan_in):
        def norm_of_v(shape, dtype=None):
            v = self._v_matrix()
            norm = ops.sqrt(ops.sum(ops.square(v), axis=1) + self.epsilon)
            return ops.cast(norm, dtype)

        # g starts at ‖v‖, so the effective kernel starts as the
        # initializer's kernel (its scale, e.g. Glorot's, is kept). An
        # initializer, not an assignment after creation: a layer first built
        # inside a symbolic trace (a subclassed model's first call) creates
        # its variables in a stateless scope, which drops assignments; Keras
        # runs the initializer once v holds its value.
        self.g = self.add_weight(
            name="g", shape=(units,), initializer=norm_of_v, autocast=False
        )
        self.g_offset = self.bias_offset = self.initialized = None
        if not self.data_init:
            return
        if not self.use_bias:
            raise ValueError(
                f"{type(self).__name__}: data-dependent initialization sets "
                "the bias, so it needs `use_bias=True`. Received: "
                "use_bias=False"
            )
        # The data-dependent values are kept as non-trainable offsets added
        # to the trainable g and bias: gradients are those of the paper's
        # parameterization, and the update, being to non-trainable state,
        # persists inside a compiled `fit` step on every backend (the JAX
        # trainer keeps only non-trainable state from the forward pass).
        self.g_offset = self.add_weight(
            name="g_offset",
            shape=(units,),
            initializer="zeros",
            trainable=False,
            autocast=False,
        )
        self.bias_offset = self.add_weight(
            name="bias_offset",
            shape=(units,),
            initializer="zeros",
            trainable=False,
            autocast=False,
        )
        self.initialized = self.add_weight(
            name="initialized",
            shape=(),
            initializer="zeros",
            trainable=False,
            autocast=False,
        )

    @property
    def effective_g(self):
        g = self._math(self.g)
        if self.g_offset is not None:
            g = g + self._math(self.g_offset)
        return g

    @property
    def effective_bias(self):
        if self.bias_offset is None:
            return self.bias
        return self._bias_value() + self._math(self.bias_offset)

    # Per-unit math: computed on the kernel in its stored layout (see
    # `_ReparameterizedKernel.kernel`).
    _columnwise = True

    def _unit_factors(self, v, fan_axis=1):
        """W = V·diag(g/‖v‖) per unit: the factors (shaped to broadcast
        over V), and None for "V is not centered"."""
        g = ops.expand_dims(self.effective_g, fan_axis)
        return g / _row_norm(v, self.epsilon, fan_axis), None

    def _reparameterize(self, v, fan_axis=1):
        # One kernel-sized product with a per-unit factor, not a product
        # and a division: the backward pass then has one kernel-sized
        # product less (a cheaper JAX step, Dense 256 → 256 at batch 128).
        # The benchmark times this form (`make bench`, group
        # weight_dense_medium, row wn), not the division; the book's cost
        # chapter (book/ch16_cost.md) records the one-off comparison.
        return v * self._unit_factors(v, fan_axis)[0]

    def _data_dependent_init(self, inputs, mask=None):
        """On the first training batch: g ← 1/σ[t], b ← −μ[t]/σ[t] for
        t = x·v/‖v‖ (before the activation), so the pre-activations start
        with zero mean and unit variance per unit; under a mask, over the
        unmasked positions only."""
        v = self._v_matrix()
        # t as a (rows, units) matrix: samples times positions by units.
        t = self._unit_outputs(inputs, v / _row_norm(v, self.epsilon))
        axes = [0]
        weights = None
        if mask is not None:
            if len(mask.shape) != len(inputs.shape) - 1:
                raise ValueError(
                    f"{type(self).__name__}: expects a mask of the input's "
                    "shape without its last axis. Received: mask.shape="
                    f"{tuple(mask.shape)} for inputs of shape "
                    f"{tuple(inputs.shape)}"
                )
            weights = ops.reshape(ops.cast(mask, t.dtype), (-1, 1))
        # Under a tf.distribute strategy, the statistics of the global
        # batch: replicas initializing from their own shares would each
        # compute other offsets, and the mirrored weights would get their
        # average, which standardizes no batch.
        context = _utils.replica_context(self, always=True)
        mean, var = _utils.moments(
            ops.stop_gradient(t), axes, weights=weights, context=context
        )
        inv_std = self.init_scale * ops.rsqrt(var + 1e-6)
        # A batch with one row (one sample of a Dense layer) has no variance
        # to measure: 1/σ would be 1000. The initialization waits for the
        # first training batch with more than one row.
        rows = (
            _utils.reduced_count(t, axes)
            if weights is None
            else ops.sum(weights)
        )
        if context is not None:
            (rows,) = _utils.replica_sum(context, [rows])
        if t.shape[0] == 1:
            warnings.warn(
                f"{type(self).__name__}: data_init needs a training batch "
                "with more than one row (samples times positions); this "
                "batch has one row, so the initialization waits for the "
                "next training batch.",
                stacklevel=3,
            )
        usable = rows > 1
        first = ops.logical_and(self.initialized < 0.5, usable)
        g = self._math(self.g)
        bias = self._bias_value()
        dtype = self.g_offset.dtype
        self.g_offset.assign(
            ops.cast(
                ops.where(first, inv_std - g, self._math(self.g_offset)), dtype
            )
        )
        self.bias_offset.assign(
            ops.cast(
                ops.where(
                    first, -mean * inv_std - bias, self._math(self.bias_offset)
                ),
                dtype,
            )
        )
        self.initialized.assign(
            ops.cast(
                ops.where(usable, 1.0, self._math(self.initialized)), dtype
            )
        )

    def call(self, inputs, training=None, mask=None):
        if self.data_init and training:
            self._data_dependent_init(inputs, mask)
        return super().call(inputs, training=training)

    def _weight_norm_config(self):
        return {
            "data_init": self.data_init,
            "epsilon": self.epsilon,
            "init_scale": self.init_scale,
        }


@keras.saving.register_keras_serializable(package="keraslayers")
class WeightNormDense(_WeightNormMixin, ReparameterizedDense):
    """Dense layer with weight normalization: `w = g · v / ‖v‖` per output
    unit, training the direction v and the length g separately.

    The stored `kernel` weight is v; the `kernel` property is the effective
    w. g starts at ‖v‖, so the layer starts as the plain layer with the same
    initializer would. With `data_init=True`, the first training batch
    instead sets g ← 1/σ[t] and b ← −μ[t]/σ[t] with t = x·v/‖v‖, so that
    the pre-activations start standardized (the paper's data-dependent
    initialization); it needs `use_bias=True`.

    On JAX, `fit` runs the data-dependent initialization only if a
    subclassed model's `call` passes `training=training` on to this layer
    (README, "Pitfalls").

    Args:
        units: output dimension, as in `keras.layers.Dense`.
        data_init: data-dependent initialization on the first training call.
        epsilon: added to ‖v‖² (> 0), so a zero row stays finite.
        init_scale: the standard deviation the data-dependent
            initialization gives the pre-activations (> 0; default 1, the
            paper's; the official code's `init_scale`): g ← s/σ[t],
            b ← −s·μ[t]/σ[t].
        dense_arguments: `activation`, `use_bias`, `kernel_initializer`,
            `bias_initializer`, `kernel_regularizer`, `bias_regularizer`,
            `activity_regularizer`, `kernel_constraint`, `bias_constraint`,
            as in `keras.layers.Dense` (the kernel ones apply to the
            stored v).
        **kwargs: base `Layer` arguments.

    Input shape:
        (..., fan_in). Output: (..., units).

    Reference:
        - [Salimans & Kingma, 2016](https://arxiv.org/abs/1602.07868), Weight
          Normalization: A Simple Reparameterization to Accelerate Training
          of Deep Neural Networks.

    Example:

    >>> from keraslayers import WeightNormDense
    >>> layer = WeightNormDense(64, activation="relu", data_init=True)
    """

    def __init__(
        self,
        units: int,
        data_init: bool = False,
        epsilon: float = 1e-12,
        init_scale: float = 1.0,
        **kwargs,
    ):
        super().__init__(units=units, **kwargs)
        self._init_weight_norm(data_init, epsilon, init_scale)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._weight_norm_config()}


@keras.saving.register_keras_serializable(package="keraslayers")
class WeightNormConv2D(_WeightNormMixin, ReparameterizedConv2D):
    """Conv2D layer with weight normalization: `w = g · v / ‖v‖` per output
    filter (the norm over kernel height, width and input channels).

    Same behaviour and arguments as `WeightNormDense`, with the convolution
    arguments of `keras.layers.Conv2D` (`filters`, `kernel_size`,
    `strides`, `padding`, `data_format`, `dilation_rate`, `groups`).

    On JAX, `fit` runs the data-dependent initialization only if a
    subclassed model's `call` passes `training=training` on to this layer
    (README, "Pitfalls").

    Input shape:
        4-D, channels last or first. Output: as `keras.layers.Conv2D`.

    Reference:
        - [Salimans & Kingma, 2016](https://arxiv.org/abs/1602.07868), Weight
          Normalization: A Simple Reparameterization to Accelerate Training
          of Deep Neural Networks.

    Example:

    >>> from keraslayers import WeightNormConv2D
    >>> layer = WeightNormConv2D(32, 3, padding="same")
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        data_init: bool = False,
        epsilon: float = 1e-12,
        init_scale: float = 1.0,
        **kwargs,
    ):
        super().__init__(filters=filters, kernel_size=kernel_size, **kwargs)
        self._init_weight_norm(data_init, epsilon, init_scale)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._weight_norm_config()}


class _CenteredMixin(ScaleMixin):
    """w_i = s · (v_i − mean(v_i)) / ‖v_i − mean(v_i)‖ per output unit."""

    def _init_centered(self, scale, learnable_scale, epsilon):
        self._init_scale(scale, learnable_scale)
        self.epsilon = _utils.check_number(
            self, "epsilon", epsilon, minimum=0.0, strict_minimum=True
        )

    def _build_reparameterization(self, units, fan_in):
        self._build_scale(units)

    _columnwise = True

    def _unit_factors(self, v, fan_axis=1):
        """W = (V − mean)·diag(s/‖V − mean‖) per unit: the factors and
        the mean."""
        mu = _utils.mean(v, [fan_axis], keepdims=True)
        # ‖z‖ reads the mean through stop_gradient: ∂‖z‖²/∂μ = −2·Σz = 0,
        # so the gradient is the same with one reduction less backward (as
        # in `_utils.moments`).
        norm = _row_norm(v - ops.stop_gradient(mu), self.epsilon, fan_axis)
        return self._unit_scale(fan_axis) / norm, mu

    def _reparameterize(self, v, fan_axis=1):
        # As in WN, one kernel-sized product with a per-unit factor.
        factors, mu = self._unit_factors(v, fan_axis)
        return (v - mu) * factors

    def _centered_config(self):
        return {**self._scale_config(), "epsilon": self.epsilon}


_CWN_DOC_TAIL = """
    The stored `kernel` weight is v; the `kernel` property is the effective
    w, whose rows (one per output unit) have zero mean and norm `scale`.
    The scale is fixed at 1.414 (≈ √2, the official code's, suited to ReLU)
    unless `learnable_scale=True`, which learns one per output unit starting
    at `scale`. The official code adds 1e-5 to the norm; here ε is added to
    the squared norm inside the square root, with a default small enough
    that the unit-norm property holds to float32 precision while a
    constant (or zero) row still maps to a finite zero row.

    Reference:
        - [Huang et al., 2017](https://openaccess.thecvf.com/content_iccv_2017/html/Huang_Centered_Weight_Normalization_ICCV_2017_paper.html),
          Centered Weight Normalization in Accelerating Training of Deep
          Neural Networks (ICCV 2017).
"""


@keras.saving.register_keras_serializable(package="keraslayers")
class CenteredWeightNormDense(_CenteredMixin, ReparameterizedDense):
    """Dense layer with centered weight normalization:
    `w = s · (v − mean(v)) / ‖v − mean(v)‖` per output unit.

    Args:
        units: output dimension, as in `keras.layers.Dense`.
        scale: the scale s (> 0), 1.414 by default.
        learnable_scale: whether to learn s per output unit.
        epsilon: added to the squared norm (> 0).
        dense_arguments: `activation`, `use_bias`, `kernel_initializer`,
            `bias_initializer`, `kernel_regularizer`, `bias_regularizer`,
            `activity_regularizer`, `kernel_constraint`, `bias_constraint`,
            as in `keras.layers.Dense` (the kernel ones apply to the
            stored v).
        **kwargs: base `Layer` arguments.

    Example:

    >>> from keraslayers import CenteredWeightNormDense
    >>> layer = CenteredWeightNormDense(64, activation="relu")
    """

    __doc__ = (__doc__ or "") + _CWN_DOC_TAIL

    def __init__(
        self,
        units: int,
        scale: float = 1.414,
        learnable_scale: bool = False,
        epsilon: float = 1e-12,
        **kwargs,
    ):
        super().__init__(units=units, **kwargs)
        self._init_centered(scale, learnable_scale, epsilon)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._centered_config()}


@keras.saving.register_keras_serializable(package="keraslayers")
class CenteredWeightNormConv2D(_CenteredMixin, ReparameterizedConv2D):
    """Conv2D layer with centered weight normalization per output filter.

    Arguments as `CenteredWeightNormDense` plus the convolution arguments of
    `keras.layers.Conv2D`.

    Example:

    >>> from keraslayers import CenteredWeightNormConv2D
    >>> layer = CenteredWeightNormConv2D(32, 3, padding="same")
    """

    __doc__ = (__doc__ or "") + _CWN_DOC_TAIL

    def __init__(
        self,
        filters: int,
        kernel_size,
        scale: float = 1.414,
        learnable_scale: bool = False,
        epsilon: float = 1e-12,
        **kwargs,
    ):
        super().__init__(filters=filters, kernel_size=kernel_size, **kwargs)
        self._init_centered(scale, learnable_scale, epsilon)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._centered_config()}


@keras.saving.register_keras_serializable(package="keraslayers")
class WeightNormalization(_WeightNormMixin, KernelWrapper):
    """Weight normalization of any Keras layer with a kernel:
    `w = g · v / ‖v‖` per output unit.

    The wrapper version of `WeightNormDense` / `WeightNormConv2D`, with the
    same math (one implementation): g (weight `g`, one per output unit)
    starts at ‖v‖, so the wrapped layer starts as it was; with
    `data_init=True` the first training batch instead sets g ← s/σ[t] and
    the bias ← −s·μ[t]/σ[t], t being the wrapped layer's output with kernel
    v/‖v‖ before bias and activation, so that its pre-activations start
    standardized per output unit (kept as non-trainable offsets, as in
    `WeightNormDense`, so it works inside compiled `fit` on every backend).
    Unlike TF Addons' `WeightNormalization`, `data_init` is off by default.
    It needs a bias in the wrapped layer, and output units that are output
    channels: it raises a `ValueError` for a separable convolution (its
    pointwise kernel mixes the depthwise units) and for an EinsumDense whose
    `bias_axes` are not exactly the kernel's output axes.

    On JAX, `fit` runs the data-dependent initialization only if a
    subclassed model's `call` passes `training=training` on to this layer
    (README, "Pitfalls").

    Args:
        @LAYER@
        data_init: data-dependent initialization on the first training call.
        epsilon: added to ‖v‖² (> 0), so a zero row stays finite.
        init_scale: the standard deviation s the data-dependent
            initialization gives the pre-activations (> 0, default 1).
        **kwargs: base `Layer` arguments.

    @UNITS@

    Reference:
        - [Salimans & Kingma, 2016](https://arxiv.org/abs/1602.07868), Weight
          Normalization: A Simple Reparameterization to Accelerate Training
          of Deep Neural Networks.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keraslayers import WeightNormalization
    >>> layer = WeightNormalization(
    ...     keras.layers.Conv2DTranspose(8, 3, activation="relu"),
    ...     data_init=True,
    ... )
    >>> x = np.random.default_rng(0).normal(size=(2, 5, 5, 3))
    >>> tuple(layer(x, training=True).shape)
    (2, 7, 7, 8)
    """

    __doc__ = wrapper_doc(__doc__ or "")

    def __init__(
        self,
        layer,
        data_init: bool = False,
        epsilon: float = 1e-12,
        init_scale: float = 1.0,
        **kwargs,
    ):
        super().__init__(layer, **kwargs)
        self._init_weight_norm(data_init, epsilon, init_scale)
        if self.data_init:
            self._check_data_init_supported()

    def _substitutions(self):
        values = super()._substitutions()
        if self.bias_offset is not None:
            bias = ops.reshape(self.effective_bias, self.layer.bias.shape)
            values["bias"] = ops.cast(bias, self.layer.compute_dtype)
        return values

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._weight_norm_config()}


@keras.saving.register_keras_serializable(package="keraslayers")
class CenteredWeightNormalization(_CenteredMixin, KernelWrapper):
    """Centered weight normalization of any Keras layer with a kernel:
    `w = s · (v − mean(v)) / ‖v − mean(v)‖` per output unit.

    The wrapper version of `CenteredWeightNormDense` /
    `CenteredWeightNormConv2D`, with the same math: each output unit's row
    of the effective kernel has zero mean and norm s, 1.414 by default or
    learned per output unit (weight `scale`) with `learnable_scale=True`.

    Args:
        @LAYER@
        scale: the scale s (> 0), 1.414 by default.
        learnable_scale: whether to learn s per output unit.
        epsilon: added to the squared norm (> 0).
        **kwargs: base `Layer` arguments.

    @UNITS@

    Reference:
        - [Huang et al., 2017](https://openaccess.thecvf.com/content_iccv_2017/html/Huang_Centered_Weight_Normalization_ICCV_2017_paper.html),
          Centered Weight Normalization in Accelerating Training of Deep
          Neural Networks (ICCV 2017).

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keraslayers import CenteredWeightNormalization
    >>> layer = CenteredWeightNormalization(
    ...     keras.layers.EinsumDense("...d,dhk->...hk", (4, 8)),
    ...     learnable_scale=True,
    ... )
    >>> tuple(layer(np.ones((2, 3, 16))).shape)
    (2, 3, 4, 8)
    """

    __doc__ = wrapper_doc(__doc__ or "")

    def __init__(
        self,
        layer,
        scale: float = 1.414,
        learnable_scale: bool = False,
        epsilon: float = 1e-12,
        **kwargs,
    ):
        super().__init__(layer, **kwargs)
        self._init_centered(scale, learnable_scale, epsilon)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._centered_config()}
