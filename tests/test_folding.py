"""fold_batch_normalization."""

import keras
import numpy as np
import pytest

import keraslayers
from keraslayers import fold_batch_normalization

NORMS = {
    "keras_bn": lambda: keras.layers.BatchNormalization(),
    "keras_renorm": lambda: keras.layers.BatchNormalization(renorm=True),
    "brn": lambda: keraslayers.BatchRenormalization(),
    "bkn": lambda: keraslayers.BatchKalmanNormalization(),
    "dbn": lambda: keraslayers.DecorrelatedBatchNormalization(group_size=4),
    "iternorm": lambda: keraslayers.IterativeNormalization(group_size=4),
}


def _train(model, x, steps=3):
    model.compile(keras.optimizers.SGD(0.05), "mse", jit_compile=True)
    y = np.random.default_rng(1).normal(size=(len(x), *model.output_shape[1:]))
    model.fit(x, y.astype("float32"), batch_size=16, epochs=steps, verbose=0)


def _sequential(norm, conv=True, use_bias=False):
    linear = (
        keras.layers.Conv2D(8, 3, padding="same", use_bias=use_bias)
        if conv
        else keras.layers.Dense(8, use_bias=use_bias)
    )
    shape = (6, 6, 3) if conv else (5,)
    return keras.Sequential(
        [
            keras.Input(shape),
            linear,
            norm,
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )


@pytest.mark.parametrize("name", sorted(NORMS))
@pytest.mark.parametrize("conv", [True, False])
@pytest.mark.parametrize("use_bias", [True, False])
def test_sequential_fold_keeps_predictions(name, conv, use_bias):
    model = _sequential(NORMS[name](), conv, use_bias)
    x = (
        np.random.default_rng(0)
        .normal(size=(64, *model.input_shape[1:]))
        .astype("float32")
        * 2
        + 0.5
    )
    _train(model, x)
    folded = fold_batch_normalization(model)
    assert len(folded.layers) == len(model.layers) - 1
    assert not any(
        type(layer) is type(model.layers[1]) for layer in folded.layers[1:]
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(folded(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
        rtol=1e-4,
        atol=1e-4,
    )


def test_functional_fold_and_what_is_left_alone():
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    a = keras.layers.BatchNormalization()(h)  # folded
    a = keras.layers.ReLU()(a)
    b = keras.layers.Conv2D(8, 1, activation="relu")(a)
    b = keras.layers.BatchNormalization()(b)  # after an activation: kept
    c = keras.layers.Conv2D(8, 1)(b)
    c1 = keraslayers.FilterResponseNormalization()(c)  # not affine: kept
    d = keras.layers.Conv2D(8, 1)(c1)
    shared_bn = keras.layers.BatchNormalization()(d)  # d read twice: kept
    out = keras.layers.Add()([shared_bn, d])
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(out))
    x = np.random.default_rng(2).normal(size=(32, 8, 8, 3)).astype("float32")
    _train(model, x)
    folded = fold_batch_normalization(model)
    kinds = [type(layer).__name__ for layer in folded.layers]
    assert kinds.count("BatchNormalization") == 2
    assert kinds.count("FilterResponseNormalization") == 1
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(folded(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
        rtol=1e-4,
        atol=1e-4,
    )
    # The input model is unchanged and still has its own layers.
    assert (
        sum(
            isinstance(layer, keras.layers.BatchNormalization)
            for layer in model.layers
        )
        == 3
    )


def test_folded_model_saves_and_loads_without_the_normalizers(tmp_path):
    model = _sequential(keraslayers.BatchRenormalization())
    x = np.random.default_rng(3).normal(size=(32, 6, 6, 3)).astype("float32")
    _train(model, x)
    folded = fold_batch_normalization(model)
    assert all(
        not type(layer).__module__.startswith("keraslayers")
        for layer in folded.layers
    )
    folded.save(tmp_path / "folded.keras")
    loaded = keras.saving.load_model(tmp_path / "folded.keras")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x)),
        keras.ops.convert_to_numpy(folded(x)),
    )


