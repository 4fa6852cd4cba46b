"""Folding inference-mode normalization into the preceding linear layer."""

from __future__ import annotations

import warnings

import keras
import numpy as np

_LINEAR = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
)
# Transposed convolutions store their kernel as (..., out, in); they are
# subclasses of nothing above, but guard explicitly for readability.
_EXCLUDED = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)


def inference_affine(layer) -> tuple[np.ndarray, np.ndarray] | None:
    """`(A, b)` with `y = A h + b` per position in inference, or None.

    A is a per-channel vector (a diagonal map) or a (C, C) matrix. Keras's
    `BatchNormalization` is read from its weights; keraslayers layers that
    are affine in inference expose an `inference_affine()` method.
    """
    if isinstance(layer, keras.layers.BatchNormalization):
        c = layer.moving_mean.shape[0]
        var = keras.ops.convert_to_numpy(layer.moving_variance).astype("f8")
        mean = keras.ops.convert_to_numpy(layer.moving_mean).astype("f8")
        scale = 1.0 / np.sqrt(var + layer.epsilon)
        if layer.scale:
            scale = scale * keras.ops.convert_to_numpy(layer.gamma)
        offset = -mean * scale
        if layer.center:
            offset = offset + keras.ops.convert_to_numpy(layer.beta)
        assert scale.shape == (c,)
        return scale, offset
    method = getattr(layer, "inference_affine", None)
    if callable(method):
        a, b = method()
        return (
            keras.ops.convert_to_numpy(a).astype("f8"),
            keras.ops.convert_to_numpy(b).astype("f8"),
        )
    return None


def check_rewritable(model, function: str) -> None:
    """A model these rewrites can handle: built, and Sequential or
    functional. A subclassed model's `call` is Python code, not a layer
    graph, so there is nothing to rewrite: refuse it with the reason."""
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(
            f"{function}: expects a built keras Model. Received: "
            f"model={model!r}"
        )
    if not isinstance(model, keras.Sequential) and not hasattr(
        model, "_operations"
    ):
        raise ValueError(
            f"{function}: cannot rewrite a subclassed model: its `call` is "
            "Python code, not a graph of layers. Build it with the "
            "Sequential or functional API, or apply the function to the "
            "Sequential/functional parts it holds. Received: "
            f"model={type(model).__name__}"
        )


def _groups_compatible(linear, a) -> bool:
    """A grouped convolution's output channel j reads only its own group of
    inputs; a matrix A that mixes channels of different groups would need
    an ungrouped kernel. Such a pair is left unfolded."""
    groups = getattr(linear, "groups", 1) or 1
    if groups == 1 or a.ndim == 1:
        return True
    size = a.shape[0] // groups
    group_of = np.arange(a.shape[0]) // size
    across = group_of[:, None] != group_of[None, :]
    return not np.any(a[across])


def _channel_axis_matches(linear, norm) -> bool:
    rank = len(linear.output.shape)
    axis = getattr(norm, "axis", -1)
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    axis = axis % rank
    if isinstance(linear, keras.layers.Dense):
        return axis == rank - 1
    data_format = getattr(linear, "data_format", "channels_last")
    return axis == (1 if data_format == "channels_first" else rank - 1)


def _foldable_pair(linear, norm) -> bool:
    if not (
        isinstance(linear, _LINEAR)
        and not isinstance(linear, _EXCLUDED)
        and linear.activation in (None, keras.activations.linear)
        and _channel_axis_matches(linear, norm)
    ):
        return False
    affine = inference_affine(norm)
    if affine is None:
        return False
    if not _groups_compatible(linear, affine[0]):
        warnings.warn(
            f"fold_batch_normalization: `{norm.name}` mixes output channels "
            f"of different groups of the grouped convolution "
            f"`{linear.name}` (groups={linear.groups}); the pair is left "
            "unfolded, so the result keeps both layers and computes the "
            "same function.",
            stacklevel=4,
        )
        return False
    return True


def _folded_weights(linear, norm) -> list[np.ndarray]:
    a, b = inference_affine(norm)
    kernel = keras.ops.convert_to_numpy(linear.kernel).astype("f8")
    bias = (
        keras.ops.convert_to_numpy(linear.bias).astype("f8")
        if linear.use_bias
        else np.zeros(kernel.shape[-1])
    )
    if a.ndim == 1:
        kernel = kernel * a
        bias = bias * a + b
    else:
        kernel = kernel @ a.T
        bias = bias @ a.T + b
    dtype = keras.backend.standardize_dtype(linear.kernel.dtype)
    return [kernel.astype(dtype), bias.astype(dtype)]


