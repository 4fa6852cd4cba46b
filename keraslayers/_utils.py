"""Private helpers shared by the layers: argument checks and axis handling.

Every check raises a `ValueError` that names the layer class, the argument
and the received value, in the Keras style `... Received: arg=value`.
"""

from __future__ import annotations

import math
import numbers

import keras
import numpy as np
from keras import ops

FLOATING_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _fail(layer, message: str, arg: str, value) -> ValueError:
    return ValueError(
        f"{type(layer).__name__}: {message} Received: {arg}={value!r}"
    )


def check_number(
    layer,
    arg: str,
    value,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
    allow_infinity: bool = False,
) -> float:
    """Checks a real hyperparameter and returns it as a Python float.

    NaN is always refused; ±inf only with `allow_infinity` (a clipping
    bound may be infinite, an epsilon or a momentum may not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(layer, f"`{arg}` must be a real number.", arg, value)
    number = float(value)
    if number != number:  # NaN
        raise _fail(layer, f"`{arg}` must not be NaN.", arg, value)
    if not allow_infinity and not math.isfinite(number):
        raise _fail(layer, f"`{arg}` must be finite.", arg, value)
    if minimum is not None:
        if strict_minimum and not number > minimum:
            raise _fail(layer, f"`{arg}` must be > {minimum}.", arg, value)
        if not strict_minimum and number < minimum:
            raise _fail(layer, f"`{arg}` must be >= {minimum}.", arg, value)
    if maximum is not None and number > maximum:
        raise _fail(layer, f"`{arg}` must be <= {maximum}.", arg, value)
    return number


def check_bool(layer, arg: str, value) -> bool:
    """A flag must be a bool: `bool("False")` is True, so a string or a
    number would silently mean something else."""
    if not isinstance(value, (bool, np.bool_)):
        raise _fail(layer, f"`{arg}` must be True or False.", arg, value)
    return bool(value)


def check_epsilon(
    layer, value, arg: str = "epsilon", *, allow_zero: bool = False
) -> float:
    """An ε added to a variance or a norm: finite and > 0, so that a
    constant channel divides by √ε, not by 0 (`allow_zero` for FRN, whose
    learned ε can keep the sum positive)."""
    return check_number(
        layer, arg, value, minimum=0.0, strict_minimum=not allow_zero
    )


def check_momentum(layer, value, arg: str = "momentum") -> float:
    return check_number(layer, arg, value, minimum=0.0, maximum=1.0)


def check_int(layer, arg: str, value, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _fail(layer, f"`{arg}` must be an integer.", arg, value)
    if value < minimum:
        raise _fail(layer, f"`{arg}` must be >= {minimum}.", arg, value)
    return int(value)


def check_axis_argument(layer, axis) -> int:
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise _fail(
            layer,
            "`axis` must be a single integer (the channel axis).",
            "axis",
            axis,
        )
    return int(axis)


def resolve_axis(layer, axis: int, input_shape, min_rank: int = 2) -> int:
    """Returns the non-negative channel axis for `input_shape` or raises."""
    rank = len(input_shape)
    if rank < min_rank:
        raise _fail(
            layer,
            f"expects inputs of rank >= {min_rank} (batch, ..., channels).",
            "input_shape",
            tuple(input_shape),
        )
    resolved = axis + rank if axis < 0 else axis
    if not 0 < resolved < rank:
        raise _fail(
            layer,
            f"`axis` must name a non-batch axis of the rank-{rank} input "
            f"with shape {tuple(input_shape)}.",
            "axis",
            axis,
        )
    if input_shape[resolved] is None:
        raise _fail(
            layer,
            "the channel axis must have a known size.",
            "input_shape",
            tuple(input_shape),
        )
    return resolved


def floating_input(layer, inputs):
    """Integer and boolean inputs (e.g. behind `keras.Input(dtype="uint8")`)
    are cast to the layer's compute dtype, as Keras's BatchNormalization
    does; floating inputs pass unchanged (Keras already autocasts them)."""
    dtype = keras.backend.standardize_dtype(inputs.dtype)
    if dtype in FLOATING_DTYPES:
        return inputs
    return ops.cast(inputs, layer.compute_dtype)


def check_layer_dtype(layer) -> None:
    """Rejects a non-floating layer dtype policy at construction."""
    dtype = keras.backend.standardize_dtype(layer.dtype_policy.variable_dtype)
    if dtype not in FLOATING_DTYPES:
        raise _fail(
            layer, "needs a floating-point dtype policy.", "dtype", dtype
        )


def broadcast_shape(rank: int, axis: int, channels: int) -> list[int]:
    """Shape that broadcasts a per-channel vector against the input."""
    shape = [1] * rank
    shape[axis] = channels
    return shape


def as_matrix(x, axis: int, keep_leading: bool = False):
    """A channel-last tensor of rank > 2 (3 with `keep_leading`) viewed as
    a (rows, channels) matrix, or (batch, positions, channels) with
    `keep_leading`; other inputs unchanged.

    Returns `(x, axis, restore)`, `restore` mapping a result of the new
    shape back. Only on TensorFlow, where it is a large saving under XLA:
    a per-channel affine step on (32, 16, 16, 64) ran much faster on the
    matrix than on the 4-D tensor (slower still with the weights reshaped
    to (1, 1, 1, C)), and it took BRN's step from above Keras BN's to
    below it. On JAX the same reshape made BRN's step slower. The
    benchmark times the layers as they are (`make bench`, group
    activation_conv), not the 4-D alternative; the book's cost chapter
    (book/ch16_cost.md) records the one-off comparison.
    """
    rank = len(x.shape)
    if (
        keras.backend.backend() != "tensorflow"
        or axis != rank - 1
        or rank <= (3 if keep_leading else 2)
    ):
        return x, axis, lambda y: y
    shape = ops.shape(x)
    new_shape = (
        (shape[0], -1, x.shape[-1]) if keep_leading else (-1, x.shape[-1])
    )
    y = ops.reshape(x, new_shape)
    return y, len(new_shape) - 1, lambda z: ops.reshape(z, shape)


def reduction_axes(rank: int, axis: int) -> list[int]:
    return [i for i in range(rank) if i != axis]


def reduced_count(x, axes):
    """Number of elements reduced over `axes`, as a scalar of x's dtype."""
    count = 1
    for a in axes:
        dim = x.shape[a]
        count = count * (dim if dim is not None else ops.shape(x)[a])
    return ops.cast(count, x.dtype)


