"""Weight Standardization (Qiao et al., 2019) and its scaled form from the
normalizer-free networks (Brock et al., 2021): Dense and Conv2D layers, and
a wrapper for any Keras layer with a kernel."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keraslayers import _utils
from keraslayers._kernel_layers import (
    ReparameterizedConv2D,
    ReparameterizedDense,
)
from keraslayers._kernel_wrapper import KernelWrapper, wrapper_doc


class _StandardizedMixin:
    def _init_standardized(self, scaled, epsilon):
        self.scaled = _utils.check_bool(self, "scaled", scaled)
        if epsilon is None:
            epsilon = 1e-4 if self.scaled else 1e-10
        self.epsilon = _utils.check_number(
            self, "epsilon", epsilon, minimum=0.0, strict_minimum=True
        )

    def _build_reparameterization(self, units, fan_in):
        self.gain = (
            self.add_weight(
                name="gain", shape=(units,), initializer="ones", autocast=False
            )
            if self.scaled
            else None
        )

    # Per-unit math: computed on the kernel in its stored layout (see
    # `_ReparameterizedKernel.kernel`).
    _columnwise = True

    def _unit_factors(self, v, fan_axis=1):
        """W = (V − mean)·diag(f) per unit, f = 1/√(var + ε) (or the
        scaled form's gain/√max(fan_in·var, ε)): the factors and the
        mean."""
        mean, var = _utils.moments(v, [fan_axis])
        mean = ops.expand_dims(mean, fan_axis)
        var = ops.expand_dims(var, fan_axis)
        if not self.scaled:
            return ops.rsqrt(var + self.epsilon), mean
        fan_in = v.shape[fan_axis]
        scale = ops.rsqrt(ops.maximum(var * fan_in, self.epsilon))
        gain = ops.expand_dims(self._math(self.gain), fan_axis)
        return gain * scale, mean

    def _reparameterize(self, v, fan_axis=1):
        factors, mean = self._unit_factors(v, fan_axis)
        return (v - mean) * factors

    def _standardized_config(self):
        return {"scaled": self.scaled, "epsilon": self.epsilon}


_DOC = """
    The stored `kernel` weight is V; the `kernel` property is the effective
    W, standardized per output unit (over its fan-in):

    ```
    scaled=False:  W = (V − mean(V)) / √(var(V) + ε)          (WS)
    scaled=True:   W = gain · (V − mean(V)) / √max(N·var(V), ε)  (scaled WS)
    ```

    with N the fan-in and a learned `gain` per output unit (init 1). WS
    gives each filter mean 0 and variance 1; scaled WS gives variance 1/N,
    which keeps the activations' variance through the layer (the
    normalizer-free networks' form; their nonlinearity-specific gain can be
    folded into `gain` or the activation). ε defaults to 1e-10 for WS (so
    the unit variance holds to float32 precision; a constant filter still
    maps to a finite zero filter) and to 1e-4 for scaled WS (NF-Nets').

    var(V) is the biased variance (divided by N), as in the paper's
    equations, so that a standardized filter has exactly unit variance.
    The authors' PyTorch code divides by the unbiased standard deviation
    plus 1e-5 instead: the two differ by √(N/(N−1)), 5.7% at a 3×3 fan-in
    of 9 and under 0.2% at fan-in 288, a constant factor per layer that
    the next layer (or the following normalization) absorbs.

    Args:
        scaled: use the scaled form with its learned gain.
        epsilon: see above (> 0); None picks the default for the form.
        layer_arguments: those of `keras.layers.Dense` or
            `keras.layers.Conv2D`.

    Reference:
        - [Qiao et al., 2019](https://arxiv.org/abs/1903.10520), Micro-Batch
          Training with Batch-Channel Normalization and Weight
          Standardization.
        - [Brock et al., 2021](https://arxiv.org/abs/2101.08692),
          Characterizing Signal Propagation to Close the Performance Gap in
          Unnormalized ResNets.
"""


@keras.saving.register_keras_serializable(package="keraslayers")
class WeightStandardizedDense(_StandardizedMixin, ReparameterizedDense):
    """Dense layer with weight standardization.

    Example:

    >>> from keraslayers import WeightStandardizedDense
    >>> layer = WeightStandardizedDense(64, scaled=True)
    """

    __doc__ = (__doc__ or "") + _DOC

    def __init__(
        self,
        units: int,
        scaled: bool = False,
        epsilon: float | None = None,
        **kwargs,
    ):
        super().__init__(units=units, **kwargs)
        self._init_standardized(scaled, epsilon)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._standardized_config()}


@keras.saving.register_keras_serializable(package="keraslayers")
class WeightStandardizedConv2D(_StandardizedMixin, ReparameterizedConv2D):
    """Conv2D layer with weight standardization per output filter.

    Example:

    >>> from keraslayers import WeightStandardizedConv2D
    >>> layer = WeightStandardizedConv2D(32, 3, padding="same")
    """

    __doc__ = (__doc__ or "") + _DOC

    def __init__(
        self,
        filters: int,
        kernel_size,
        scaled: bool = False,
        epsilon: float | None = None,
        **kwargs,
    ):
        super().__init__(filters=filters, kernel_size=kernel_size, **kwargs)
        self._init_standardized(scaled, epsilon)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._standardized_config()}


@keras.saving.register_keras_serializable(package="keraslayers")
class WeightStandardization(_StandardizedMixin, KernelWrapper):
    """Weight standardization of any Keras layer with a kernel.

    The wrapper version of `WeightStandardizedDense` /
    `WeightStandardizedConv2D`, with the same math (one implementation),
    per output unit over its fan-in N:

    ```
    scaled=False:  W = (V − mean(V)) / √(var(V) + ε)          (WS)
    scaled=True:   W = gain · (V − mean(V)) / √max(N·var(V), ε)  (scaled WS)
    ```

    with a learned `gain` per output unit (init 1) in the scaled form and
    the biased variance; ε defaults to 1e-10 (WS) or 1e-4 (scaled WS).

    Args:
        @LAYER@
        scaled: use the scaled form with its learned gain.
        epsilon: see above (> 0); None picks the default for the form.
        **kwargs: base `Layer` arguments.

    @UNITS@

    Reference:
        - [Qiao et al., 2019](https://arxiv.org/abs/1903.10520), Micro-Batch
          Training with Batch-Channel Normalization and Weight
          Standardization.
        - [Brock et al., 2021](https://arxiv.org/abs/2101.08692),
          Characterizing Signal Propagation to Close the Performance Gap in
          Unnormalized ResNets.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> from keraslayers import WeightStandardization
    >>> layer = WeightStandardization(
    ...     keras.layers.DepthwiseConv2D(3, depth_multiplier=2), scaled=True
    ... )
    >>> tuple(layer(np.ones((2, 6, 6, 4))).shape)
    (2, 4, 4, 8)
    """

    __doc__ = wrapper_doc(__doc__ or "")

    def __init__(
        self,
        layer,
        scaled: bool = False,
        epsilon: float | None = None,
        **kwargs,
    ):
        super().__init__(layer, **kwargs)
        self._init_standardized(scaled, epsilon)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._standardized_config()}
