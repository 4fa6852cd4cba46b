"""Batch Renormalization (Ioffe, 2017) with clipping schedules."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keraslayers import _utils


@keras.saving.register_keras_serializable(package="keraslayers")
class LinearRamp(keras.optimizers.schedules.LearningRateSchedule):
    """A value held constant, then moved linearly, then held again.

    `value(step)` is `start_value` for `step <= start_step`, `end_value` for
    `step >= end_step`, and linear in between. It is a Keras schedule (a
    serializable callable of the training step), so it can drive
    `BatchRenormalization`'s `r_max` and `d_max` or an optimizer.

    Args:
        start_value: value up to `start_step`.
        end_value: value from `end_step` on.
        start_step: last step at `start_value`.
        end_step: first step at `end_value`; must be >= `start_step`.

    Example:

    >>> from keraslayers import LinearRamp
    >>> ramp = LinearRamp(1.0, 3.0, start_step=5000, end_step=40000)
    >>> float(ramp(22500))
    2.0
    >>> ramp
    LinearRamp(start_value=1.0, end_value=3.0, start_step=5000, end_step=40000)
    """

    def __init__(
        self,
        start_value: float,
        end_value: float,
        start_step: int = 0,
        end_step: int = 1,
    ):
        self.start_value = _utils.check_number(self, "start_value", start_value)
        self.end_value = _utils.check_number(self, "end_value", end_value)
        self.start_step = _utils.check_int(
            self, "start_step", start_step, minimum=0
        )
        self.end_step = _utils.check_int(
            self, "end_step", end_step, minimum=self.start_step
        )

    def __call__(self, step):
        step = ops.cast(step, "float32")
        span = max(self.end_step - self.start_step, 1)
        progress = ops.clip((step - self.start_step) / span, 0.0, 1.0)
        return self.start_value + (self.end_value - self.start_value) * progress

    def __repr__(self) -> str:
        arguments = ", ".join(
            f"{name}={value!r}" for name, value in self.get_config().items()
        )
        return f"{type(self).__name__}({arguments})"

    def get_config(self) -> dict[str, Any]:
        return {
            "start_value": self.start_value,
            "end_value": self.end_value,
            "start_step": self.start_step,
            "end_step": self.end_step,
        }


def renorm_schedule(
    r_max: float = 3.0,
    d_max: float = 5.0,
    hold_steps: int = 5000,
    r_max_steps: int = 40000,
    d_max_steps: int = 25000,
) -> dict[str, LinearRamp]:
    """The clipping schedule of the Batch Renormalization paper.

    Returns `{"r_max": ..., "d_max": ...}` to unpack into
    `BatchRenormalization`: r_max = 1 and d_max = 0 (plain batch
    normalization) for the first `hold_steps` steps, then relaxed linearly to
    `r_max` at step `r_max_steps` and to `d_max` at step `d_max_steps`. The
    defaults are the paper's (Ioffe, 2017, Sec. 4.1: "r_max = 1, d_max = 0
    for the first 5000 steps, after which these were gradually relaxed to
    reach r_max = 3 at 40k steps, and d_max = 5 at 25k steps"); the paper
    does not give the shape of the relaxation, a linear ramp is used.

    `BatchRenormalization()` uses this schedule by default; call it to
    scale the milestones to a shorter run.

    Example:

    >>> from keraslayers import BatchRenormalization, renorm_schedule
    >>> layer = BatchRenormalization(
    ...     **renorm_schedule(hold_steps=500, r_max_steps=4000,
    ...                       d_max_steps=2500))
    >>> layer.r_max
    LinearRamp(start_value=1.0, end_value=3.0, start_step=500, end_step=4000)
    """
    return {
        "r_max": LinearRamp(1.0, r_max, hold_steps, r_max_steps),
        "d_max": LinearRamp(0.0, d_max, hold_steps, d_max_steps),
    }


def _serialize_limit(value):
    if isinstance(value, float):
        return value
    return keras.saving.serialize_keras_object(value)


def _deserialize_limit(value):
    if isinstance(value, dict):
        return keras.saving.deserialize_keras_object(value)
    return value


@keras.saving.register_keras_serializable(package="keraslayers")
class BatchRenormalization(_utils.AffineMixin, keras.layers.Layer):
    """Batch Renormalization: batch statistics corrected towards the moving
    ones, so that training and inference compute the same function.

    In training, with batch statistics μ_B, σ_B = √(σ_B² + ε) and moving
    statistics μ, σ (standard deviation, ε included):

    ```
    r = stop_gradient(clip(σ_B / σ, 1 / r_max, r_max))
    d = stop_gradient(clip((μ_B - μ) / σ, -d_max, d_max))
    y = γ · ((x - μ_B) / σ_B · r + d) + β
    μ ← momentum · μ + (1 - momentum) · μ_B
    σ ← momentum · σ + (1 - momentum) · σ_B
    ```

    In inference `y = γ · (x - μ) / σ + β`. With `r_max=1, d_max=0` the
    training output is batch normalization's. r and d use the moving
    statistics from before the update of the current step.

    `r_max` and `d_max` are numbers or schedules (callables of the training
    step, e.g. `LinearRamp`, or any Keras `LearningRateSchedule`). By
    default both follow the paper's schedule (`renorm_schedule()`): the
    layer is batch normalization for its first 5000 training steps, while
    the moving statistics settle, and the bounds then relax to r_max = 3
    (step 40k) and d_max = 5 (step 25k). Fixed bounds from step 0 correct
    towards moving statistics that still hold their initial values (0
    and 1): with `r_max=3, d_max=5` a dense network's first epoch trains
    worse than with batch normalization. For a shorter run, scale the
    milestones (`renorm_schedule(hold_steps=...)`). The layer counts its
    own training calls in the non-trainable `step` weight, which is saved
    with the model, so a reloaded model resumes its schedule. Scheduled
    values are clamped at run time to r_max >= 1 and d_max >= 0.

    Compared with Keras 3's `BatchNormalization(renorm=True,
    renorm_clipping=..., renorm_momentum=...)`: Keras keeps two sets of
    statistics, the renorm ones (updated with `renorm_momentum`) for r
    and d and the moving ones (updated with `momentum`) for inference,
    where this layer keeps the paper's single set (the two coincide when
    the momenta are equal); Keras's bounds are fixed numbers, and absent
    by default (r and d unclipped), where here they follow a schedule; a
    missing `"rmin"` means 0 in Keras and 1/r_max here.

    A batch that reduces over a single element per channel (a dense input
    with batch size 1) has σ_B² = 0: the layer then outputs γ·d + β, finite,
    carrying no information about the batch's scale (β alone while
    d_max = 0, as during the schedule's first steps). Prefer a batch-free
    normalizer (`FilterResponseNormalization`, group or layer normalization)
    for such batches.

    On JAX, `fit` updates the moving statistics only if a subclassed
    model's `call` passes `training=training` on to this layer (README,
    "Pitfalls").

    Args:
        axis: the channel axis (default -1, channels last; pass
            `axis=1` for channels-first data, as with Keras's
            `BatchNormalization`).
        momentum: momentum of the moving statistics (the paper's 1 - α,
            α = 0.01).
        epsilon: added to the batch variance; > 0.
        r_max: bound of the scale correction r, >= 1, or a schedule;
            None (default) means the paper's, `renorm_schedule()["r_max"]`.
        d_max: bound of the shift correction d, >= 0, or a schedule;
            None (default) means the paper's, `renorm_schedule()["d_max"]`.
        r_min: lower bound of r, in [0, 1], or a schedule; None (default)
            means 1/r_max, the paper's symmetric clipping.
        renorm_clipping: the three bounds in the form of Keras 3's
            `BatchNormalization(renorm_clipping=...)`, a dict with keys
            among "rmax", "rmin", "dmax" (a missing "rmax" or "dmax" means
            no clipping on that side; a missing "rmin" means 1/rmax, where
            Keras takes 0); pass it or `r_max`/`r_min`/`d_max`, not both.
        center: whether to add the offset β.
        scale: whether to multiply by γ.
        beta_initializer, gamma_initializer: initializers of β and γ.
        moving_mean_initializer: initializer of the moving mean.
        moving_stddev_initializer: initializer of the moving standard
            deviation (ones by default).
        beta_regularizer, gamma_regularizer: regularizers of β and γ.
        beta_constraint, gamma_constraint: constraints of β and γ.
        synchronized: under a `tf.distribute` strategy (TensorFlow
            backend), all-reduce the sums behind the batch statistics
            (per-channel sums and squared deviations) across replicas,
            so that every replica normalizes with the global batch's
            statistics and the moving statistics are the global batch's;
            the gradient flows through the all-reduce. Outside a
            strategy it changes nothing. On JAX under
            `keras.distribution` the statistics are the global batch's
            with or without it.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: floating tensor of rank >= 2.
        training: whether to use (and update) batch statistics.

    Input shape:
        any, with a known channel dimension on `axis`. Output: same shape.

    Reference:
        - [Ioffe, 2017](https://arxiv.org/abs/1702.03275), Batch
          Renormalization: Towards Reducing Minibatch Dependence in
          Batch-Normalized Models.

    Example:

    >>> import keras
    >>> from keraslayers import BatchRenormalization
    >>> model = keras.Sequential([
    ...     keras.Input((32,)),
    ...     keras.layers.Dense(64, use_bias=False),
    ...     BatchRenormalization(),
    ...     keras.layers.ReLU(),
    ... ])
    """

    def __init__(
        self,
        axis: int = -1,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        r_max=None,
        d_max=None,
        r_min=None,
        renorm_clipping=None,
        center: bool = True,
        scale: bool = True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_stddev_initializer="ones",
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
        if renorm_clipping is not None:
            r_max, r_min, d_max = self._from_renorm_clipping(
                renorm_clipping, r_max, r_min, d_max
            )
        # The paper's schedule by default: fixed bounds from step 0 would
        # correct towards moving statistics that have not moved yet.
        paper = renorm_schedule()
        r_max = paper["r_max"] if r_max is None else r_max
        d_max = paper["d_max"] if d_max is None else d_max
        self.r_max = self._check_limit("r_max", r_max, minimum=1.0)
        self.d_max = self._check_limit("d_max", d_max, minimum=0.0)
        self.r_min = (
            None
            if r_min is None
            else self._check_limit("r_min", r_min, minimum=0.0, maximum=1.0)
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
        self.moving_stddev_initializer = keras.initializers.get(
            moving_stddev_initializer
        )
        # Inputs are cast to float32 inside `call` instead of by the base
        # layer: under mixed_float16 a float32 input above float16's range
        # would otherwise become inf before normalization.
        self.autocast = False

    def _from_renorm_clipping(self, clipping, r_max, r_min, d_max):
        """Keras 3's `renorm_clipping={"rmax": .., "rmin": .., "dmax": ..}`
        (a missing "rmax" or "dmax" means no clipping there; rmin defaults
        to 1/rmax), as an alternative to `r_max`, `r_min` and `d_max`."""
        name = type(self).__name__
        if not isinstance(clipping, dict) or set(clipping) - {
            "rmax",
            "rmin",
            "dmax",
        }:
            raise ValueError(
                f"{name}: `renorm_clipping` must be a dict with keys among "
                f"'rmax', 'rmin', 'dmax'. Received: renorm_clipping="
                f"{clipping!r}"
            )
        if (r_max, r_min, d_max) != (None, None, None):
            raise ValueError(
                f"{name}: pass either `renorm_clipping` or `r_max`, `r_min` "
                f"and `d_max`, not both. Received: renorm_clipping="
                f"{clipping!r}, r_max={r_max!r}, r_min={r_min!r}, "
                f"d_max={d_max!r}"
            )
        inf = float("inf")
        return (
            clipping.get("rmax", inf),
            clipping.get("rmin"),
            clipping.get("dmax", inf),
        )

    def _check_limit(self, arg, value, minimum, maximum=None):
        value = _deserialize_limit(value)
        if callable(value):
            if isinstance(value, LinearRamp):
                low = min(value.start_value, value.end_value)
                high = max(value.start_value, value.end_value)
                if low < minimum or (maximum is not None and high > maximum):
                    bounds = f">= {minimum}" + (
                        "" if maximum is None else f" and <= {maximum}"
                    )
                    raise ValueError(
                        f"{type(self).__name__}: the `{arg}` schedule must "
                        f"stay {bounds}. Received: {arg}={value!r}"
                    )
            return value
        if maximum is not None:
            return _utils.check_number(
                self, arg, value, minimum=minimum, maximum=maximum
            )
        # An infinite bound is allowed: it means no clipping.
        return _utils.check_number(
            self, arg, value, minimum=minimum, allow_infinity=True
        )

    @property
    def _scheduled(self) -> bool:
        return (
            callable(self.r_max) or callable(self.d_max) or callable(self.r_min)
        )

    def build(self, input_shape):
        self._axis = _utils.resolve_axis(self, self.axis, input_shape)
        channels = input_shape[self._axis]
        shape = (channels,)
        self._build_affine(channels)
        self.moving_mean = _utils.add_statistic(
            self, "moving_mean", shape, self.moving_mean_initializer
        )
        self.moving_stddev = _utils.add_statistic(
            self, "moving_stddev", shape, self.moving_stddev_initializer
        )
        self.step = (
            self.add_weight(
                name="step",
                shape=(),
                initializer="zeros",
                dtype="int32",
                trainable=False,
            )
            if self._scheduled
            else None
        )
        self.input_spec = keras.layers.InputSpec(
            ndim=len(input_shape), axes={self._axis: channels}
        )

    def _limit(self, value, minimum):
        if callable(value):
            value = ops.cast(value(self.step), _utils.math_dtype(self))
            return ops.maximum(value, minimum)
        return value

    def inference_affine(self):
        """Per-channel `(scale, offset)` with `y = scale · x + offset` in
        inference; used by `fold_batch_normalization`."""
        stddev = ops.maximum(self.moving_stddev, self.epsilon**0.5)
        scale = 1.0 / stddev
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
        if training:
            axes = _utils.reduction_axes(rank, axis)
            if weights is not None:
                weights, _, _ = _utils.as_matrix(weights, self._axis)
            mean, variance = _utils.moments(
                x, axes, weights, _utils.replica_context(self)
            )
            # A float32 variance of a batch with a large mean can come out
            # slightly negative; clamp it.
            variance = ops.maximum(variance, 0.0)
            batch_stddev = ops.sqrt(variance + self.epsilon)
            moving_stddev = ops.maximum(self.moving_stddev, self.epsilon**0.5)
            r_max = self._limit(self.r_max, 1.0)
            d_max = self._limit(self.d_max, 0.0)
            if self.r_min is None:
                r_min = 1.0 / r_max
            else:
                r_min = ops.minimum(self._limit(self.r_min, 0.0), 1.0)
            r = ops.clip(batch_stddev / moving_stddev, r_min, r_max)
            d = ops.clip(
                (mean - self.moving_mean) / moving_stddev, -d_max, d_max
            )
            r = ops.stop_gradient(r)
            d = ops.stop_gradient(d)
            scale = r / batch_stddev
            offset = d - mean * scale
            m = self.momentum
            self.moving_mean.assign(m * self.moving_mean + (1 - m) * mean)
            self.moving_stddev.assign(
                m * self.moving_stddev + (1 - m) * batch_stddev
            )
            if self.step is not None:
                self.step.assign_add(ops.ones((), "int32"))
            if self.scale:
                scale = scale * self.gamma
                offset = offset * self.gamma
            if self.center:
                offset = offset + self.beta
        else:
            scale, offset = self.inference_affine()
        shape = _utils.broadcast_shape(rank, axis, -1)
        outputs = x * ops.reshape(scale, shape) + ops.reshape(offset, shape)
        return ops.cast(restore(outputs), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        ser = keras.initializers.serialize
        return {
            **super().get_config(),
            **self._affine_config(),
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "r_max": _serialize_limit(self.r_max),
            "d_max": _serialize_limit(self.d_max),
            "r_min": (
                None if self.r_min is None else _serialize_limit(self.r_min)
            ),
            "moving_mean_initializer": ser(self.moving_mean_initializer),
            "moving_stddev_initializer": ser(self.moving_stddev_initializer),
            "synchronized": self.synchronized,
        }
