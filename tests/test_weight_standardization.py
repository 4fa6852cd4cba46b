"""WeightStandardizedDense / WeightStandardizedConv2D."""

import keras
import numpy as np
import pytest

from keraslayers import WeightStandardizedConv2D, WeightStandardizedDense

from .gradcheck import autodiff_gradients, check_gradients
from .harness import check_layer, train_briefly

CASES = [
    (WeightStandardizedDense, {"units": 6}, (8, 5), (8, 6)),
    (
        WeightStandardizedConv2D,
        {"filters": 6, "kernel_size": 3, "padding": "same"},
        (2, 5, 5, 3),
        (2, 5, 5, 6),
    ),
]


def _rows(layer):
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    return kernel.reshape(-1, kernel.shape[-1]).T


@pytest.mark.parametrize("cls, kwargs, shape, out", CASES)
@pytest.mark.parametrize("scaled, trainable", [(False, 2), (True, 3)])
def test_harness(cls, kwargs, shape, out, scaled, trainable, tmp_path):
    check_layer(
        cls,
        {**kwargs, "scaled": scaled},
        shape,
        expected_output_shape=out,
        expected_num_trainable_weights=trainable,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
        run_fresh_process_check=True,
    )


@pytest.mark.parametrize("cls, kwargs, shape, out", CASES)
def test_filters_have_mean_0_and_variance_1_after_training(
    cls, kwargs, shape, out
):
    layer = cls(**kwargs)
    train_briefly(layer, shape)
    rows = _rows(layer)
    np.testing.assert_allclose(rows.mean(1), 0, atol=1e-6)
    np.testing.assert_allclose(rows.var(1), 1, rtol=1e-5)


@pytest.mark.parametrize("cls, kwargs, shape, out", CASES)
def test_scaled_form_has_variance_gain_squared_over_fan_in(
    cls, kwargs, shape, out
):
    layer = cls(**kwargs, scaled=True)
    train_briefly(layer, shape)
    rows = _rows(layer)
    fan_in = rows.shape[1]
    gain = keras.ops.convert_to_numpy(layer.gain).astype(np.float64)
    assert np.abs(gain - 1).max() > 1e-3
    np.testing.assert_allclose(rows.mean(1), 0, atol=1e-6)
    np.testing.assert_allclose(rows.var(1), gain**2 / fan_in, rtol=1e-5)


@pytest.mark.parametrize("cls, kwargs, shape, out", CASES)
@pytest.mark.parametrize("scaled", [False, True])
def test_gradients_match_finite_differences(cls, kwargs, shape, out, scaled):
    layer = cls(**kwargs, scaled=scaled, dtype="float64")
    check_gradients(layer, np.random.default_rng(0).normal(size=shape))


@pytest.mark.parametrize("scaled", [False, True])
def test_constant_filter_stays_finite(scaled):
    layer = WeightStandardizedDense(3, scaled=scaled)
    layer.build((None, 4))
    kernel = np.random.default_rng(1).normal(size=(4, 3)).astype("float32")
    kernel[:, 0] = 0.7
    layer._kernel.assign(kernel)
    x = np.random.default_rng(2).normal(size=(5, 4)).astype("float32")
    gx, gw = autodiff_gradients(layer, x, np.ones((5, 3)))
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(layer(x))))
    assert np.all(np.isfinite(gx)) and all(np.all(np.isfinite(g)) for g in gw)


def test_mixed_precision():
    layer = WeightStandardizedConv2D(4, 3, dtype="mixed_float16")
    x = np.random.default_rng(3).normal(size=(2, 5, 5, 3)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    assert str(y.dtype) == "float16" and np.all(np.isfinite(y))


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"epsilon": 0.0}, "epsilon=0.0"),
        ({"epsilon": -1.0, "scaled": True}, "epsilon=-1.0"),
    ],
)
def test_rejects_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match="WeightStandardizedDense") as info:
        WeightStandardizedDense(3, **kwargs)
    assert arg in str(info.value)
