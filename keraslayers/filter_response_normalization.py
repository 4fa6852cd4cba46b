"""Filter Response Normalization and the Thresholded Linear Unit
(Singh & Krishnan, 2020)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keraslayers import _utils


@keras.saving.register_keras_serializable(package="keraslayers")
class FilterResponseNormalization(_utils.AffineMixin, keras.layers.Layer):
    """Filter Response Normalization: per sample and channel, divide by the
    root mean square over the non-channel axes; no centering, no batch
    statistics.

    ```
    ν² = mean(x², over every axis but batch and channel)
    y = γ · x / √(ν² + ε_eff) + β
    ```

    with `ε_eff = epsilon` (≥ 0; > 0 without a learned ε), or
    `epsilon + |ε_l|` with a trainable `ε_l` when `learned_epsilon=True`:
    `ε_l` starts at `learned_epsilon_init` (≥ 0) and training may take it
    below zero, so its absolute value is added.
    Training and inference compute the same function. Follow it with `TLU`
    (the paper's pairing).

    On a dense (rank-2) input ν² = x², so without a learned epsilon the
    output is close to γ · sign(x) + β; the paper recommends the learned
    epsilon there, and for convolutions with 1×1 feature maps.

    Each example is normalized on its own, so the layer needs nothing to
    train on several devices (no `synchronized` argument): its output for
    an example is the same whatever the batch and however it is split.

    Args:
        axis: the channel axis; every other non-batch axis is reduced
            (default -1, channels last; pass `axis=1` for channels-first
            data).
        epsilon: the fixed ε, a number ≥ 0 (a negative one is refused),
            or the lower bound of the learned one.
        learned_epsilon: whether to add a trainable `|ε_l|` to `epsilon`.
        learned_epsilon_init: initial value of `ε_l`, a number ≥ 0 (a
            negative one is refused; paper: 1e-4).
        center: whether to add β.
        scale: whether to multiply by γ.
        beta_initializer, gamma_initializer: initializers of β and γ.
        beta_regularizer, gamma_regularizer: regularizers of β and γ.
        beta_constraint, gamma_constraint: constraints of β and γ.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: floating tensor of rank >= 2 (e.g. NHWC, NWC or NC).
        mask: optional, the input's shape without the channel axis (e.g.
            (batch, time) for padded sequences): ν² is the mean over the
            unmasked positions of each sample, and the mask is passed on.

    Input shape:
        any rank >= 2 with a known channel dimension. Output: same shape.

    Reference:
        - [Singh & Krishnan, 2020](https://arxiv.org/abs/1911.09737),
          Filter Response Normalization Layer: Eliminating Batch Dependence
          in the Training of Deep Neural Networks.

    Example:

    >>> import keras
    >>> from keraslayers import FilterResponseNormalization, TLU
    >>> block = keras.Sequential([
    ...     keras.Input((32, 32, 3)),
    ...     keras.layers.Conv2D(16, 3, padding="same"),
    ...     FilterResponseNormalization(),
    ...     TLU(),
    ... ])
    """

    def __init__(
        self,
        axis: int = -1,
        epsilon: float = 1e-6,
        learned_epsilon: bool = False,
        learned_epsilon_init: float = 1e-4,
        center: bool = True,
        scale: bool = True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _utils.check_layer_dtype(self)
        self.axis = _utils.check_axis_argument(self, axis)
        self.epsilon = _utils.check_epsilon(self, epsilon, allow_zero=True)
        self.learned_epsilon = _utils.check_bool(
            self, "learned_epsilon", learned_epsilon
        )
        self.learned_epsilon_init = _utils.check_epsilon(
            self, learned_epsilon_init, "learned_epsilon_init", allow_zero=True
        )
        if self.epsilon == 0.0 and not self.learned_epsilon:
            raise ValueError(
                f"{type(self).__name__}: `epsilon` must be > 0 unless "
                "`learned_epsilon=True` (an all-zero channel would divide by "
                f"zero). Received: epsilon={epsilon!r}"
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
        # See BatchRenormalization: inputs are cast to float32 in `call`.
        self.autocast = False
        # ν² over the unmasked positions only, and the mask passes on.
        self.supports_masking = True

    def build(self, input_shape):
        self._axis = _utils.resolve_axis(self, self.axis, input_shape)
        channels = input_shape[self._axis]
        self._build_affine(channels)
        self.learned_eps = (
            self.add_weight(
                name="learned_epsilon",
                shape=(),
                initializer=keras.initializers.Constant(
                    self.learned_epsilon_init
                ),
                autocast=False,
            )
            if self.learned_epsilon
            else None
        )
        self.input_spec = keras.layers.InputSpec(
            ndim=len(input_shape), axes={self._axis: channels}
        )

    def call(self, inputs, training=None, mask=None):
        del training  # same function in training and inference
        inputs = _utils.floating_input(self, inputs)
        x = _utils.cast_for_math(self, inputs)
        weights = _utils.mask_weights(self, mask, x, self._axis)
        if weights is None:
            x, axis, restore = _utils.as_matrix(
                x, self._axis, keep_leading=True
            )
        else:
            axis, restore = self._axis, lambda y: y
        rank = len(x.shape)
        axes = [i for i in range(1, rank) if i != axis]
        nu2 = ops.square(x)
        if axes and weights is None:
            nu2 = _utils.mean(nu2, axes, keepdims=True)
        elif axes:
            # The mean over the sample's unmasked positions; a sample with
            # none gets ν² = 0 (its output is masked anyway), not 0/0.
            count = ops.sum(weights, axis=axes, keepdims=True)
            count = ops.maximum(count, ops.ones_like(count))
            nu2 = ops.sum(nu2 * weights, axis=axes, keepdims=True) / count
        if self.learned_eps is not None:
            eps = self.epsilon + ops.abs(self.learned_eps)
        else:
            eps = self.epsilon
        # γ is folded into the per-(sample, channel) factor first, so the
        # full-size tensor sees one multiply-add: y = x·(γ/√(ν²+ε)) + β.
        factor = ops.rsqrt(nu2 + eps)
        shape = _utils.broadcast_shape(rank, axis, -1)
        if self.scale:
            factor = factor * ops.reshape(self.gamma, shape)
        y = x * factor
        if self.center:
            y = y + ops.reshape(self.beta, shape)
        return ops.cast(restore(y), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            **self._affine_config(),
            "axis": self.axis,
            "epsilon": self.epsilon,
            "learned_epsilon": self.learned_epsilon,
            "learned_epsilon_init": self.learned_epsilon_init,
        }


@keras.saving.register_keras_serializable(package="keraslayers")
class TLU(keras.layers.Layer):
    """Thresholded Linear Unit: `z = max(y, τ)` with a learned τ per channel.

    The activation paired with `FilterResponseNormalization`: FRN does not
    center, so a ReLU's fixed threshold at 0 may cut off everything; TLU
    learns where to threshold. τ has one value per channel (TF Addons' TLU
    learned one per position, a known pitfall).

    With `affine=True`, TF Addons' TLU-Affine: `z = max(y, α·y + τ)` with a
    learned slope α per channel as well (α = 0 is the plain TLU; α = 1,
    τ = 0 the identity; a negative side with slope α, as a parametric
    ReLU whose knee τ is learned).

    Args:
        axis: the channel axis (default -1, channels last; pass `axis=1`
            for channels-first data).
        affine: whether to learn the slope α of the affine form.
        tau_initializer: initializer of τ (zeros: TLU starts as a ReLU).
        tau_regularizer: regularizer of τ.
        tau_constraint: constraint of τ.
        alpha_initializer, alpha_regularizer, alpha_constraint: the same
            for α (zeros: TLU-Affine starts as TLU), used with `affine`.
        **kwargs: base `Layer` arguments.

    Input shape:
        any rank >= 2 with a known channel dimension. Output: same shape.

    Reference:
        - [Singh & Krishnan, 2020](https://arxiv.org/abs/1911.09737),
          Filter Response Normalization Layer: Eliminating Batch Dependence
          in the Training of Deep Neural Networks.
    """

    def __init__(
        self,
        axis: int = -1,
        tau_initializer="zeros",
        tau_regularizer=None,
        tau_constraint=None,
        affine: bool = False,
        alpha_initializer="zeros",
        alpha_regularizer=None,
        alpha_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _utils.check_layer_dtype(self)
        self.axis = _utils.check_axis_argument(self, axis)
        self.tau_initializer = keras.initializers.get(tau_initializer)
        self.tau_regularizer = keras.regularizers.get(tau_regularizer)
        self.tau_constraint = keras.constraints.get(tau_constraint)
        self.affine = _utils.check_bool(self, "affine", affine)
        self.alpha_initializer = keras.initializers.get(alpha_initializer)
        self.alpha_regularizer = keras.regularizers.get(alpha_regularizer)
        self.alpha_constraint = keras.constraints.get(alpha_constraint)
        # Elementwise: a mask passes through unchanged.
        self.supports_masking = True

    def build(self, input_shape):
        self._axis = _utils.resolve_axis(self, self.axis, input_shape)
        channels = input_shape[self._axis]
        self.tau = self.add_weight(
            name="tau",
            shape=(channels,),
            initializer=self.tau_initializer,
            regularizer=self.tau_regularizer,
            constraint=self.tau_constraint,
            autocast=False,
        )
        self.alpha = None
        if self.affine:
            self.alpha = self.add_weight(
                name="alpha",
                shape=(channels,),
                initializer=self.alpha_initializer,
                regularizer=self.alpha_regularizer,
                constraint=self.alpha_constraint,
                autocast=False,
            )
        self.input_spec = keras.layers.InputSpec(
            ndim=len(input_shape), axes={self._axis: channels}
        )

    def call(self, inputs, training=None):
        del training  # same function in training and inference
        inputs = _utils.floating_input(self, inputs)
        rank = len(inputs.shape)
        shape = _utils.broadcast_shape(rank, self._axis, -1)
        tau = ops.reshape(ops.cast(self.tau, inputs.dtype), shape)
        if self.alpha is not None:
            alpha = ops.reshape(ops.cast(self.alpha, inputs.dtype), shape)
            tau = alpha * inputs + tau
        # `where` rather than `maximum`: the same function with a cheaper
        # backward on JAX, where `maximum`'s gradient splits ties in half
        # and pays for it with extra selects. The benchmark times TLU as
        # written here (`make bench`, rows frn_tlu of activation_conv and
        # activation_dense), not the `maximum` form; the book's cost
        # chapter (book/ch16_cost.md) records the one-off comparison.
        # At a tie the gradient goes to τ. The comparison is written so
        # that a NaN input fails it and passes through, as through a ReLU:
        # `x > τ` is False for NaN and would replace it by τ, hiding it.
        return ops.where(inputs <= tau, tau, inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "axis": self.axis,
            "tau_initializer": _utils.serialize(
                self.tau_initializer, "initializers"
            ),
            "tau_regularizer": _utils.serialize(
                self.tau_regularizer, "regularizers"
            ),
            "tau_constraint": _utils.serialize(
                self.tau_constraint, "constraints"
            ),
            "affine": self.affine,
            "alpha_initializer": _utils.serialize(
                self.alpha_initializer, "initializers"
            ),
            "alpha_regularizer": _utils.serialize(
                self.alpha_regularizer, "regularizers"
            ),
            "alpha_constraint": _utils.serialize(
                self.alpha_constraint, "constraints"
            ),
        }