def test_rejects_what_is_not_a_built_model():
    with pytest.raises(ValueError, match="fold_batch_normalization.*model="):
        fold_batch_normalization(keras.layers.Dense(3))


# -- the other linear layers ---------------------------------------------------


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _randomize_statistics(model, seed=0):
    """Non-trivial γ (both signs), β and moving statistics for every Keras
    BatchNormalization of the model."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            sign = rng.choice([-1.0, 1.0], c)
            layer.gamma.assign(sign * rng.uniform(0.5, 2.0, c))
            layer.beta.assign(rng.normal(size=c))
            layer.moving_mean.assign(rng.normal(size=c))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, c))


def _input_for(model, seed=1):
    shape = (8, *model.input_shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _assert_same_predictions(folded, model, x):
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    scale = np.abs(expected).max()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(folded(x, training=False)),
        expected,
        rtol=1e-5,
        atol=1e-5 * scale,
    )


def _norms_left(model, kind=keras.layers.BatchNormalization):
    return [layer for layer in _all_layers(model) if isinstance(layer, kind)]


# name: (spatial rank, the layer with or without bias)
LINEAR = {
    "depthwise_conv2d": (
        2,
        lambda b: keras.layers.DepthwiseConv2D(
            3, depth_multiplier=2, padding="same", use_bias=b
        ),
    ),
    "depthwise_conv1d": (
        1,
        lambda b: keras.layers.DepthwiseConv1D(
            3, depth_multiplier=3, use_bias=b
        ),
    ),
    "separable_conv2d": (
        2,
        lambda b: keras.layers.SeparableConv2D(
            5, 3, depth_multiplier=2, use_bias=b
        ),
    ),
    "separable_conv1d": (
        1,
        lambda b: keras.layers.SeparableConv1D(5, 3, use_bias=b),
    ),
    "conv1d_transpose": (
        1,
        lambda b: keras.layers.Conv1DTranspose(5, 3, strides=2, use_bias=b),
    ),
    "conv2d_transpose": (
        2,
        lambda b: keras.layers.Conv2DTranspose(
            5, 3, strides=2, padding="same", use_bias=b
        ),
    ),
    "conv3d_transpose": (
        3,
        lambda b: keras.layers.Conv3DTranspose(5, 2, strides=2, use_bias=b),
    ),
}


def _linear_then_norm(kind, norm, use_bias=False):
    rank, linear = LINEAR[kind]
    inputs = keras.Input((5,) * rank + (3,))
    outputs = keras.layers.ReLU()(norm(linear(use_bias)(inputs)))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("kind", sorted(LINEAR))
def test_batch_normalization_folds_into_more_linear_layers(kind, use_bias):
    model = _linear_then_norm(kind, keras.layers.BatchNormalization(), use_bias)
    _randomize_statistics(model)
    folded = fold_batch_normalization(model)
    assert not _norms_left(folded)
    assert type(folded.layers[1]) is type(model.layers[1])
    assert folded.layers[1].bias is not None
    _assert_same_predictions(folded, model, _input_for(model))


def _trained(model, x):
    # Moves the running statistics (whitening matrices) away from their
    # initial values.
    for _ in range(3):
        model(x * 2 + 1, training=True)
    return model


@pytest.mark.parametrize(
    "kind", ["depthwise_conv2d", "separable_conv2d", "conv2d_transpose"]
)
def test_whitening_folds_into_more_linear_layers(kind):
    # The depthwise convolution's 6 outputs (3 inputs × 2) whitened in
    # groups of 2: each group reads one input channel. The others have 5.
    group_size = 2 if kind == "depthwise_conv2d" else 5
    model = _linear_then_norm(
        kind, keraslayers.IterativeNormalization(group_size=group_size)
    )
    x = _input_for(model)
    folded = fold_batch_normalization(_trained(model, x))
    assert not _norms_left(folded, keraslayers.IterativeNormalization)
    _assert_same_predictions(folded, model, x)


def test_whitening_across_depthwise_input_channels_is_left_unfolded():
    # Groups of 3 of the 6 outputs mix input channels 0 and 1.
    model = _linear_then_norm(
        "depthwise_conv2d",
        keraslayers.IterativeNormalization(group_size=3),
        use_bias=True,
    )
    x = _input_for(model)
    _trained(model, x)
    with pytest.warns(
        UserWarning, match=r"different input channels.*left unfolded"
    ):
        folded = fold_batch_normalization(model)
    assert len(_norms_left(folded, keraslayers.IterativeNormalization)) == 1
    _assert_same_predictions(folded, model, x)


# -- EinsumDense ---------------------------------------------------------------

EINSUM = {
    # equation, output shape, bias_axes, input shape
    "matmul_no_bias": ("abc,cd->abd", (4, 6), None, (4, 5)),
    "matmul_bias": ("abc,cd->abd", (4, 6), "d", (4, 5)),
    "bias_on_other_axis": ("abc,cd->abd", (4, 6), "b", (4, 5)),
    "ellipsis": ("...b,bc->...c", 6, None, (3, 4, 5)),
    "kernel_axis_not_last": ("abc,dce->abde", (4, 2, 6), "de", (4, 5)),
    "elementwise": ("abc,c->abc", (4, 5), None, (4, 5)),
    "heads": ("abc,cde->abde", (4, 3, 6), None, (4, 5)),
}


def _einsum_then_norm(name, norm):
    equation, output_shape, bias_axes, shape = EINSUM[name]
    inputs = keras.Input(shape)
    h = keras.layers.EinsumDense(
        equation,
        output_shape,
        bias_axes=bias_axes,
        bias_initializer="random_normal",
    )(inputs)
    return keras.Model(inputs, norm(h))


@pytest.mark.parametrize("name", sorted(EINSUM))
def test_batch_normalization_folds_into_einsum_dense(name, tmp_path):
    model = _einsum_then_norm(name, keras.layers.BatchNormalization())
    _randomize_statistics(model)
    folded = fold_batch_normalization(model)
    assert not _norms_left(folded)
    (einsum,) = [
        layer
        for layer in folded.layers
        if isinstance(layer, keras.layers.EinsumDense)
    ]
    old_axes = EINSUM[name][2] or ""
    channel = EINSUM[name][0][-1]
    assert set(einsum.bias_axes) == set(old_axes + channel)
    x = _input_for(model)
    _assert_same_predictions(folded, model, x)
    # The added bias axes survive a save and load.
    folded.save(tmp_path / "folded.keras")
    loaded = keras.saving.load_model(tmp_path / "folded.keras")
    _assert_same_predictions(loaded, model, x)


@pytest.mark.parametrize("name", ["heads", "matmul_bias"])
def test_whitening_folds_into_einsum_dense(name):
    channels = EINSUM[name][1][-1]
    model = _einsum_then_norm(
        name, keraslayers.IterativeNormalization(group_size=channels)
    )
    x = _input_for(model)
    folded = fold_batch_normalization(_trained(model, x))
    assert not _norms_left(folded, keraslayers.IterativeNormalization)
    _assert_same_predictions(folded, model, x)


@pytest.mark.parametrize(
    "equation, output_shape, norm, message",
    [
        # The normalized axis comes from the input: no kernel axis for it.
        (
            "abc,bd->adc",
            (5, 6),
            keras.layers.BatchNormalization,
            r"last output axis 'c'.*not exactly one axis of the kernel",
        ),
        # Output channel j reads input channel j only: a per-channel scale
        # folds (above), a whitening matrix does not.
        (
            "abc,c->abc",
            (4, 6),
            lambda: keraslayers.IterativeNormalization(group_size=6),
            r"'c'.*also an input axis",
        ),
    ],
)
def test_einsum_dense_whose_equation_does_not_fold_is_kept(
    equation, output_shape, norm, message
):
    inputs = keras.Input((4, 6))
    h = keras.layers.EinsumDense(equation, output_shape)(inputs)
    model = keras.Model(inputs, norm()(h))
    x = _input_for(model)
    _trained(model, x)
    if isinstance(model.layers[-1], keras.layers.BatchNormalization):
        _randomize_statistics(model)
    with pytest.warns(UserWarning, match=message + r".*left unfolded"):
        folded = fold_batch_normalization(model)
    assert type(folded.layers[-1]) is type(model.layers[-1])
    _assert_same_predictions(folded, model, x)


# -- models built from custom layers ------------------------------------------


class _Block(keras.layers.Layer):
    """A Conv2D + BN block as a Layer subclass, named the way keras-hub's
    MobileNet blocks are: `name=f"{name}_0"`, so a copy rebuilt from its
    config gets another name."""

    def __init__(self, filters, name=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.name = f"{name}_0"
        self.conv = keras.layers.Conv2D(filters, 3, padding="same")
        self.norm = keras.layers.BatchNormalization()

    def call(self, inputs, training=None):
        return keras.ops.relu(self.norm(self.conv(inputs), training=training))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def _model_with_blocks():
    inputs = keras.Input((6, 6, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    h = keras.layers.BatchNormalization()(h)  # folded
    h = _Block(5, name="block_0")(h)  # kept, with its inner BN
    h = keras.layers.DepthwiseConv2D(3, padding="same")(h)
    h = keras.layers.BatchNormalization()(h)  # folded
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(h))


def test_custom_layers_are_kept_with_their_weights():
    model = _model_with_blocks()
    _randomize_statistics(model)
    (block,) = [layer for layer in model.layers if isinstance(layer, _Block)]
    # Randomize the BN inside the block as well.
    rng = np.random.default_rng(5)
    block.norm.moving_mean.assign(rng.normal(size=5))
    block.norm.moving_variance.assign(rng.uniform(0.2, 3.0, 5))
    block.norm.gamma.assign(rng.normal(size=5))
    folded = fold_batch_normalization(model)
    kinds = [type(layer).__name__ for layer in folded.layers]
    assert kinds == [
        "InputLayer",
        "Conv2D",
        "_Block",
        "DepthwiseConv2D",
        "GlobalAveragePooling2D",
    ]
    (copy,) = [layer for layer in folded.layers if isinstance(layer, _Block)]
    assert copy is not block and copy.name == block.name == "block_0_0"
    for ours, theirs in zip(copy.weights, block.weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(ours),
            keras.ops.convert_to_numpy(theirs),
        )
    _assert_same_predictions(folded, model, _input_for(model))


def test_export_keeps_custom_layers_with_their_weights():
    # export_inference_model copies layers the same way.
    model = _model_with_blocks()
    _randomize_statistics(model)
    exported = keraslayers.export_inference_model(model)
    assert [layer.name for layer in exported.layers[1:]] == [
        layer.name for layer in model.layers[1:]
    ]
    _assert_same_predictions(exported, model, _input_for(model))


class _Forgetful(keras.layers.Layer):
    """A layer whose config lacks its constructor's argument."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense = keras.layers.Dense(units)

    def call(self, inputs):
        return self.dense(inputs)

    def get_config(self):
        return super().get_config()


