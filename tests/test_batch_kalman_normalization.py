"""BatchKalmanNormalization."""

import keras
import numpy as np
import pytest

from keraslayers import BatchKalmanNormalization

from . import oracles
from .gradcheck import check_gradients
from .harness import check_layer


def _batches(shape, steps, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    loc = rng.normal(size=shape[-1])
    for _ in range(steps):
        yield (loc + scale * rng.normal(size=shape)).astype("float32")


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({}, (4, 5, 5, 6)),
        ({"axis": 1}, (4, 6, 3)),
        ({"prior_weight": 0.5}, (2, 6)),
    ],
)
def test_harness(kwargs, shape, tmp_path):
    check_layer(
        BatchKalmanNormalization,
        kwargs,
        shape,
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=2,
        tmp_path=tmp_path,
        run_fresh_process_check=True,
    )


@pytest.mark.parametrize("p", [0.9, 0.5, 0.05])
@pytest.mark.parametrize("shape", [(2, 4), (2, 3, 3, 4)])  # micro-batches
def test_matches_official_combination_over_20_steps(p, shape):
    layer = BatchKalmanNormalization(prior_weight=p)
    oracle = oracles.BatchKalman(4, momentum=0.9, epsilon=1e-5, p=p)
    for x in _batches(shape, 20, scale=2.0):
        np.testing.assert_allclose(
            _np(layer(x, training=True)),
            oracle.train_step(x),
            rtol=1e-5,
            atol=1e-5,
        )
        np.testing.assert_allclose(
            _np(layer.moving_mean), oracle.mean, rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(
            _np(layer.moving_variance), oracle.var, rtol=1e-5, atol=1e-5
        )
    x = next(_batches(shape, 1, seed=5))
    np.testing.assert_allclose(
        _np(layer(x, training=False)), oracle.infer(x), rtol=1e-5, atol=1e-5
    )


def test_gate_falls_back_to_batch_statistics_for_an_implausible_prior():
    # Batch variance 1e-4 against a prior variance of 1: ratio 1e4 > 100.
    layer = BatchKalmanNormalization()
    x = next(_batches((8, 3), 1, scale=1e-2))
    np.testing.assert_allclose(
        _np(layer(x, training=True)),
        oracles.batch_norm(x, 1e-5),
        rtol=1e-4,
        atol=1e-4,
    )


def test_prior_weight_zero_equals_keras_batch_normalization():
    ours = BatchKalmanNormalization(prior_weight=0.0, momentum=0.9)
    theirs = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    for x in _batches((4, 3, 3, 5), 20, seed=1, scale=3.0):
        np.testing.assert_allclose(
            _np(ours(x, training=True)),
            _np(theirs(x, training=True)),
            rtol=1e-5,
            atol=1e-5,
        )
    np.testing.assert_allclose(
        _np(ours.moving_variance), _np(theirs.moving_variance), rtol=1e-5
    )
    x = next(_batches((4, 3, 3, 5), 1, seed=2))
    np.testing.assert_allclose(
        _np(ours(x, training=False)),
        _np(theirs(x, training=False)),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("shape", [(5, 3), (2, 2, 2, 3)])
def test_gradients_match_finite_differences(shape):
    layer = BatchKalmanNormalization(dtype="float64")
    x = np.random.default_rng(3).normal(size=shape) * 1.5 + 0.3
    layer(x, training=False)
    layer.moving_mean.assign(np.array([0.1, -0.2, 0.4]))
    layer.moving_variance.assign(np.array([1.5, 2.0, 0.8]))
    check_gradients(layer, x)


def test_batch_of_one_is_finite():
    layer = BatchKalmanNormalization()
    for x in (np.full((1, 4), 2.0, "float32"), np.ones((1, 4), "float32")):
        y = _np(layer(x, training=True))
        assert np.all(np.isfinite(y))
        assert np.all(np.isfinite(_np(layer.moving_variance)))


def test_mixed_precision_with_inputs_beyond_float16_range():
    layer = BatchKalmanNormalization(dtype="mixed_float16")
    x = 7e4 * (1 + np.random.default_rng(4).random((8, 4, 4, 3)))
    y = _np(layer(x.astype("float32"), training=True))
    assert str(y.dtype) == "float16" and np.all(np.isfinite(y))


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"prior_weight": 1.5}, "prior_weight=1.5"),
        ({"prior_weight": -0.1}, "prior_weight=-0.1"),
        ({"gate_ratio": 0}, "gate_ratio=0"),
        ({"epsilon": -1.0}, "epsilon=-1.0"),
        ({"momentum": 1.01}, "momentum=1.01"),
    ],
)
def test_rejects_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match="BatchKalmanNormalization") as info:
        BatchKalmanNormalization(**kwargs)
    assert arg in str(info.value)


def test_docstring_says_which_formulation():
    doc = BatchKalmanNormalization.__doc__
    assert "official code's" in doc and "transition formulation" in doc
