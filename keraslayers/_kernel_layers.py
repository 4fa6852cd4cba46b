"""Private bases for Dense / Conv2D layers whose kernel is reparameterized.

A layer stores an unconstrained kernel V (weight `kernel`, in Keras's
layout: (fan_in, units) for Dense, (kh, kw, in / groups, filters) for
Conv2D) and computes the effective kernel W from it at every call, the way
Keras's `Dense` exposes `kernel` as a property over `_kernel`. Subclasses
implement `_reparameterize(v)` on the (units, fan_in) matrix view V of the
kernel (one row per output unit, the papers' notation), in float32 (or
float64 for a float64 layer) whatever the compute dtype. The per-unit
families (WN, CWN, WS) also provide `_unit_factors(v)` (the per-unit
factors f and the mean that W = (V − mean)·diag(f) subtracts, None for
WN), with which the
Dense layer computes its outputs without forming W at all (see
`ReparameterizedDense._per_unit_outputs`); `kernel` still gives W.

The family mixins (in weight_normalization.py, orthogonal.py,
weight_standardization.py) need only what both hosts provide: these layers
and the wrappers of `_kernel_wrapper.py` around any Keras layer with a
kernel. That is `_v_matrix()` (V as the (units, fan_in) matrix),
`_from_matrix(w)`, `_math(x)`, `_bias_value()`, `_unit_outputs(x, u)`,
`use_bias` and `add_weight`.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from keraslayers import _utils


def _pair(layer, arg, value) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    ):
        raise ValueError(
            f"{type(layer).__name__}: `{arg}` must be a positive int or a "
            f"pair of positive ints. Received: {arg}={value!r}"
        )
    return value


def _owner(cls, name):
    """The class in `cls`'s MRO that defines attribute `name`."""
    return next((k for k in cls.__mro__ if name in vars(k)), None)


def columnwise_kernel(reparameterize, v, fan_in, perm=None, inverse=None):
    """W from V for the per-unit families (WN, CWN, WS), computed on the
    (fan_in, units) view.

    That view is Keras's stored kernel layout itself for Dense, Conv and
    depthwise kernels, so the reductions over each unit's fan-in need no
    transposes forward or backward. On the papers' (units, fan_in) view,
    transposing the kernel and its gradient each step cost more than the
    normalization itself (JAX, Dense 256 → 256 at batch 128). The
    benchmark times only the form used here (`make bench`, group
    weight_dense_medium); the book's cost chapter (book/ch16_cost.md)
    records the one-off comparison. Kernels whose units are not the
    trailing axes (transposed convolutions) pass `perm` to bring them
    there and `inverse` to put them back.
    """
    if perm is not None:
        v = ops.transpose(v, perm)
    shape = v.shape
    w = reparameterize(ops.reshape(v, (fan_in, -1)), 0)
    w = ops.reshape(w, shape)
    if perm is not None:
        w = ops.transpose(w, inverse)
    return w


class _ReparameterizedKernel(keras.layers.Layer):
    """Shared weights, kernel property, config for Dense and Conv2D."""

    def __init__(
        self,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        _utils.check_layer_dtype(self)
        self.activation = keras.activations.get(activation)
        self.use_bias = _utils.check_bool(self, "use_bias", use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    # -- to be provided by the layer family ---------------------------------
    def _build_reparameterization(self, units: int, fan_in: int) -> None:
        """Creates the family's own weights (gains, scales)."""

    def _reparameterize(self, v):
        """Maps the (units, fan_in) matrix V to the effective W."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------
    def _kernel_shape(self, input_shape) -> tuple[int, ...]:
        raise NotImplementedError

    def _create_kernel(self, input_shape):
        shape = self._kernel_shape(input_shape)
        self._kernel = self.add_weight(
            name="kernel",
            shape=shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            autocast=False,
        )
        units = shape[-1]
        self._fan_in = math.prod(shape[:-1])
        self.bias = (
            self.add_weight(
                name="bias",
                shape=(units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
            if self.use_bias
            else None
        )
        self._build_reparameterization(units, self._fan_in)

    def _math(self, x):
        return _utils.cast_for_math(self, x)

    def _v_matrix(self):
        """The stored V as the (units, fan_in) matrix, in the math dtype."""
        v = self._math(self._kernel)
        return ops.transpose(ops.reshape(v, (-1, v.shape[-1])))

    def _from_matrix(self, w):
        """A (units, fan_in) matrix back in the stored kernel's layout."""
        return ops.reshape(ops.transpose(w), self._kernel.shape)

    def _bias_value(self):
        """The stored bias as a (units,) vector in the math dtype."""
        return self._math(self.bias)

    def _unit_outputs(self, inputs, u):
        """x·u for the (units, fan_in) matrix u, before bias and activation,
        as a (rows, units) matrix in the math dtype (WN's data init)."""
        raise NotImplementedError

    @property
    def kernel(self):
        """The effective kernel W, in the stored kernel's layout."""
        if not self.built:
            raise AttributeError(
                f"{type(self).__name__}: build the layer before reading "
                "`kernel`."
            )
        if getattr(self, "_columnwise", False):
            v = self._math(self._kernel)
            return columnwise_kernel(
                self._reparameterize, v, math.prod(v.shape[:-1])
            )
        return self._from_matrix(self._reparameterize(self._v_matrix()))

    @property
    def effective_bias(self):
        """The bias the layer adds (None without bias)."""
        return self.bias

    def _finish(self, outputs):
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self) -> dict[str, Any]:
        def ser(obj, kind):
            return getattr(keras, kind).serialize(obj)

        config = super().get_config()
        config.update(
            {
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": ser(
                    self.kernel_initializer, "initializers"
                ),
                "bias_initializer": ser(self.bias_initializer, "initializers"),
                "kernel_regularizer": ser(
                    self.kernel_regularizer, "regularizers"
                ),
                "bias_regularizer": ser(self.bias_regularizer, "regularizers"),
                "activity_regularizer": ser(
                    self.activity_regularizer, "regularizers"
                ),
                "kernel_constraint": ser(self.kernel_constraint, "constraints"),
                "bias_constraint": ser(self.bias_constraint, "constraints"),
            }
        )
        return config

    def plain_layer_config(self) -> dict[str, Any]:
        """Config of the plain Keras layer computing the same function."""
        raise NotImplementedError


