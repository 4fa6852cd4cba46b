"""Export of weight-reparameterized layers to plain Keras layers."""

from __future__ import annotations

import keras

from keraslayers._kernel_layers import (
    ReparameterizedConv2D,
    ReparameterizedDense,
)
from keraslayers._kernel_wrapper import KernelWrapper
from keraslayers.folding import check_rewritable


def _plain_layer(layer):
    if isinstance(layer, KernelWrapper):
        return layer.plain_layer()
    if isinstance(layer, ReparameterizedDense):
        config = layer.plain_layer_config()
        config["use_bias"] = True
        return keras.layers.Dense.from_config(config)
    if isinstance(layer, ReparameterizedConv2D):
        config = layer.plain_layer_config()
        config["use_bias"] = True
        return keras.layers.Conv2D.from_config(config)
    return None


def _plain_weights(layer):
    if isinstance(layer, KernelWrapper):
        return layer.plain_weights()
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    if layer.bias is None:
        bias = kernel.sum(axis=tuple(range(kernel.ndim - 1))) * 0.0
    else:
        bias = keras.ops.convert_to_numpy(layer.effective_bias)
    dtype = keras.backend.standardize_dtype(layer._kernel.dtype)
    return [kernel.astype(dtype), bias.astype(dtype)]


def export_inference_model(model: keras.Model) -> keras.Model:
    """Replaces every weight-normalized layer by the plain Keras layer
    holding its effective kernel, for inference.

    `WeightNormDense/Conv2D`, `CenteredWeightNormDense/Conv2D`,
    `OrthogonalDense/Conv2D` and `WeightStandardizedDense/Conv2D` compute
    their kernel from stored parameters at every call; the exported model
    holds the result in a `keras.layers.Dense` / `keras.layers.Conv2D`, so
    it makes the same predictions at the cost of the plain layer and loads
    without keraslayers (unless other keraslayers layers remain). The
    wrappers (`WeightNormalization`, `CenteredWeightNormalization`,
    `OrthogonalWeightNormalization`, `WeightStandardization`) are replaced
    by a fresh layer of the wrapped layer's class and config, under the
    wrapper's name, holding the effective kernel (and, after WN's
    data-dependent initialization, the effective bias). Nested
    Sequential and functional sub-models are exported inside; a subclassed
    model cannot be rewritten and raises a `ValueError`. The input model is
    not modified.

    Args:
        model: a built `keras.Sequential` or functional `keras.Model`.

    Returns:
        A new model of the same kind.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((16,)),
    ...     OrthogonalDense(8, orthogonalization="newton"),
    ...     keras.layers.ReLU(),
    ...     WeightNormDense(4),
    ... ])
    >>> deployable = export_inference_model(model)
    >>> [type(layer).__name__ for layer in deployable.layers]
    ['Dense', 'ReLU', 'Dense']
    >>> x = keras.random.normal((3, 16))
    >>> bool(keras.ops.all(keras.ops.isclose(
    ...     deployable(x), model(x), atol=1e-5)))
    True
    >>> deployable.save("model.keras")  # loads without keraslayers
    """
    check_rewritable(model, "export_inference_model")
    weights = {}
    nested = {}

    def clone(layer):
        if isinstance(layer, keras.Model):  # exported inside, recursively
            nested[layer.name] = export_inference_model(layer)
            return nested[layer.name]
        plain = _plain_layer(layer)
        if plain is None:
            return layer.__class__.from_config(layer.get_config())
        weights[layer.name] = _plain_weights(layer)
        return plain

    new = keras.models.clone_model(model, clone_function=clone)
    for layer in new.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
        elif layer.weights and not any(layer is m for m in nested.values()):
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return new
