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
