"""Folding inference-mode normalization into the preceding linear layer."""

from __future__ import annotations

import inspect
import re
import warnings

import keras
import numpy as np

_LAYERS = keras.layers
_CONV = (_LAYERS.Conv1D, _LAYERS.Conv2D, _LAYERS.Conv3D)
# Keras stores a transposed convolution's kernel as (..., out, in).
_TRANSPOSED = (
    _LAYERS.Conv1DTranspose,
    _LAYERS.Conv2DTranspose,
    _LAYERS.Conv3DTranspose,
)
# (..., in, multiplier); output channel in * multiplier + m.
_DEPTHWISE = (_LAYERS.DepthwiseConv1D, _LAYERS.DepthwiseConv2D)
_SEPARABLE = (_LAYERS.SeparableConv1D, _LAYERS.SeparableConv2D)
_LINEAR = (
    _LAYERS.Dense,
    _LAYERS.EinsumDense,
    *_CONV,
    *_TRANSPOSED,
    *_DEPTHWISE,
    *_SEPARABLE,
)
_UNFOLDED = (
    "; the pair is left unfolded, so the result keeps both layers and "
    "computes the same function."
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


def is_rewritable(model) -> bool:
    """Sequential or functional: a graph of layers that can be rebuilt."""
    return isinstance(model, keras.Sequential) or hasattr(model, "_operations")


def keep_subclassed(model, function: str) -> None:
    """Warns that a subclassed sub-model is copied as it is."""
    warnings.warn(
        f"{function}: `{model.name}` ({type(model).__name__}) is a "
        "subclassed model, whose `call` is Python code, not a graph of "
        "layers: it is copied as it is, with its weights, and nothing "
        "inside it is rewritten. The rest of the model is.",
        stacklevel=3,
    )


def check_rewritable(model, function: str) -> None:
    """A model these rewrites can handle: built, and Sequential or
    functional. A subclassed model's `call` is Python code, not a layer
    graph, so there is nothing to rewrite: refuse it with the reason."""
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(
            f"{function}: expects a built keras Model. Received: "
            f"model={model!r}"
        )
    if not is_rewritable(model):
        raise ValueError(
            f"{function}: cannot rewrite a subclassed model: its `call` is "
            "Python code, not a graph of layers. Build it with the "
            "Sequential or functional API, or apply the function to the "
            "Sequential/functional parts it holds. Received: "
            f"model={type(model).__name__}"
        )


def call_with_accepted_arguments(layer, *args, **kwargs):
    """Calls `layer` with the keyword arguments its `call` accepts. A graph
    records those its original layer took (`mask=None` for a
    weight-normalized Dense); the plain layer that replaces it in a
    rewrite may take fewer, and Keras passes masks on by itself."""
    parameters = inspect.signature(layer.call).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        names = {p.name for p in parameters}
        kwargs = {k: v for k, v in kwargs.items() if k in names}
    return layer(*args, **kwargs)


def _numpy(value) -> np.ndarray:
    return keras.ops.convert_to_numpy(value).astype("f8")


def _plain_view(layer):
    """`layer` itself if it is a Keras linear layer; for a weight-normalized
    layer (WN, CWN, OWN, WS, as layers or wrappers), a built copy of the
    plain Keras layer that `export_inference_model` replaces it by, holding
    its effective kernel; otherwise None."""
    if isinstance(layer, _LINEAR):
        return layer
    # Imported here: `export` imports this module.
    from keraslayers import export

    plain = export._plain_layer(layer)
    if not isinstance(plain, _LINEAR):
        return None
    plain.build(tuple(layer.input.shape))
    plain.set_weights(export._plain_weights(layer))
    return plain


def _einsum_specs(layer) -> tuple[str, str, str] | None:
    match = re.fullmatch(
        r"([a-zA-Z.]+),([a-zA-Z]+)->([a-zA-Z.]+)",
        str(layer.equation).replace(" ", ""),
    )
    return None if match is None else match.groups()


def _einsum_reason(layer, a) -> str:
    """Why the EinsumDense's equation allows no map of the output's last
    axis folded into its kernel ("" when it allows one)."""
    specs = _einsum_specs(layer)
    if specs is None:
        return (
            f"the equation {layer.equation!r} of EinsumDense "
            f"`{layer.name}` does not read as 'input,kernel->output'"
        )
    inputs, kernel, output = specs
    if output.endswith("."):
        return (
            f"the last output axis of EinsumDense `{layer.name}` "
            f"(equation {layer.equation!r}) is elided ('...')"
        )
    channel = output[-1]
    if kernel.count(channel) != 1:
        return (
            f"the last output axis {channel!r} of EinsumDense "
            f"`{layer.name}` (equation {layer.equation!r}) is not exactly "
            "one axis of the kernel, so no kernel slice belongs to one "
            "output channel alone"
        )
    if a.ndim == 2 and channel in inputs and np.any(a - np.diag(np.diag(a))):
        return (
            f"the last output axis {channel!r} of EinsumDense "
            f"`{layer.name}` (equation {layer.equation!r}) is also an "
            "input axis, so output channel j reads input channel j only and "
            "a normalizer that mixes channels cannot be folded"
        )
    return ""


def _within_groups(a, groups: int) -> bool:
    """Whether A maps every group of channels into itself: channel j of a
    grouped (or depthwise) convolution reads only its own group's inputs,
    so a matrix A that mixes groups would need an ungrouped kernel."""
    if groups == 1 or a.ndim == 1:
        return True
    group_of = np.arange(a.shape[0]) // (a.shape[0] // groups)
    return not np.any(a[group_of[:, None] != group_of[None, :]])


def _unfoldable_reason(linear, plain, a) -> str:
    if isinstance(plain, _DEPTHWISE):
        if not _within_groups(a, plain.kernel.shape[-2]):
            return (
                "it mixes output channels that the depthwise convolution "
                f"`{linear.name}` computes from different input channels "
                f"(depth_multiplier={plain.depth_multiplier})"
            )
    elif isinstance(plain, _CONV):
        groups = getattr(plain, "groups", 1) or 1
        if not _within_groups(a, groups):
            return (
                "it mixes output channels of different groups of the "
                f"grouped convolution `{linear.name}` (groups={groups})"
            )
    elif isinstance(plain, _LAYERS.EinsumDense):
        return _einsum_reason(plain, a)
    return ""


def _channel_axis_matches(plain, norm, rank: int) -> bool:
    axis = getattr(norm, "axis", -1)
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    axis = axis % rank
    if isinstance(plain, (_LAYERS.Dense, _LAYERS.EinsumDense)):
        return axis == rank - 1
    data_format = getattr(plain, "data_format", "channels_last")
    return axis == (1 if data_format == "channels_first" else rank - 1)


def _foldable_pair(linear, norm):
    """The plain view of `linear` (see `_plain_view`) when `norm` folds
    into it, else None."""
    plain = _plain_view(linear)
    if (
        plain is None
        or plain.activation not in (None, keras.activations.linear)
        or getattr(plain, "quantization_mode", None) is not None
        or not _channel_axis_matches(plain, norm, len(linear.output.shape))
    ):
        return None
    affine = inference_affine(norm)
    if affine is None:
        return None
    reason = _unfoldable_reason(linear, plain, affine[0])
    if reason:
        warnings.warn(
            f"fold_batch_normalization: `{norm.name}` does not fold into "
            f"`{linear.name}`: {reason}{_UNFOLDED}",
            # _foldable_pair < _pairs_in < fold_batch_normalization < caller
            stacklevel=4,
        )
        return None
    return plain


def _channel_map(x, a, axis: int) -> np.ndarray:
    """A applied to `x` along `axis`: diag(a) for a vector a."""
    if a.ndim == 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        return x * a.reshape(shape)
    return np.moveaxis(np.moveaxis(x, axis, -1) @ a.T, -1, axis)


def _depthwise_map(kernel, a) -> np.ndarray:
    """A applied to a depthwise kernel (..., in, multiplier), whose output
    channel i·multiplier + m reads input channel i only; A maps each input
    channel's `multiplier` outputs into themselves (`_within_groups`)."""
    inputs, multiplier = kernel.shape[-2:]
    if a.ndim == 1:
        return kernel * a.reshape(inputs, multiplier)
    index = np.arange(inputs)
    # blocks[i, n, m] = A[i·multiplier + n, i·multiplier + m]
    blocks = a.reshape(inputs, multiplier, inputs, multiplier)
    blocks = blocks[index, :, index, :]
    return np.einsum("...im,inm->...in", kernel, blocks)


def _folded(plain, norm) -> tuple[keras.layers.Layer, dict]:
    """A fresh layer of `plain`'s class and config, with a bias, and the
    values its weights take with `norm` (y = A h + b) folded in."""
    a, b = inference_affine(norm)
    config = plain.get_config()
    # `plain.kernel` is LoRA's merged kernel: the result needs no adapter.
    config.pop("lora_rank", None)
    config.pop("lora_alpha", None)
    values = {}
    target = "kernel"
    if isinstance(plain, _SEPARABLE):
        target = "pointwise_kernel"
        values["depthwise_kernel"] = _numpy(plain.depthwise_kernel)
    kernel = _numpy(getattr(plain, target))
    if isinstance(plain, _DEPTHWISE):
        values[target] = _depthwise_map(kernel, a)
    elif isinstance(plain, _TRANSPOSED):
        values[target] = _channel_map(kernel, a, -2)
    elif isinstance(plain, _LAYERS.EinsumDense):
        _, kernel_spec, output_spec = _einsum_specs(plain)
        channel = output_spec[-1]
        values[target] = _channel_map(kernel, a, kernel_spec.index(channel))
        bias_axes = plain.bias_axes or ""
        if channel not in bias_axes:
            config["bias_axes"] = bias_axes + channel
    else:
        values[target] = _channel_map(kernel, a, -1)
    if not isinstance(plain, _LAYERS.EinsumDense):  # it has `bias_axes`
        config["use_bias"] = True
    config["bias_initializer"] = "zeros"
    bias = np.zeros(b.shape) if plain.bias is None else _numpy(plain.bias)
    # An EinsumDense bias may leave out the channel axis (its last one has
    # size 1 then); the folded bias varies along it.
    bias = np.broadcast_to(bias, bias.shape[:-1] + b.shape)
    values["bias"] = _channel_map(bias, a, -1) + b
    return type(plain).from_config(config), values


def _pairs_in(model) -> list[tuple]:
    """(linear, norm, plain view of linear) where norm's only input is
    linear's output, nothing else reads that output, and norm folds into
    linear."""
    pairs = []
    if isinstance(model, keras.Sequential):
        layers = model.layers
        for linear, norm in zip(layers, layers[1:], strict=False):
            plain = _foldable_pair(linear, norm)
            if plain is not None:
                pairs.append((linear, norm, plain))
        return pairs
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
        ):
            plain = _foldable_pair(linear, norm)
            if plain is not None:
                pairs.append((linear, norm, plain))
    return pairs