def _pairs_in(model) -> list[tuple]:
    """(linear, norm) pairs where norm's only input is linear's output and
    nothing else reads that output."""
    if isinstance(model, keras.Sequential):
        layers = model.layers
        return [
            (prev, layer)
            for prev, layer in zip(layers, layers[1:], strict=False)
            if _foldable_pair(prev, layer)
        ]
    # Walk the graph back from the outputs: every call (node) in this model,
    # and which nodes read each tensor.
    nodes, readers, stack = [], {}, list(model.outputs)
    seen = set()
    while stack:
        tensor = stack.pop()
        op, node_index, _ = tensor._keras_history
        node = op._inbound_nodes[node_index]
        if id(node) in seen:
            continue
        seen.add(id(node))
        nodes.append(node)
        for t in node.arguments.keras_tensors:
            readers.setdefault(id(t), []).append(node)
            stack.append(t)
    calls = {}
    for node in nodes:
        calls.setdefault(id(node.operation), []).append(node)
    output_ids = {id(t) for t in model.outputs}
    pairs = []
    for node in nodes:
        norm = node.operation
        tensors = node.arguments.keras_tensors
        if len(calls[id(norm)]) != 1 or len(tensors) != 1:
            continue
        source = tensors[0]
        linear = source._keras_history.operation
        if (
            len(calls.get(id(linear), [])) == 1
            and len(readers[id(source)]) == 1
            and id(source) not in output_ids
            and _foldable_pair(linear, norm)
        ):
            pairs.append((linear, norm))
    return pairs


def _linear_with_bias(linear):
    config = linear.get_config()
    config["use_bias"] = True
    config["bias_initializer"] = "zeros"
    return linear.__class__.from_config(config)


def fold_batch_normalization(model: keras.Model) -> keras.Model:
    """Folds inference-mode normalization layers into the preceding
    Dense / Conv layer and returns a new model with the same predictions.

    A normalization layer that is affine in inference, `y = A h + b` on
    each position's channel vector h, is folded when its only input is the
    output of a `Dense` or `Conv1D/2D/3D` without activation whose output
    nothing else reads:

    ```
    kernel' = kernel · Aᵀ   (over the output-channel axis)
    bias'   = bias · Aᵀ + b
    ```

    Folded: Keras `BatchNormalization` (also with `renorm=True`),
    `BatchRenormalization` (A = γ/σ), and the whitening layers
    `DecorrelatedBatchNormalization` and `IterativeNormalization`
    (A = diag(γ)·Φ with the running whitening matrix, block-diagonal over
    groups). Layers that are not affine in inference
    (`FilterResponseNormalization`, layer or group normalization) and
    layers whose input is not such a linear layer are kept as they are.
    A whitening layer whose groups mix the output channels of different
    groups of a grouped convolution is kept too, with a warning: folding
    it would need an ungrouped kernel. Nested Sequential and functional
    sub-models are folded inside. A subclassed model cannot be rewritten
    and raises a `ValueError`. The input model is not modified; the result
    is meant for inference.

    Args:
        model: a `keras.Sequential` or functional `keras.Model`.

    Returns:
        A new model of the same kind without the folded normalization
        layers.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((16,)),
    ...     keras.layers.Dense(8, use_bias=False),
    ...     BatchRenormalization(),
    ...     keras.layers.ReLU(),
    ...     keras.layers.Dense(4),
    ... ])
    >>> inference_model = fold_batch_normalization(model)
    >>> [type(layer).__name__ for layer in inference_model.layers]
    ['Dense', 'ReLU', 'Dense']
    >>> x = keras.random.normal((3, 16))
    >>> bool(keras.ops.all(keras.ops.isclose(
    ...     inference_model(x), model(x, training=False), atol=1e-5)))
    True
    """
    check_rewritable(model, "fold_batch_normalization")
    pairs = _pairs_in(model)
    # Sub-models are folded inside, recursively (a pair that straddles a
    # sub-model's boundary is left as it is).
    nested = {
        layer.name: fold_batch_normalization(layer)
        for layer in model.layers
        if isinstance(layer, keras.Model)
    }
    folded_norms = {id(norm) for _, norm in pairs}
    weights = {
        linear.name: _folded_weights(linear, norm) for linear, norm in pairs
    }

    if isinstance(model, keras.Sequential):
        layers = []
        for layer in model.layers:
            if id(layer) in folded_norms:
                continue
            if layer.name in nested:
                layers.append(nested[layer.name])
            elif layer.name in weights:
                layers.append(_linear_with_bias(layer))
            else:
                layers.append(layer.__class__.from_config(layer.get_config()))
        new = keras.Sequential(
            [keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype)]
            + layers,
            name=f"{model.name}_folded",
        )
    else:
        skipped = {
            model_layer.name
            for model_layer in model.layers
            if id(model_layer) in folded_norms
        }

        def clone(layer):
            if id(layer) in folded_norms:
                # A stand-in that `call` below never calls, so it does not
                # end up in the new graph.
                return keras.layers.Identity(name=layer.name)
            if layer.name in nested:
                return nested[layer.name]
            if layer.name in weights:
                return _linear_with_bias(layer)
            return layer.__class__.from_config(layer.get_config())

        def call(layer, *args, **kwargs):
            if layer.name in skipped:
                return args[0]
            return layer(*args, **kwargs)

        new = keras.models.clone_model(
            model, clone_function=clone, call_function=call
        )
    for layer in new.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
        elif layer.weights and not any(layer is m for m in nested.values()):
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return new
