"""DecorrelatedBatchNormalization and IterativeNormalization."""

import keras
import numpy as np
import pytest

from keraslayers import DecorrelatedBatchNormalization, IterativeNormalization

from . import oracles
from .gradcheck import autodiff_gradients, check_gradients
from .harness import check_layer

LAYERS = [DecorrelatedBatchNormalization, IterativeNormalization]


def _batch(shape, seed=0, correlated=True):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    x = rng.normal(size=shape)
    if correlated:
        mix = np.eye(c) + 0.5 * rng.normal(size=(c, c))
        x = x @ mix + rng.normal(size=c)
    return x.astype("float32")


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _matrix_fn(layer_cls, num_iterations=5):
    if layer_cls is DecorrelatedBatchNormalization:
        return oracles.zca
    return lambda s: oracles.iternorm_matrix(s, num_iterations)


@pytest.mark.parametrize("layer_cls", LAYERS)
@pytest.mark.parametrize(
    "kwargs, shape",
    [
        ({"group_size": 3}, (16, 6)),
        ({"group_size": 4}, (4, 3, 3, 8)),
        ({"group_size": 2, "axis": 1}, (8, 4, 5)),
        ({"group_size": 64}, (16, 8)),  # one group of all channels
    ],
)
def test_harness(layer_cls, kwargs, shape, tmp_path):
    check_layer(
        layer_cls,
        kwargs,
        shape,
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=2,
        tmp_path=tmp_path,
        run_fresh_process_check=True,
    )