class ScaleMixin:
    """The scale of CWN and orthogonal layers: a fixed number (1.414 in
    the official code) or, with `learnable_scale`, one weight per output
    unit starting there."""

    def _init_scale(self, scale, learnable_scale) -> None:
        self.scale = _utils.check_number(
            self, "scale", scale, minimum=0.0, strict_minimum=True
        )
        self.learnable_scale = _utils.check_bool(
            self, "learnable_scale", learnable_scale
        )

    def _build_scale(self, units: int) -> None:
        self.scale_weight = (
            self.add_weight(
                name="scale",
                shape=(units,),
                initializer=keras.initializers.Constant(self.scale),
                autocast=False,
            )
            if self.learnable_scale
            else None
        )

    def _unit_scale(self, fan_axis=1):
        """The per-unit scale, shaped to broadcast over a (units, fan_in)
        matrix (`fan_axis=1`) or a (fan_in, units) one (`fan_axis=0`); a
        Python number when it is fixed."""
        if self.scale_weight is not None:
            return ops.expand_dims(self._math(self.scale_weight), fan_axis)
        return self.scale

    def _apply_scale(self, w, fan_axis=1):
        """Multiplies each unit of `w`: the rows of a (units, fan_in)
        matrix, the columns of a (fan_in, units) one (`fan_axis=0`)."""
        return self._unit_scale(fan_axis) * w

    def _scale_config(self) -> dict[str, Any]:
        return {"scale": self.scale, "learnable_scale": self.learnable_scale}