def mean(x, axes, keepdims=False):
    """Mean as sum / count.

    `ops.mean` on the JAX backend accumulates float64 inputs in float32
    (Keras's promotion of float64 with float32 gives float32 there), which
    breaks float64 gradient checks; a sum keeps the input's precision.
    """
    return ops.sum(x, axis=axes, keepdims=keepdims) / reduced_count(x, axes)


def mask_weights(layer, mask, inputs, axis: int):
    """Keras's mask as 0/1 weights shaped like the input with one channel.

    The mask has the input's shape without the channel axis (Keras's
    `BatchNormalization` convention, e.g. (batch, time) for a padded
    sequence) or the input's full rank with one channel."""
    if mask is None:
        return None
    rank = len(inputs.shape)
    weights = ops.cast(mask, math_dtype(layer))
    if len(weights.shape) == rank - 1:
        weights = ops.expand_dims(weights, axis)
    elif len(weights.shape) != rank:
        raise _fail(
            layer,
            f"expects a mask of rank {rank - 1} (the input's shape without "
            "the channel axis).",
            "mask.shape",
            tuple(mask.shape),
        )
    return weights


def replica_context(layer, always: bool = False):
    """The `tf.distribute` replica context whose replicas share the batch
    statistics of `layer`, or None.

    Only a `synchronized` layer (any layer with `always`) on the TensorFlow
    backend, called inside a strategy's replica function with more than one
    replica, gets one.
    Elsewhere the batch a layer sees is already the batch its statistics
    belong to: one device, or JAX under `keras.distribution`, where the
    layer's code is traced once for the global batch and GSPMD inserts the
    cross-device reductions itself.
    """
    if not (always or getattr(layer, "synchronized", False)):
        return None
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def replica_sum(context, tensors):
    """Sums a list of tensors over the replicas of `context` (identity when
    it is None). The gradient of the all-reduce is the all-reduce of the
    gradients, so backpropagation sees the global sums too."""
    if context is None:
        return tensors
    import tensorflow as tf

    return context.all_reduce(tf.distribute.ReduceOp.SUM, list(tensors))


