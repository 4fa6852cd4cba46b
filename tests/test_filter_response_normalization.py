"""FilterResponseNormalization and TLU."""

import keras
import numpy as np
import pytest

from keraslayers import TLU, FilterResponseNormalization

from . import oracles
from .gradcheck import autodiff_gradients, check_gradients
from .harness import check_layer


@pytest.mark.parametrize(
    "kwargs, shape, trainable",
    [
        ({}, (4, 5, 5, 6), 2),
        ({}, (4, 7, 6), 2),
        ({"learned_epsilon": True}, (4, 6), 3),
        ({"axis": 1}, (4, 6, 5, 5), 2),
    ],
)
def test_harness(kwargs, shape, trainable, tmp_path):
    check_layer(
        FilterResponseNormalization,
        kwargs,
        shape,
        expected_num_trainable_weights=trainable,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
        run_fresh_process_check=True,
    )


@pytest.mark.parametrize(
    "shape", [(4, 5), (3, 6, 5), (2, 4, 4, 5), (2, 2, 3, 3, 5)]
)
def test_matches_paper_for_any_rank(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype("float32") * 3
    gamma = rng.normal(size=5).astype("float32")
    beta = rng.normal(size=5).astype("float32")
    layer = FilterResponseNormalization(epsilon=1e-6)
    layer.build(shape)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    expected = oracles.filter_response_norm(x, 1e-6, gamma, beta)
    for training in (True, False):  # no batch statistics: same function
        got = keras.ops.convert_to_numpy(layer(x, training=training))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_channels_first_axis():
    x = np.random.default_rng(1).normal(size=(2, 5, 4, 4)).astype("float32")
    got = FilterResponseNormalization(axis=1)(x)
    expected = oracles.filter_response_norm(np.moveaxis(x, 1, -1), 1e-6)
    np.testing.assert_allclose(
        np.moveaxis(keras.ops.convert_to_numpy(got), 1, -1),
        expected,
        rtol=1e-5,
        atol=1e-5,
    )


def test_learned_epsilon_is_epsilon_plus_abs_learned_value():
    x = np.random.default_rng(2).normal(size=(8, 5)).astype("float32") * 0.01
    layer = FilterResponseNormalization(learned_epsilon=True)
    layer.build(x.shape)
    layer.learned_eps.assign(-3e-4)  # the absolute value is used
    expected = oracles.filter_response_norm(x, 1e-6 + 3e-4)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-5
    )
    # Dense input without learned ε: the output is close to sign(x).
    x = np.sign(x) * (0.1 + np.abs(x) * 100)
    sign_like = keras.ops.convert_to_numpy(FilterResponseNormalization()(x))
    np.testing.assert_allclose(sign_like, np.sign(x), atol=1e-3)


@pytest.mark.parametrize(
    "kwargs, shape",
    [({}, (3, 3, 3, 2)), ({"learned_epsilon": True}, (4, 3)), ({}, (2, 5, 3))],
)
def test_gradients_match_finite_differences(kwargs, shape):
    layer = FilterResponseNormalization(dtype="float64", **kwargs)
    x = np.random.default_rng(3).normal(size=shape)
    layer(x)
    layer.gamma.assign(np.linspace(0.5, 1.5, shape[-1]))
    layer.beta.assign(np.linspace(-0.2, 0.2, shape[-1]))
    check_gradients(layer, x)


def test_tlu_thresholds_per_channel():
    layer = TLU()
    x = np.random.default_rng(4).normal(size=(2, 3, 3, 4)).astype("float32")
    layer.build(x.shape)
    tau = np.array([-1.0, 0.0, 0.5, 2.0], "float32")
    layer.tau.assign(tau)
    assert layer.tau.shape == (4,)  # per channel, not per position
    got = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_array_equal(got, np.maximum(x, tau))


def test_tlu_harness(tmp_path):
    check_layer(
        TLU,
        {"tau_initializer": "random_normal"},
        (4, 3, 6),
        expected_num_trainable_weights=1,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )


def test_tlu_affine_matches_its_formula():
    """TF Addons' TLU-Affine: max(x, α·x + τ) per channel; α = 0 is TLU."""
    layer = TLU(affine=True)
    x = np.random.default_rng(4).normal(size=(2, 3, 3, 4)).astype("float32")
    layer.build(x.shape)
    got = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_array_equal(got, np.maximum(x, 0.0))
    tau = np.array([-1.0, 0.0, 0.5, 2.0], "float32")
    alpha = np.array([0.1, -0.2, 0.5, 1.0], "float32")
    layer.tau.assign(tau)
    layer.alpha.assign(alpha)
    expected = np.maximum(x.astype(np.float64), alpha * x + tau.astype(float))
    got = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_tlu_affine_harness(tmp_path):
    check_layer(
        TLU,
        {
            "affine": True,
            "tau_initializer": "random_normal",
            "alpha_initializer": "random_normal",
        },
        (4, 3, 6),
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
    )