class _Misconfigured(_Forgetful):
    """A layer whose config rebuilds another layer."""

    def get_config(self):
        return {**super().get_config(), "units": self.units + 1}


@pytest.mark.parametrize(
    "layer, message",
    [
        (_Forgetful, r"cannot copy layer `custom`.*TypeError"),
        (_Misconfigured, r"cannot copy the weights of layer `custom`"),
    ],
)
def test_a_layer_that_cannot_be_copied_raises_naming_it(layer, message):
    inputs = keras.Input((4,))
    h = keras.layers.BatchNormalization()(keras.layers.Dense(3)(inputs))
    model = keras.Model(inputs, layer(2, name="custom")(h))
    with pytest.raises(ValueError, match=r"(?s)" + message + r".*layer=custom"):
        fold_batch_normalization(model)


# -- weight-normalized layers -------------------------------------------------

WEIGHT_NORMALIZED = {
    "wn_dense": lambda: keraslayers.WeightNormDense(6, use_bias=False),
    "cwn_dense": lambda: keraslayers.CenteredWeightNormDense(6),
    "orthogonal_conv2d": lambda: keraslayers.OrthogonalConv2D(6, 3),
    "ws_conv2d": lambda: keraslayers.WeightStandardizedConv2D(6, 3),
    "wn_wrapper_conv2d_transpose": lambda: keraslayers.WeightNormalization(
        keras.layers.Conv2DTranspose(6, 3, use_bias=False)
    ),
    "wn_wrapper_einsum": lambda: keraslayers.WeightNormalization(
        keras.layers.EinsumDense("abc,cd->abd", (5, 6))
    ),
}


