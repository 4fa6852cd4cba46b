"""Export of weight-reparameterized layers to plain Keras layers."""

from __future__ import annotations

import keras

from keraslayers._kernel_layers import (
    ReparameterizedConv2D,
    ReparameterizedDense,
)
from keraslayers._kernel_wrapper import KernelWrapper
from keraslayers.batch_kalman_normalization import (
    BatchKalmanNormalization,
    KalmanTransition,
)
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


def _priors_feed_only_bkn(model) -> bool:
    """Whether every `KalmanTransition`'s prior in the graph of `model` is
    only ever the `prior` argument of a `BatchKalmanNormalization`, which
    in inference does not read it: then the transitions can go."""
    nodes = [node for level in model._nodes_by_depth.values() for node in level]
    priors = {
        id(node.outputs[1])
        for node in nodes
        if isinstance(node.operation, KalmanTransition)
    }
    if not priors:
        return False
    if priors & {id(t) for t in model.outputs}:
        return False
    for node in nodes:
        if not priors & {id(t) for t in node.input_tensors}:
            continue
        if not isinstance(node.operation, BatchKalmanNormalization):
            return False
        positional = keras.tree.flatten(node.arguments.args)
        if priors & {id(t) for t in positional}:
            return False
        others = {
            key: value
            for key, value in node.arguments.kwargs.items()
            if key != "prior"
        }
        if priors & {id(t) for t in keras.tree.flatten(others)}:
            return False
    return True


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
    data-dependent initialization, the effective bias). A
    `KalmanTransition` becomes a copy of its wrapped layer under its own
    name, and the `BatchKalmanNormalization` that took its prior is called
    without one (in inference it uses its moving averages and never reads
    the prior), when the priors go nowhere else; otherwise the transitions
    are kept. Nested
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
    functional = not isinstance(model, keras.Sequential)
    drop_transitions = functional and _priors_feed_only_bkn(model)
    transitions = set()  # ids of the layers that replace KalmanTransitions
    placeholders = set()  # ids of the tensors that stand in for their priors

    def clone(layer):
        if drop_transitions and isinstance(layer, KalmanTransition):
            config = layer.layer.get_config()
            config["name"] = layer.name
            copy = type(layer.layer).from_config(config)
            copies.append((layer.layer, copy))
            transitions.add(id(copy))
            return copy
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

    def call(layer, *args, **kwargs):
        if id(layer) in transitions:
            # The graph expects (outputs, prior): the prior's place holds
            # the outputs, and the one layer that read it lets it go.
            outputs = layer(args[0])
            placeholders.add(id(outputs))
            return outputs, outputs
        if id(kwargs.get("prior")) in placeholders:
            kwargs.pop("prior")
        return call_with_accepted_arguments(layer, *args, **kwargs)

    new = keras.models.clone_model(
        model,
        clone_function=clone,
        call_function=call if functional else None,
    )
    for plain, values in plain_layers:
        plain.set_weights(values)
    for original, copy in copies:
        copy_weights(original, copy, "export_inference_model")
    return new
