"""fold_batch_normalization and export_inference_model on models a user
builds beyond a flat graph: nested sub-models, subclassed models, grouped
convolutions."""

import keras
import numpy as np
import pytest

import keraslayers as kl


def _trained(model, x):
    # Move the moving statistics away from their initial values.
    for _ in range(3):
        model(x, training=True)
    return model


def _nested_sequential():
    inner = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, use_bias=False),
            kl.BatchRenormalization(),
            keras.layers.ReLU(),
            kl.WeightNormDense(5),
        ],
        name="inner",
    )
    return keras.Sequential([keras.Input((6,)), inner, keras.layers.Dense(3)])


def _nested_functional():
    inner_in = keras.Input((6,))
    h = keras.layers.Dense(8)(inner_in)
    h = kl.BatchRenormalization()(h)
    inner = keras.Model(inner_in, keras.layers.ReLU()(h), name="inner")
    x = keras.Input((6,))
    y = kl.WeightNormDense(3)(inner(x))
    return keras.Model(x, y)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


@pytest.mark.parametrize("build", [_nested_sequential, _nested_functional])
def test_fold_and_export_reach_inside_nested_models(build):
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    model = _trained(build(), x)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    folded = kl.fold_batch_normalization(model)
    exported = kl.export_inference_model(model)
    assert not any(
        isinstance(layer, kl.BatchRenormalization)
        for layer in _all_layers(folded)
    )
    assert not any(
        isinstance(layer, kl.WeightNormDense) for layer in _all_layers(exported)
    )
    both = kl.fold_batch_normalization(exported)
    assert not any(
        isinstance(layer, (kl.BatchRenormalization, kl.WeightNormDense))
        for layer in _all_layers(both)
    )
    for result in (folded, exported, both):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(result(x, training=False)),
            expected,
            rtol=1e-4,
            atol=1e-5,
        )


class Net(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(4)
        self.norm = kl.BatchRenormalization()

    def call(self, x, training=None):
        return self.norm(self.dense(x), training=training)


@pytest.mark.parametrize(
    "function", [kl.fold_batch_normalization, kl.export_inference_model]
)
def test_subclassed_model_is_refused_with_the_reason(function):
    net = Net()
    net(np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match=r"subclassed model.*model=Net"):
        function(net)


@pytest.mark.parametrize(
    "norm",
    [
        lambda: kl.IterativeNormalization(group_size=4),
        lambda: kl.DecorrelatedBatchNormalization(group_size=4),
    ],
)
def test_grouped_conv_whose_channels_get_mixed_is_left_unfolded(norm):
    x = np.random.default_rng(1).normal(size=(8, 6, 6, 4)).astype("float32")
    model = keras.Sequential(
        [keras.Input((6, 6, 4)), keras.layers.Conv2D(4, 3, groups=2), norm()]
    )
    model = _trained(model, x)
    with pytest.warns(UserWarning, match=r"groups=2.*left unfolded"):
        folded = kl.fold_batch_normalization(model)
    assert len(folded.layers) == 2
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(folded(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_grouped_conv_with_whitening_inside_its_groups_is_folded():
    x = np.random.default_rng(2).normal(size=(8, 6, 6, 4)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((6, 6, 4)),
            keras.layers.Conv2D(4, 3, groups=2),
            kl.IterativeNormalization(group_size=2),
        ]
    )
    model = _trained(model, x)
    folded = kl.fold_batch_normalization(model)
    assert len(folded.layers) == 1
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(folded(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
        rtol=1e-4,
        atol=1e-4,
    )