def copy_layer(layer, function: str):
    """A fresh layer from `layer`'s config, under `layer`'s name."""
    try:
        copy = layer.__class__.from_config(layer.get_config())
    except (NotImplementedError, TypeError, ValueError, KeyError) as error:
        raise ValueError(
            f"{function}: cannot copy layer `{layer.name}` "
            f"({type(layer).__name__}): rebuilding it from its get_config() "
            f"failed ({type(error).__name__}: {error}). Give the class a "
            "get_config() that returns its constructor's arguments. "
            f"Received: layer={layer.name}"
        ) from error
    # A layer that derives its name from the one it is given (keras-hub's
    # MobileNet blocks set `name = f"{name}_0"`) comes back under another
    # name; keep the original's, under which users look it up.
    copy.name = layer.name
    return copy


def copy_weights(original, copy, function: str) -> None:
    """Copies the weights of `original` into `copy`, which `copy_layer`
    made and a rewritten graph has built."""
    values = original.get_weights()
    shapes = [tuple(weight.shape) for weight in copy.weights]
    if shapes != [value.shape for value in values]:
        raise ValueError(
            f"{function}: cannot copy the weights of layer "
            f"`{original.name}` ({type(original).__name__}): the copy "
            f"rebuilt from its get_config() has weights of shapes {shapes}, "
            f"the layer {[value.shape for value in values]}. Give the class "
            "a get_config() that rebuilds it exactly. Received: "
            f"layer={original.name}"
        )
    copy.set_weights(values)


