"""Export of weight-reparameterized layers to plain Keras layers."""

from __future__ import annotations

import keras

from keraslayers._kernel_layers import (
    ReparameterizedConv2D,
    ReparameterizedDense,
)
from keraslayers._kernel_wrapper import KernelWrapper
from keraslayers.folding import (
    call_with_accepted_arguments,
    check_rewritable,
    copy_layer,
    copy_weights,
    is_rewritable,
    keep_subclassed,
)


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
    Sequential and functional sub-models are exported inside; every other
    layer, custom layers holding sublayers among them, is copied from its
    config under its own name, with its weights (a layer whose config does
    not rebuild it raises a `ValueError` naming it). A subclassed model
    cannot be rewritten and raises a `ValueError`. The input model is not
    modified.

    Args:
        model: a built `keras.Sequential` or functional `keras.Model`.

    Returns:
        A new model of the same kind.

    Example:

    >>> import os
    >>> import tempfile
    >>> import keras
    >>> from keraslayers import (
    ...     OrthogonalDense, WeightNormDense, export_inference_model)
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
    >>> with tempfile.TemporaryDirectory() as directory:
    ...     path = os.path.join(directory, "model.keras")
    ...     deployable.save(path)  # loads without keraslayers
    ...     restored = keras.saving.load_model(path)
    >>> [type(layer).__name__ for layer in restored.layers]
    ['Dense', 'ReLU', 'Dense']
    """
    check_rewritable(model, "export_inference_model")
    # (new layer, its weights' values) and (layer, copy) pairs: weights go
    # by identity, as a copy may not get its original's name back.
    plain_layers = []
    copies = []

    def clone(layer):
        if isinstance(layer, keras.Model) and is_rewritable(layer):
            return export_inference_model(layer)  # inside, recursively
        if isinstance(layer, keras.Model):
            keep_subclassed(layer, "export_inference_model")
        plain = _plain_layer(layer)
        if plain is None:
            copy = copy_layer(layer, "export_inference_model")
            copies.append((layer, copy))
            return copy
        plain_layers.append((plain, _plain_weights(layer)))
        return plain

    new = keras.models.clone_model(
        model,
        clone_function=clone,
        call_function=(
            None
            if isinstance(model, keras.Sequential)
            else call_with_accepted_arguments
        ),
    )
    for plain, values in plain_layers:
        plain.set_weights(values)
    for original, copy in copies:
        copy_weights(original, copy, "export_inference_model")
    return new