@pytest.mark.parametrize("name", sorted(WEIGHT_NORMALIZED))
def test_weight_normalized_layers_fold_in_one_call(name):
    shape = (5, 4) if "dense" in name or "einsum" in name else (5, 5, 4)
    last = keraslayers.WeightNormDense(2)  # no norm after it: kept
    model = keras.Sequential(
        [
            keras.Input(shape),
            WEIGHT_NORMALIZED[name](),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            last,
        ]
    )
    _randomize_statistics(model)
    x = _input_for(model)
    folded = fold_batch_normalization(model)
    assert not _norms_left(folded)
    assert type(folded.layers[0]).__module__.startswith("keras.")
    assert isinstance(folded.layers[-1], keraslayers.WeightNormDense)
    _assert_same_predictions(folded, model, x)
    exported = keraslayers.export_inference_model(folded)
    assert not any(
        type(layer).__module__.startswith("keraslayers")
        for layer in exported.layers
    )
    _assert_same_predictions(exported, model, x)


def test_weight_normalized_layer_in_a_functional_model_folds():
    # The graph records WeightNormDense's `mask=None`, which the plain
    # Dense replacing it does not take.
    inputs = keras.Input((5, 4))
    h = keraslayers.WeightNormDense(6)(inputs)
    h = keras.layers.BatchNormalization()(h)
    model = keras.Model(inputs, keraslayers.WeightNormDense(2)(h))
    _randomize_statistics(model)
    x = _input_for(model)
    folded = fold_batch_normalization(model)
    assert not _norms_left(folded)
    assert [type(layer).__name__ for layer in folded.layers[1:]] == [
        "Dense",
        "WeightNormDense",
    ]
    _assert_same_predictions(folded, model, x)
    _assert_same_predictions(
        keraslayers.export_inference_model(folded), model, x
    )