def test_tlu_affine_gradient():
    layer = TLU(affine=True, dtype="float64")
    x = np.random.default_rng(5).normal(size=(3, 4))
    layer(x)
    layer.tau.assign(np.array([0.05, -0.31, 0.12, 0.7]))
    layer.alpha.assign(np.array([0.3, -0.4, 0.15, 0.6]))
    check_gradients(layer, x)


def test_tlu_rejects_a_string_affine():
    with pytest.raises(ValueError, match=r"TLU.*affine='yes'"):
        TLU(affine="yes")


def test_tlu_gradient():
    layer = TLU(dtype="float64")
    x = np.random.default_rng(5).normal(size=(3, 4))
    layer(x)
    layer.tau.assign(np.array([0.05, -0.31, 0.12, 0.7]))
    check_gradients(layer, x)


def test_tlu_gradient_at_a_tie_goes_to_tau():
    layer = TLU(dtype="float64")
    x = np.array([[0.0, 1.0, -1.0]])
    layer(x)
    layer.tau.assign(np.array([0.0, 0.5, 0.5]))
    cotangent = np.array([[2.0, 3.0, 5.0]])
    gx, (gtau,) = autodiff_gradients(layer, x, cotangent)
    # Channel 0 is a tie (x = τ): a subgradient, all of it to τ, none
    # lost; channel 1 passes x through, channel 2 clamps to τ.
    np.testing.assert_array_equal(gx, [[0.0, 3.0, 0.0]])
    np.testing.assert_array_equal(gtau, [2.0, 0.0, 5.0])


def test_tlu_propagates_nan_like_relu():
    x = np.array([[np.nan, -1.0, 2.0]], dtype="float32")
    out = keras.ops.convert_to_numpy(TLU()(x))
    relu = keras.ops.convert_to_numpy(keras.layers.ReLU()(x))
    assert np.isnan(out[0, 0]) and np.isnan(relu[0, 0])
    np.testing.assert_array_equal(out[0, 1:], [0.0, 2.0])


def test_frn_tlu_model_with_a_nan_pixel_stops_terminate_on_nan():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6, 6, 1)).astype("float32")
    x[5, 2, 3, 0] = np.nan
    y = rng.integers(0, 3, size=64)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(4, 3),
            FilterResponseNormalization(),
            TLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    model.compile(
        "sgd",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(
        x,
        y,
        batch_size=64,
        epochs=3,
        verbose=0,
        callbacks=[keras.callbacks.TerminateOnNaN()],
    )
    assert len(history.history["loss"]) == 1
    assert np.isnan(history.history["loss"][0])


def test_mixed_precision_with_inputs_beyond_float16_range():
    x = np.random.default_rng(6).normal(size=(4, 4, 4, 3)).astype("float32")
    x = 7e4 * np.sign(x) * (1 + np.abs(x))
    for kwargs in ({}, {"learned_epsilon": True}):
        layer = FilterResponseNormalization(dtype="mixed_float16", **kwargs)
        y = keras.ops.convert_to_numpy(layer(x))
        assert str(y.dtype) == "float16"
        assert np.all(np.isfinite(y))
        expected = oracles.filter_response_norm(x, 1e-6)
        np.testing.assert_allclose(y, expected, rtol=2e-3, atol=2e-3)


def test_all_zero_channel_stays_finite():
    x = np.zeros((2, 3, 3, 2), "float32")
    for kwargs in ({}, {"learned_epsilon": True}):
        y = keras.ops.convert_to_numpy(FilterResponseNormalization(**kwargs)(x))
        np.testing.assert_array_equal(y, 0.0)


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"epsilon": -1e-6}, "epsilon=-1e-06"),
        ({"epsilon": 0.0}, "epsilon=0.0"),
        ({"learned_epsilon_init": -1.0}, "learned_epsilon_init=-1.0"),
        ({"axis": 1.5}, "axis=1.5"),
        ({"dtype": "int32"}, "dtype='int32'"),
    ],
)
def test_rejects_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match="FilterResponseNormalization") as info:
        FilterResponseNormalization(**kwargs)
    assert arg in str(info.value)


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"rank >= 2.*input_shape=\(4,\)"):
        FilterResponseNormalization().build((4,))
    with pytest.raises(
        ValueError, match=r"FilterResponseNormalization.*axis=0"
    ):
        FilterResponseNormalization(axis=0).build((2, 3))
    with pytest.raises(ValueError, match=r"TLU.*axis=-5"):
        TLU(axis=-5).build((2, 3))