def fold_batch_normalization(model: keras.Model) -> keras.Model:
    """Folds inference-mode normalization layers into the preceding linear
    layer and returns a new model with the same predictions.

    A normalization layer that is affine in inference, `y = A h + b` on
    each position's channel vector h, is folded when its only input is the
    output of a linear layer without activation whose output nothing else
    reads:

    ```
    kernel' = A applied along the kernel's output-channel axis
    bias'   = A · bias + b        (bias = 0 for a layer without one)
    ```

    The linear layers, with the kernel axis A acts on:

    - `Dense`, `Conv1D/2D/3D` (also grouped): the last axis;
    - `Conv1DTranspose/2DTranspose/3DTranspose`: the second to last, as
      Keras stores their kernel as (..., out, in);
    - `DepthwiseConv1D/2D`: the kernel (..., in, multiplier), whose output
      channel i·multiplier + m reads input channel i only;
    - `SeparableConv1D/2D`: the pointwise kernel, the depthwise one kept;
    - `EinsumDense` whose equation gives the output's last axis (the
      normalized one) exactly one kernel axis: that axis. Without a bias
      (`bias_axes=None`) the folded layer gets one over that axis; with a
      bias over other axes, that axis is added to `bias_axes`;
    - the weight-normalized layers (`WeightNormDense/Conv2D`,
      `CenteredWeightNormDense/Conv2D`, `OrthogonalDense/Conv2D`,
      `WeightStandardizedDense/Conv2D`) and wrappers
      (`WeightNormalization(layer)` and the other three) around the layers
      above: the one a normalizer follows is replaced by the plain Keras
      layer that `export_inference_model` would make, holding its
      effective kernel with the normalizer folded in. The others are kept;
      run `export_inference_model` on the result to replace them too.

    Folded: Keras `BatchNormalization` (also with `renorm=True`),
    `BatchRenormalization` (A = γ/σ), `BatchKalmanNormalization` and the
    whitening layers `DecorrelatedBatchNormalization` and
    `IterativeNormalization` (A = diag(γ)·Φ with the running whitening
    matrix, block-diagonal over groups). Layers that are not affine in
    inference (`FilterResponseNormalization`, layer or group
    normalization) and layers whose input is not such a linear layer are
    kept as they are. A pair that cannot fold is kept too, with a
    warning that says why: a whitening layer that mixes the output
    channels of different groups of a grouped convolution (or, for a
    depthwise one, of different input channels), or an `EinsumDense`
    whose equation has no kernel axis for the normalized one.

    Nested Sequential and functional sub-models are folded inside. Other
    layers, custom layers holding sublayers among them, are copied from
    their config under their own name, with their weights, and what they
    hold is not folded; a layer whose copy does not rebuild its weights
    raises a `ValueError` naming it. A subclassed model cannot be
    rewritten and raises a `ValueError`; one inside the model is copied
    as it is, with a warning. The input model is not modified;
    the result is meant for inference.

    Args:
        model: a `keras.Sequential` or functional `keras.Model`.

    Returns:
        A new model of the same kind without the folded normalization
        layers.

    Example:

    >>> import keras
    >>> from keraslayers import BatchRenormalization, fold_batch_normalization
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
        id(layer): fold_batch_normalization(layer)
        for layer in model.layers
        if isinstance(layer, keras.Model) and is_rewritable(layer)
    }
    for layer in model.layers:
        if isinstance(layer, keras.Model) and not is_rewritable(layer):
            keep_subclassed(layer, "fold_batch_normalization")
    folded_norms = {id(norm) for _, norm, _ in pairs}
    folded = {id(linear): _folded(plain, norm) for linear, norm, plain in pairs}
    # Weights are copied from layer to copy by identity, not by name: a
    # copy may not get its original's name from the config.
    copies = []
    stand_ins = set()

    def clone(layer):
        if id(layer) in folded_norms:
            # A stand-in that `call` below never calls, so it does not end
            # up in the new graph.
            stand_in = keras.layers.Identity(name=layer.name)
            stand_ins.add(id(stand_in))
            return stand_in
        if id(layer) in nested:
            return nested[id(layer)]
        if id(layer) in folded:
            return folded[id(layer)][0]
        copy = copy_layer(layer, "fold_batch_normalization")
        copies.append((layer, copy))
        return copy

    if isinstance(model, keras.Sequential):
        new = keras.Sequential(
            [keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype)]
            + [
                clone(layer)
                for layer in model.layers
                if id(layer) not in folded_norms
            ],
            name=f"{model.name}_folded",
        )
    else:

        def call(layer, *args, **kwargs):
            if id(layer) in stand_ins:
                return args[0]
            return call_with_accepted_arguments(layer, *args, **kwargs)

        new = keras.models.clone_model(
            model, clone_function=clone, call_function=call
        )
    for layer, values in folded.values():
        for name, value in values.items():
            variable = getattr(layer, name)
            dtype = keras.backend.standardize_dtype(variable.dtype)
            variable.assign(value.astype(dtype))
    for original, copy in copies:
        copy_weights(original, copy, "fold_batch_normalization")
    return new