class _SubclassedHead(keras.Model):
    """A subclassed sub-model: its `call` is code, with a BN inside."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4, use_bias=False)
        self.norm = keras.layers.BatchNormalization()

    def call(self, x, training=None):
        return self.norm(self.dense(x), training=training)


@pytest.mark.parametrize("rewrite", ["fold", "export"])
def test_a_subclassed_sub_model_is_kept_and_the_rest_rewritten(rewrite):
    rng = np.random.default_rng(0)
    inputs = keras.Input((3,))
    h = keraslayers.WeightNormDense(5, use_bias=False)(inputs)
    h = keras.layers.BatchNormalization()(h)
    outputs = _SubclassedHead()(h)
    model = keras.Model(inputs, outputs)
    for layer in model.layers + model.layers[-1].layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape))
            layer.gamma.assign(rng.uniform(0.5, 2, size=layer.gamma.shape))
    function = {
        "fold": fold_batch_normalization,
        "export": keraslayers.export_inference_model,
    }[rewrite]
    with pytest.warns(UserWarning, match=r"`.*` \(_SubclassedHead\).*as it is"):
        new = function(model)
    x = rng.normal(size=(6, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(new(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
        rtol=1e-5,
        atol=1e-5,
    )
    kinds = [type(layer).__name__ for layer in new.layers]
    # The top-level pair is rewritten; the sub-model is a copy, not the
    # original object, and keeps its own BN.
    assert "WeightNormDense" not in kinds
    if rewrite == "fold":
        assert "BatchNormalization" not in kinds
    assert new.layers[-1] is not model.layers[-1]