@pytest.mark.parametrize("layer_cls", LAYERS)
@pytest.mark.parametrize("shape", [(32, 6), (4, 3, 3, 6)])
def test_matches_paper_over_20_steps(layer_cls, shape):
    momentum = 0.8
    layer = layer_cls(group_size=3, momentum=momentum)
    matrix_fn = _matrix_fn(layer_cls)
    run_mean = np.zeros(6)
    run_phi = np.broadcast_to(np.eye(3), (2, 3, 3)).copy()
    for step in range(20):
        x = _batch(shape, seed=step)
        expected, mean, phi = oracles.whiten(x, 3, 1e-5, matrix_fn)
        np.testing.assert_allclose(
            _np(layer(x, training=True)), expected, rtol=1e-5, atol=1e-5
        )
        run_mean = momentum * run_mean + (1 - momentum) * mean
        run_phi = momentum * run_phi + (1 - momentum) * phi
        np.testing.assert_allclose(
            _np(layer.moving_mean), run_mean, rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(
            _np(layer.moving_whitening), run_phi, rtol=1e-5, atol=1e-5
        )
    x = _batch(shape, seed=99)
    np.testing.assert_allclose(
        _np(layer(x, training=False)),
        oracles.whiten_inference(x, 3, run_mean, run_phi),
        rtol=1e-5,
        atol=1e-5,
    )


def test_dbn_output_covariance_is_identity_minus_eps_sigma_inverse():
    eps = 1e-2  # large enough for the εΣ⁻¹ term to be visible
    x = _batch((256, 8), seed=1)
    y = _np(
        DecorrelatedBatchNormalization(group_size=8, epsilon=eps)(
            x, training=True
        )
    )
    _, _, sigma = oracles.group_covariances(x, 8, eps)
    cov = np.cov(y.astype(np.float64), rowvar=False, bias=True)
    expected = np.eye(8) - eps * np.linalg.inv(sigma[0])
    np.testing.assert_allclose(cov, expected, atol=1e-5)
    assert np.abs(expected - np.eye(8)).max() > 1e-3


@pytest.mark.parametrize("layer_cls", LAYERS)
def test_group_size_one_equals_batch_norm(layer_cls):
    x = _batch((8, 3, 3, 5), seed=2)
    layer = layer_cls(group_size=1, epsilon=1e-3, center=False, scale=False)
    np.testing.assert_allclose(
        _np(layer(x, training=True)),
        oracles.batch_norm(x, 1e-3),
        rtol=1e-5,
        atol=1e-5,
    )


def test_iternorm_zero_iterations_is_centered_over_root_trace():
    x = _batch((64, 6), seed=3)
    layer = IterativeNormalization(group_size=6, num_iterations=0)
    xc, _, sigma = oracles.group_covariances(x, 6, 1e-5)
    expected = (xc[0] / np.sqrt(np.trace(sigma[0]))).T
    np.testing.assert_allclose(
        _np(layer(x, training=True)), expected, rtol=1e-5, atol=1e-6
    )


def _spectrum_batch(eigenvalues, n, seed=0):
    """A centered batch whose covariance has exactly `eigenvalues`."""
    rng = np.random.default_rng(seed)
    m = len(eigenvalues)
    z = rng.normal(size=(n, m))
    z -= z.mean(0)
    z = z @ oracles.zca(z.T @ z / n)  # now z.T z / n = I
    q, _ = np.linalg.qr(rng.normal(size=(m, m)))
    return z @ np.diag(np.sqrt(eigenvalues)) @ q.T


DEGENERATE = {
    "covariance c*I": lambda: _spectrum_batch(np.full(8, 4.0), 64),
    "batch smaller than group": lambda: _batch((4, 8), seed=4),
    "constant channels": lambda: np.concatenate(
        [_batch((16, 5), seed=5), np.full((16, 3), 7.0)], axis=1
    ),
    "single sample": lambda: _batch((1, 8), seed=6),
}


@pytest.mark.parametrize("layer_cls", LAYERS)
@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_forward_and_backward_stay_finite_on_degenerate_batches(
    layer_cls, case
):
    x = DEGENERATE[case]().astype("float32")
    layer = layer_cls(group_size=8)
    y = _np(layer(x, training=True))
    assert np.all(np.isfinite(y))
    gx, gw = autodiff_gradients(
        layer, x, np.random.default_rng(0).normal(size=x.shape)
    )
    assert np.all(np.isfinite(gx))
    assert all(np.all(np.isfinite(g)) for g in gw)
    assert np.all(np.isfinite(_np(layer.moving_whitening)))


def test_dbn_gradient_is_finite_and_correct_at_repeated_eigenvalues():
    # Σ = c·I exactly: the textbook eigh backward divides by zero here.
    x = _spectrum_batch(np.full(4, 2.0), 32, seed=7)
    layer = DecorrelatedBatchNormalization(group_size=4, dtype="float64")
    check_gradients(layer, x)


@pytest.mark.parametrize("layer_cls", LAYERS)
@pytest.mark.parametrize("shape", [(12, 4), (3, 2, 2, 4)])
def test_gradients_match_finite_differences(layer_cls, shape):
    layer = layer_cls(group_size=2, dtype="float64")
    x = _batch(shape, seed=8).astype("float64")
    layer(x, training=False)
    layer.gamma.assign(np.linspace(0.5, 1.5, 4))
    layer.beta.assign(np.linspace(-0.3, 0.3, 4))
    check_gradients(layer, x)


@pytest.mark.parametrize("num_iterations", [5, 12, 20, 50, 80])
def test_iternorm_on_ill_conditioned_covariance(num_iterations):
    # κ(Σ) = 1e4. Measured relative errors of Φ against the exact Σ^{-1/2}:
    # the paper's iteration P <- 1.5P - 0.5P³Σ_N, even in float64, is off by
    # 9.3 at T=12 and NaN from T=20; the layer's coupled form (float32) is
    # at 0.13 at T=12 and at 3e-4 from T=20 on, the float32 floor for κ=1e4.
    eigenvalues = np.logspace(0, -4, 6) * 10
    x = _spectrum_batch(eigenvalues, 256, seed=9)
    _, _, sigma = oracles.group_covariances(x, 6, 1e-5)
    exact = oracles.zca(sigma)[0]
    layer = IterativeNormalization(
        group_size=6, num_iterations=num_iterations, momentum=0.0
    )
    y = _np(layer(x.astype("float32"), training=True))
    assert np.all(np.isfinite(y))
    phi = _np(layer.moving_whitening)[0]
    paper = oracles.iternorm_matrix(sigma, num_iterations)[0]

    def rel(a, b):
        return np.abs(a - b).max() / np.abs(b).max()

    if num_iterations == 5:  # where the paper's form is fine, we equal it
        assert rel(phi, paper) < 1e-5
    if num_iterations >= 20:
        assert rel(phi, exact) < 1e-3
        assert not np.all(np.isfinite(paper)) or rel(paper, exact) > 1.0


def test_mixed_precision_with_inputs_beyond_float16_range():
    x = 7e4 * (1 + _batch((32, 8), seed=10))
    for layer_cls in LAYERS:
        # momentum=0: the running statistics are the last batch's, so the
        # inference output is normalized too (after a single step with a
        # slow momentum it legitimately is not, in any precision).
        layer = layer_cls(group_size=4, momentum=0.0, dtype="mixed_float16")
        for training in (True, False):
            y = _np(layer(x, training=training))
            assert str(y.dtype) == "float16"
            assert np.all(np.isfinite(y)), (layer_cls.__name__, training)


@pytest.mark.parametrize("layer_cls", LAYERS)
@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"epsilon": -1e-5}, "epsilon=-1e-05"),
        ({"epsilon": 0.0}, "epsilon=0.0"),
        ({"momentum": 2.0}, "momentum=2.0"),
        ({"group_size": 0}, "group_size=0"),
        ({"axis": None}, "axis=None"),
    ],
)
def test_rejects_bad_arguments(layer_cls, kwargs, arg):
    with pytest.raises(ValueError, match=layer_cls.__name__) as info:
        layer_cls(**kwargs)
    assert arg in str(info.value)