def moments(x, axes, weights=None, context=None):
    """Biased mean and variance over `axes` (two-pass, in x's dtype).

    The variance reads the mean through `stop_gradient`, as
    `tf.nn.moments` does: ∂var/∂μ = −2·mean(x − μ) = 0 exactly, so the
    gradient is unchanged while the backward pass has one reduction less.

    With 0/1 `weights` (a mask, see `mask_weights`), the moments of the
    positions where they are 1, as Keras's `BatchNormalization` computes
    them under a mask; an empty mask gives 0, not NaN.

    With a replica `context` (see `replica_context`), the moments of the
    global batch: the sums and counts are all-reduced, once for the mean
    and once for the squared deviations from the global mean (two passes,
    as on one device, rather than Keras's one-pass E[x²] − μ², which loses
    the variance of a channel whose mean is large).
    """
    if weights is None and context is None:
        mu = mean(x, axes, keepdims=True)
        variance = mean(ops.square(x - ops.stop_gradient(mu)), axes)
        return ops.squeeze(mu, axis=axes), variance
    if weights is None:
        count = ops.ones_like(ops.sum(x, axis=axes, keepdims=True))
        count = count * reduced_count(x, axes)
        total = ops.sum(x, axis=axes, keepdims=True)
    else:
        count = ops.sum(weights * ops.ones_like(x), axis=axes, keepdims=True)
        total = ops.sum(x * weights, axis=axes, keepdims=True)
    total, count = replica_sum(context, [total, count])
    # Keras adds its epsilon to the count; max(count, 1) gives the same zero
    # for an empty mask and the exact weighted mean otherwise.
    count = ops.maximum(count, ops.ones_like(count))
    mu = total / count
    deviations = ops.square(x - ops.stop_gradient(mu))
    if weights is not None:
        deviations = deviations * weights
    (squares,) = replica_sum(
        context, [ops.sum(deviations, axis=axes, keepdims=True)]
    )
    variance = squares / count
    return ops.squeeze(mu, axis=axes), ops.squeeze(variance, axis=axes)


def math_dtype(layer) -> str:
    """float32 math, or float64 for a float64 layer (gradient checks)."""
    return "float64" if layer.compute_dtype == "float64" else "float32"


def cast_for_math(layer, x):
    return ops.cast(x, math_dtype(layer))


def serialize(obj, kind: str):
    """Serializes an initializer / regularizer / constraint for get_config."""
    return getattr(keras, kind).serialize(obj)


def add_statistic(layer, name: str, shape, initializer="zeros"):
    """A non-trainable float32 statistic (moving mean, variance, ...)."""
    return layer.add_weight(
        name=name,
        shape=shape,
        initializer=initializer,
        trainable=False,
        autocast=False,
    )


class AffineMixin:
    """The per-channel γ (scale) and β (offset) shared by the activation
    normalizers: arguments, weights and config entries."""

    def _init_affine(
        self,
        center,
        scale,
        beta_initializer,
        gamma_initializer,
        beta_regularizer,
        gamma_regularizer,
        beta_constraint,
        gamma_constraint,
    ) -> None:
        self.center = check_bool(self, "center", center)
        self.scale = check_bool(self, "scale", scale)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.beta_regularizer = keras.regularizers.get(beta_regularizer)
        self.gamma_regularizer = keras.regularizers.get(gamma_regularizer)
        self.beta_constraint = keras.constraints.get(beta_constraint)
        self.gamma_constraint = keras.constraints.get(gamma_constraint)

    def _build_affine(self, channels: int) -> None:
        def weight(name, on):
            if not on:
                return None
            return self.add_weight(
                name=name,
                shape=(channels,),
                initializer=getattr(self, f"{name}_initializer"),
                regularizer=getattr(self, f"{name}_regularizer"),
                constraint=getattr(self, f"{name}_constraint"),
                autocast=False,
            )

        # Created in this order (γ, then β) so saved files keep their layout.
        self.gamma = weight("gamma", self.scale)
        self.beta = weight("beta", self.center)

    def _affine_config(self) -> dict:
        config = {"center": self.center, "scale": self.scale}
        for name in ("beta", "gamma"):
            config[f"{name}_initializer"] = serialize(
                getattr(self, f"{name}_initializer"), "initializers"
            )
            config[f"{name}_regularizer"] = serialize(
                getattr(self, f"{name}_regularizer"), "regularizers"
            )
            config[f"{name}_constraint"] = serialize(
                getattr(self, f"{name}_constraint"), "constraints"
            )
        return config