class ReparameterizedDense(_ReparameterizedKernel):
    """Base of the reparameterized Dense layers: `y = act(x·W + b)`."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = _utils.check_int(self, "units", units, minimum=1)
        # Each position is transformed on its own, so a mask (a padded
        # sequence's) passes through, as through Keras's Dense. The
        # convolutions mix positions and, like Keras's, take no mask.
        self.supports_masking = True

    def _kernel_shape(self, input_shape):
        return (input_shape[-1], self.units)

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__}: expects inputs of rank >= 2 with a "
                f"known last dimension. Received: input_shape="
                f"{tuple(input_shape)}"
            )
        self._create_kernel(input_shape)
        self.input_spec = keras.layers.InputSpec(
            min_ndim=2, axes={-1: input_shape[-1]}
        )

    def _factored(self) -> bool:
        """Whether `call` may use `_per_unit_outputs`: a per-unit family,
        computing in its variables' dtype, whose W is exactly what its
        `_unit_factors` describe. A subclass that overrides `kernel` (e.g.
        to binarize W) or `_reparameterize` changes W, so it takes the
        kernel path, which honours the override."""
        cls = type(self)
        return (
            hasattr(cls, "_unit_factors")
            and self.compute_dtype == self.dtype
            and _owner(cls, "kernel") is _ReparameterizedKernel
            and _owner(cls, "_reparameterize") is _owner(cls, "_unit_factors")
        )

    def call(self, inputs, training=None):
        if self._factored():
            outputs = self._per_unit_outputs(inputs)
        else:
            kernel = ops.cast(self.kernel, self.compute_dtype)
            outputs = ops.matmul(inputs, kernel)
        if self.bias is not None:
            outputs = outputs + ops.cast(self.effective_bias, outputs.dtype)
        return self._finish(outputs)

    def _per_unit_outputs(self, inputs):
        """x·W for the per-unit families without forming W.

        Their W is V, centered or not over each unit's fan-in, times one
        factor per unit: W = C·V·diag(f), with C = I − 11ᵀ/fan_in for a
        centered family. So x·W = ((x·C)·V)·diag(f): the factors scale the
        outputs, and centering V's columns is centering x's rows, an
        activation-sized pass where W was a kernel-sized copy made forward
        and differentiated backward. At batch 128 a 512 → 512 kernel is
        larger than the activations, and the step measured cheaper this
        way on JAX and on TensorFlow + XLA, most for CWN, whose centering
        moves from V to x. The benchmark times this form against the plain
        Dense (`make bench`, groups weight_dense_{small,medium,large}, rows
        wn, cwn and ws), not the form that builds W. The gradients are the
        same functions: x·C's rows have zero sum, so ∂L/∂V =
        (x·C)ᵀ·(∂L/∂y·diag(f)) is already centered per unit, as C·(∂L/∂W)
        is.

        Used when the layer computes in its variables' dtype. Under mixed
        precision the kernel path stays: there W is normalized in float32
        and rounded once, where this form would round V and x·C.
        """
        v = self._math(self._kernel)
        factors, mean = self._unit_factors(v, 0)
        if mean is not None:
            inputs = inputs - _utils.mean(inputs, [-1], keepdims=True)
        factors = ops.reshape(factors, (-1,))
        return ops.matmul(inputs, v) * ops.cast(factors, inputs.dtype)

    def _unit_outputs(self, inputs, u):
        t = ops.matmul(self._math(inputs), ops.transpose(u))
        return ops.reshape(t, (-1, self.units))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}

    def plain_layer_config(self):
        config = keras.layers.Dense(1).get_config()
        for key in config:
            if key in (
                "units",
                "activation",
                "use_bias",
                "name",
                "dtype",
                "trainable",
            ):
                config[key] = self.get_config()[key]
        return config


class ReparameterizedConv2D(_ReparameterizedKernel):
    """Base of the reparameterized Conv2D layers."""

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate=(1, 1),
        groups: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = _utils.check_int(self, "filters", filters, minimum=1)
        self.kernel_size = _pair(self, "kernel_size", kernel_size)
        self.strides = _pair(self, "strides", strides)
        self.dilation_rate = _pair(self, "dilation_rate", dilation_rate)
        padding = str(padding).lower()
        if padding not in ("valid", "same"):
            raise ValueError(
                f"{type(self).__name__}: `padding` must be 'valid' or "
                f"'same'. Received: padding={padding!r}"
            )
        self.padding = padding
        data_format = data_format or keras.config.image_data_format()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(
                f"{type(self).__name__}: unknown `data_format`. Received: "
                f"data_format={data_format!r}"
            )
        self.data_format = data_format
        self.groups = _utils.check_int(self, "groups", groups, minimum=1)
        if self.filters % self.groups:
            raise ValueError(
                f"{type(self).__name__}: `filters` ({self.filters}) must be "
                f"divisible by `groups`. Received: groups={groups!r}"
            )

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def _kernel_shape(self, input_shape):
        channels = input_shape[self._channel_axis]
        return (*self.kernel_size, channels // self.groups, self.filters)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[self._channel_axis] is None:
            raise ValueError(
                f"{type(self).__name__}: expects rank-4 inputs with a known "
                f"channel dimension. Received: input_shape="
                f"{tuple(input_shape)}"
            )
        channels = input_shape[self._channel_axis]
        if channels % self.groups:
            raise ValueError(
                f"{type(self).__name__}: the input channels ({channels}) "
                f"must be divisible by `groups`. Received: groups="
                f"{self.groups}"
            )
        self._create_kernel(input_shape)
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={self._channel_axis: channels}
        )

    def call(self, inputs, training=None):
        kernel = ops.cast(self.kernel, self.compute_dtype)
        outputs = ops.conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )
        if self.bias is not None:
            shape = [1, 1, 1, 1]
            shape[self._channel_axis] = self.filters
            bias = ops.cast(self.effective_bias, outputs.dtype)
            outputs = outputs + ops.reshape(bias, shape)
        return self._finish(outputs)

    def _unit_outputs(self, inputs, u):
        t = ops.conv(
            self._math(inputs),
            self._from_matrix(u),
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
        )
        if self.data_format == "channels_first":
            t = ops.transpose(t, (0, 2, 3, 1))
        return ops.reshape(t, (-1, self.filters))

    def compute_output_shape(self, input_shape):
        spatial_axes = (1, 2) if self.data_format == "channels_last" else (2, 3)
        shape = list(input_shape)
        for i, axis in enumerate(spatial_axes):
            n = shape[axis]
            if n is None:
                continue
            if self.padding == "same":
                shape[axis] = -(-n // self.strides[i])
            else:
                span = self.dilation_rate[i] * (self.kernel_size[i] - 1) + 1
                shape[axis] = (n - span) // self.strides[i] + 1
        shape[self._channel_axis] = self.filters
        return tuple(shape)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
            "groups": self.groups,
        }

    def plain_layer_config(self):
        config = keras.layers.Conv2D(1, 1).get_config()
        own = self.get_config()
        for key in config:
            if key in own and not key.endswith(
                ("initializer", "regularizer", "constraint")
            ):
                config[key] = own[key]
        return config