def test_rejects_negative_iterations():
    with pytest.raises(ValueError, match=r"IterativeNormalization.*=-1"):
        IterativeNormalization(num_iterations=-1)


@pytest.mark.parametrize("layer_cls", LAYERS)
def test_rejects_an_input_without_channels(layer_cls):
    with pytest.raises(ValueError, match=r"rank >= 2"):
        layer_cls(group_size=4).build((8,))


@pytest.mark.parametrize("layer_cls", LAYERS)
@pytest.mark.parametrize("shape", [(32, 10), (4, 3, 3, 10)])
def test_a_smaller_last_group_is_whitened_on_its_own(layer_cls, shape):
    """10 channels in groups of 4: two groups of 4 and a last group of 2
    (the official DBN code's split), each whitened with its own Σ and its
    own running Φ; inference and the folded affine map agree."""
    layer = layer_cls(group_size=4, momentum=0.5)
    matrix_fn = _matrix_fn(layer_cls)
    run_mean = np.zeros(10)
    run_main = np.broadcast_to(np.eye(4), (2, 4, 4)).copy()
    run_last = np.eye(2)[None].copy()
    for step in range(3):
        x = _batch(shape, seed=step)
        main, mean_main, phi_main = oracles.whiten(
            x[..., :8], 4, 1e-5, matrix_fn
        )
        last, mean_last, phi_last = oracles.whiten(
            x[..., 8:], 2, 1e-5, matrix_fn
        )
        np.testing.assert_allclose(
            _np(layer(x, training=True)),
            np.concatenate([main, last], axis=-1),
            rtol=1e-5,
            atol=1e-5,
        )
        run_mean = 0.5 * run_mean + 0.5 * np.concatenate([mean_main, mean_last])
        run_main = 0.5 * run_main + 0.5 * phi_main
        run_last = 0.5 * run_last + 0.5 * phi_last
    assert layer.moving_whitening.shape == (2, 4, 4)
    assert layer.moving_whitening_last.shape == (1, 2, 2)
    np.testing.assert_allclose(_np(layer.moving_mean), run_mean, atol=1e-5)
    np.testing.assert_allclose(_np(layer.moving_whitening), run_main, atol=1e-5)
    np.testing.assert_allclose(
        _np(layer.moving_whitening_last), run_last, atol=1e-5
    )
    x = _batch(shape, seed=7)
    a, b = layer.inference_affine()
    np.testing.assert_allclose(
        _np(layer(x, training=False)), x @ a.T + b, rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("layer_cls", LAYERS)
@pytest.mark.parametrize("channels", [24, 71])
def test_few_and_many_groups_match_the_paper_and_finite_differences(
    layer_cls, channels
):
    """Groups of 2: 12 groups (each group's product on its own columns)
    and 35 groups plus a last group of 1 (one batched product over the
    groups); both match the paper's equations and finite differences."""
    layer = layer_cls(group_size=2, momentum=0.5)
    x = _batch((48, channels), seed=3)
    full = channels // 2 * 2
    expected, _, phi = oracles.whiten(
        x[:, :full], 2, 1e-5, _matrix_fn(layer_cls)
    )
    parts = [expected]
    if full < channels:
        parts.append(
            oracles.whiten(x[:, full:], 1, 1e-5, _matrix_fn(layer_cls))[0]
        )
    np.testing.assert_allclose(
        _np(layer(x, training=True)),
        np.concatenate(parts, axis=-1),
        rtol=1e-4,
        atol=1e-4,
    )
    np.testing.assert_allclose(
        _np(layer.moving_whitening),
        0.5 * np.eye(2) + 0.5 * phi,
        rtol=1e-5,
        atol=1e-5,
    )
    layer64 = layer_cls(group_size=2, dtype="float64")
    x64 = _batch((6, channels), seed=4).astype("float64")
    layer64(x64, training=False)
    layer64.gamma.assign(np.linspace(0.5, 1.5, channels))
    check_gradients(layer64, x64)


@pytest.mark.parametrize("layer_cls", LAYERS)
def test_harness_with_a_smaller_last_group(layer_cls, tmp_path):
    check_layer(
        layer_cls,
        {"group_size": 4},
        (16, 10),
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=3,
        tmp_path=tmp_path,
        run_fresh_process_check=True,
    )


# The warning is about TensorFlow's XLA; on JAX, jit_compile=False only
# makes Keras run the step op by op (20 s here) to show the same absence
# of a warning that the compiled step shows.
@pytest.mark.parametrize(
    "jit_compile",
    [True, False] if keras.backend.backend() == "tensorflow" else [True],
)
def test_warns_about_a_large_eigh_compiled_by_tensorflow_xla(jit_compile):
    import warnings

    def warnings_from(layer):
        model = keras.Sequential([keras.Input((128,)), layer])
        model.compile("sgd", "mse", jit_compile=jit_compile)
        data = np.random.default_rng(0).normal(size=(256, 128))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(data, data, verbose=0, batch_size=256)
        return [str(w.message) for w in caught if "Jacobi" in str(w.message)]

    warned = warnings_from(DecorrelatedBatchNormalization(group_size=128))
    expect = jit_compile and keras.backend.backend() == "tensorflow"
    assert len(warned) == int(expect)
    if expect:
        assert "DecorrelatedBatchNormalization" in warned[0]
        assert "IterativeNormalization" in warned[0]
    assert warnings_from(DecorrelatedBatchNormalization(group_size=64)) == []
    assert warnings_from(IterativeNormalization(group_size=128)) == []


@pytest.mark.parametrize(
    "cls", [DecorrelatedBatchNormalization, IterativeNormalization]
)
def test_a_batch_of_one_leaves_the_moving_statistics_unchanged(cls):
    rng = np.random.default_rng(11)
    layer = cls(group_size=4, momentum=0.5)
    layer(rng.normal(size=(32, 8)).astype("float32"), training=True)
    mean = keras.ops.convert_to_numpy(layer.moving_mean).copy()
    phi = keras.ops.convert_to_numpy(layer.moving_whitening).copy()
    out = layer(rng.normal(size=(1, 8)).astype("float32"), training=True)
    assert np.isfinite(keras.ops.convert_to_numpy(out)).all()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer.moving_mean), mean
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer.moving_whitening), phi
    )
    # Two samples do carry covariance: the statistics move.
    layer(rng.normal(size=(2, 8)).astype("float32"), training=True)
    assert not np.allclose(keras.ops.convert_to_numpy(layer.moving_mean), mean)


@pytest.mark.parametrize(
    "cls", [DecorrelatedBatchNormalization, IterativeNormalization]
)
def test_a_last_batch_of_one_in_fit_keeps_the_moving_whitening(cls):
    rng = np.random.default_rng(12)
    x = rng.normal(size=(65, 6)).astype("float32")
    y = rng.normal(size=(65, 8)).astype("float32")

    def build():
        keras.utils.set_random_seed(3)
        model = keras.Sequential(
            [keras.Input((6,)), keras.layers.Dense(8), cls(group_size=8)]
        )
        model.compile("sgd", "mse", jit_compile=True)
        return model

    full, trimmed = build(), build()
    # 65 samples in batches of 32: the last batch holds one sample. Without
    # it (64 samples) the moving statistics after one epoch must be the
    # same, up to the weight update that the one-sample batch still makes.
    full.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    trimmed.fit(
        x[:64], y[:64], batch_size=32, epochs=1, shuffle=False, verbose=0
    )
    layer_full, layer_trimmed = full.layers[-1], trimmed.layers[-1]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer_full.moving_whitening),
        keras.ops.convert_to_numpy(layer_trimmed.moving_whitening),
        rtol=1e-5,
        atol=1e-6,
    )
