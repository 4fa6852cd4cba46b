"""Batch Kalman Normalization with the official code's depth-wise prior:
`KalmanTransition` and `BatchKalmanNormalization(prior=..., return_state=)`.

The oracle is a float64 NumPy transcription of the official code
(github.com/wanggrun/Kalman-Normalization): `KalmanNorm` and
`kalman_filter` in `KalmanNorm/kalman_norm.py`, and `state_input` with the
weight-shared second `Conv2D` call in `KalmanNorm/cifar-kn-microbatch.py`,
for one micro-batch (split_num = 1).
"""

import json

import keras
import numpy as np
import pytest
from scipy.special import ndtr

from keraslayers import (
    BatchKalmanNormalization,
    KalmanTransition,
    fold_batch_normalization,
)

from .gradcheck import check_gradients
from .harness import check_config_round_trip

EPS = 1e-5
MOMENTUM = 0.9


def _np(x):
    return keras.ops.convert_to_numpy(x).astype(np.float64)


# -- NumPy transcription ------------------------------------------------------


def conv2d(x, w, b=None, strides=1, padding="same"):
    """NHWC / HWIO convolution with Keras's (TensorFlow's) padding rule."""
    x = np.asarray(x, np.float64)
    _, h, wd, _ = x.shape
    kh, kw, _, f = w.shape
    s = strides
    if padding == "same":
        oh, ow = -(-h // s), -(-wd // s)
        ph = max((oh - 1) * s + kh - h, 0)
        pw = max((ow - 1) * s + kw - wd, 0)
        x = np.pad(
            x,
            ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)),
        )
    else:
        oh, ow = (h - kh) // s + 1, (wd - kw) // s + 1
    out = np.zeros((x.shape[0], oh, ow, f))
    for i in range(kh):
        for j in range(kw):
            out += x[:, i : i + s * oh : s, j : j + s * ow : s, :] @ w[i, j]
    return out if b is None else out + b


def moments(a):
    axes = tuple(range(a.ndim - 1))
    return a.mean(axes), a.var(axes)


def relu_moments(m, v):
    """E and Var of relu(N(m, v)), from the normal CDF and density."""
    s = np.sqrt(v)
    t = m / s
    cdf, pdf = ndtr(t), np.exp(-0.5 * t * t) / np.sqrt(2 * np.pi)
    first = m * cdf + s * pdf
    second = (m * m + v) * cdf + m * s * pdf
    return first, second - first**2


def exact_prior(state, linear, input_shape):
    """The moments that the official sampling estimates: relu(N(m, v)) at
    every position of an input of `input_shape` (without the batch), pushed
    through `linear`, over the output positions."""
    rm, rv = relu_moments(*state)
    ones = np.ones((1, *input_shape))
    big_m = linear(ones * rm, bias=True, square=False)
    big_v = linear(ones * rv, bias=False, square=True)
    axes = tuple(range(big_m.ndim - 1))
    return big_m.mean(axes), big_v.mean(axes) + big_m.var(axes)


def sampled_prior(state, linear, noise):
    """The official code's `state_input` + shared-weight conv + moments."""
    m, v = state
    drawn = np.maximum(noise * np.sqrt(v) + m, 0.0)
    return moments(linear(drawn, bias=True, square=False))


def conv_linear(w, b, strides=1, padding="same"):
    def linear(x, bias, square):
        kernel = w * w if square else w
        return conv2d(x, kernel, b if bias else None, strides, padding)

    return linear


def kalman_filter(z, prior, p, gate_ratio=100.0):
    """`kalman_filter` of kalman_norm.py: the statistics it normalizes with,
    and the gate's ratio."""
    mu_b, var_b = moments(z)
    pm, pv = prior
    ratio = np.mean(pv / var_b)
    if p > 0 and ratio < gate_ratio:
        mu = p * pm + (1 - p) * mu_b
        var = p * pv + (1 - p) * var_b + p * (1 - p) * (mu_b - pm) ** 2
        return mu, var, ratio
    return mu_b, var_b, ratio


class OfficialTwoLayer:
    """conv1 → KalmanNorm without prior (batch statistics) → relu → conv2 →
    KalmanNorm with the prior propagated through conv2, as in
    cifar-kn-microbatch.py's `build_graph` (kn0, then a residual block's
    conv1 and kn1). The first layer's variance is the biased one (the
    official `fused_batch_norm` hands on n/(n-1) times it; see the layer's
    docstring)."""

    def __init__(self, model, p):
        get = model.get_layer
        self.w1 = _np(get("conv1").kernel)
        self.w2 = _np(get("transition").layer.kernel)
        self.b2 = _np(get("transition").layer.bias)
        self.g1, self.beta1 = _np(get("bkn1").gamma), _np(get("bkn1").beta)
        self.g2, self.beta2 = _np(get("bkn2").gamma), _np(get("bkn2").beta)
        self.moving1 = [
            _np(get("bkn1").moving_mean),
            _np(get("bkn1").moving_variance),
        ]
        self.moving2 = [
            _np(get("bkn2").moving_mean),
            _np(get("bkn2").moving_variance),
        ]
        self.p = p
        self.linear2 = conv_linear(self.w2, self.b2)

    @staticmethod
    def _ema(moving, stats):
        return [
            MOMENTUM * a + (1 - MOMENTUM) * b
            for a, b in zip(moving, stats, strict=True)
        ]

    def train_step(self, x, noise=None):
        z1 = conv2d(x, self.w1)
        mu1, var1 = moments(z1)  # kn0: no prior
        self.moving1 = self._ema(self.moving1, (mu1, var1))
        h1 = np.maximum(
            self.g1 * (z1 - mu1) / np.sqrt(var1 + EPS) + self.beta1, 0.0
        )
        state1 = (mu1, var1)
        if noise is None:
            prior = exact_prior(state1, self.linear2, h1.shape[1:])
        else:
            prior = sampled_prior(state1, self.linear2, noise)
        z2 = self.linear2(h1, bias=True, square=False)
        mu, var, ratio = kalman_filter(z2, prior, self.p)
        self.moving2 = self._ema(self.moving2, (mu, var))
        y2 = self.g2 * (z2 - mu) / np.sqrt(var + EPS) + self.beta2
        return y2, np.stack([mu, var]), ratio, z2

    def infer(self, x):
        m1, v1 = self.moving1
        m2, v2 = self.moving2
        z1 = conv2d(x, self.w1)
        h1 = np.maximum(self.g1 * (z1 - m1) / np.sqrt(v1 + EPS) + self.beta1, 0)
        z2 = self.linear2(h1, bias=True, square=False)
        return self.g2 * (z2 - m2) / np.sqrt(v2 + EPS) + self.beta2


# -- Keras model --------------------------------------------------------------


def two_layer_model(
    propagation="moments", p=0.9, shape=(6, 6, 3), seed=7, dtype=None
):
    inputs = keras.Input(shape, dtype="float64" if dtype == "float64" else None)
    z = keras.layers.Conv2D(
        4, 3, padding="same", use_bias=False, name="conv1", dtype=dtype
    )(inputs)
    h, state = BatchKalmanNormalization(
        prior_weight=0.0, return_state=True, name="bkn1", dtype=dtype
    )(z)
    h = keras.layers.ReLU(dtype=dtype)(h)
    transition = KalmanTransition(
        keras.layers.Conv2D(5, 3, padding="same", dtype=dtype),
        propagation=propagation,
        seed=seed,
        name="transition",
        dtype=dtype,
    )
    z, prior = transition(h, state)
    y, state = BatchKalmanNormalization(
        prior_weight=p, return_state=True, name="bkn2", dtype=dtype
    )(z, prior=prior)
    return keras.Model(inputs, [y, state])


def _randomize_affine(model, seed=0):
    rng = np.random.default_rng(seed)
    for name in ("bkn1", "bkn2"):
        layer = model.get_layer(name)
        c = layer.gamma.shape[0]
        layer.gamma.assign(rng.uniform(0.5, 1.5, c))
        layer.beta.assign(rng.normal(0.0, 0.3, c))
    bias = model.get_layer("transition").layer.bias
    bias.assign(rng.normal(0.0, 0.2, bias.shape[0]))


def _noise_draws(shape, seed, steps, dtype="float32"):
    """The draws the transition's `SeedGenerator(seed)` makes, in order."""
    generator = keras.random.SeedGenerator(seed)
    return [
        _np(keras.random.normal(shape, dtype=dtype, seed=generator))
        for _ in range(steps)
    ]


# The oracle and the gradient checks share one float64 two-layer network
# (and, on JAX, the compiled eager operations for its shapes).
SHAPE = (4, 4, 2)


def float64_two_layer_model(propagation):
    keras.config.set_dtype_policy("float64")  # the model's own policy
    try:
        model = two_layer_model(propagation, shape=SHAPE, dtype="float64")
        return model, keras.Model(model.inputs[0], model.outputs[0])
    finally:
        keras.config.set_dtype_policy("float32")


# -- the official update on a two-layer network -------------------------------


@pytest.mark.parametrize("propagation", ["moments", "sampling"])
@pytest.mark.parametrize(
    "scale, gate_passes",
    # Inputs of scale 1: the propagated variance is close to the batch's
    # and the gate passes. Scale 30: the first layer's (unnormalized)
    # statistics are ~900 times larger than the normalized activations
    # conv2 actually sees, so mean(σ̂²/σ_B²) > 100 and the gate falls back
    # to the batch statistics.
    [(1.0, True), (30.0, False)],
)
def test_two_layer_network_matches_the_official_update(
    propagation, scale, gate_passes
):
    model, _ = float64_two_layer_model(propagation)
    _randomize_affine(model)
    oracle = OfficialTwoLayer(model, p=0.9)
    rng = np.random.default_rng(1)
    steps = 3
    noises = _noise_draws((1, *SHAPE[:2], 4), 7, steps, "float64")
    tol = {"rtol": 1e-9, "atol": 1e-12}
    for step in range(steps):
        x = scale * rng.normal(size=(2, *SHAPE)) + 0.5
        y, state = model(keras.ops.convert_to_tensor(x), training=True)
        noise = noises[step] if propagation == "sampling" else None
        want_y, want_state, ratio, z2 = oracle.train_step(x, noise)
        assert (ratio < 100) == gate_passes, ratio
        np.testing.assert_allclose(_np(y), want_y, **tol)
        np.testing.assert_allclose(_np(state), want_state, **tol)
        for name, moving in (
            ("bkn1", oracle.moving1),
            ("bkn2", oracle.moving2),
        ):
            layer = model.get_layer(name)
            np.testing.assert_allclose(_np(layer.moving_mean), moving[0], **tol)
            np.testing.assert_allclose(
                _np(layer.moving_variance), moving[1], **tol
            )
        # The prior matters when the gate passes: the output is not BN's.
        mu_b, var_b = moments(z2)
        bn = oracle.g2 * (z2 - mu_b) / np.sqrt(var_b + EPS) + oracle.beta2
        assert (np.max(np.abs(want_y - bn)) > 0.05) == gate_passes
    x = rng.normal(size=(3, *SHAPE))
    y, state = model(keras.ops.convert_to_tensor(x), training=False)
    np.testing.assert_allclose(_np(y), oracle.infer(x), **tol)
    bkn2 = model.get_layer("bkn2")
    np.testing.assert_array_equal(
        _np(state), [_np(bkn2.moving_mean), _np(bkn2.moving_variance)]
    )


def test_a_given_prior_without_transition_is_combined_as_in_the_code():
    # The official residual stream: KalmanNorm(l, m, v) with the summed
    # states as the prior, no transition. Both branches of the gate.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 3, 4)) * 2.0 + 1.0
    mu_b, var_b = moments(x)
    for prior_var, passes in ((var_b * 3.0, True), (var_b * 150.0, False)):
        prior = np.stack([mu_b + rng.normal(size=4), prior_var])
        layer = BatchKalmanNormalization(return_state=True, dtype="float64")
        y, state = layer(x, training=True, prior=prior)
        mu, var, ratio = kalman_filter(x, prior, 0.9)
        assert (ratio < 100) == passes
        np.testing.assert_allclose(_np(state), np.stack([mu, var]), rtol=1e-12)
        np.testing.assert_allclose(
            _np(y), (x - mu) / np.sqrt(var + EPS), rtol=1e-10, atol=1e-12
        )
        # In inference the prior is ignored: the moving averages are used.
        y_inf = layer(x, training=False, prior=prior * 0 + 5.0)[0]
        m, v = _np(layer.moving_mean), _np(layer.moving_variance)
        np.testing.assert_allclose(
            _np(y_inf), (x - m) / np.sqrt(v + EPS), rtol=1e-10, atol=1e-12
        )


# -- the transition against the sampling it replaces -------------------------


LINEARS = {
    "conv_same": (keras.layers.Conv2D, (5, 3), {"padding": "same"}, (7, 7, 3)),
    "conv_valid_stride2": (
        keras.layers.Conv2D,
        (4, 3),
        {"padding": "valid", "strides": 2},
        (9, 9, 3),
    ),
    "conv1d_same": (keras.layers.Conv1D, (4, 3), {"padding": "same"}, (8, 3)),
    "dense": (keras.layers.Dense, (4,), {}, (3,)),
    "dense_sequence": (keras.layers.Dense, (4,), {}, (5, 3)),
}


def _numpy_linear(layer):
    w, b = _np(layer.kernel), _np(layer.bias)
    if isinstance(layer, keras.layers.Dense):

        def linear(x, bias, square):
            y = x @ (w * w if square else w)
            return y + b if bias else y

        return linear
    config = layer.get_config()
    strides, padding = config["strides"][0], config["padding"]
    if isinstance(layer, keras.layers.Conv1D):
        conv = conv_linear(w[None], b, strides, padding)

        def linear(x, bias, square):
            return conv(x[:, None], bias, square)[:, 0]

        return linear
    return conv_linear(w, b, strides, padding)


def _built_transition(case, propagation="moments", samples=1):
    cls, args, kwargs, shape = LINEARS[case]
    layer = cls(*args, bias_initializer="random_normal", **kwargs)
    transition = KalmanTransition(
        layer, propagation=propagation, samples=samples, seed=3
    )
    transition.build((None, *shape))
    return transition, shape


STATE = np.array([[0.4, -0.3, 1.0], [1.3, 0.6, 2.0]])


@pytest.mark.parametrize("case", sorted(LINEARS))
def test_moments_propagation_matches_its_formula(case):
    transition, shape = _built_transition(case)
    h = np.random.default_rng(3).normal(size=(2, *shape)).astype("float32")
    z, prior = transition(h, STATE.astype("float32"))
    np.testing.assert_allclose(
        _np(z), _np(transition.layer(h)), rtol=1e-6, atol=1e-6
    )
    want = exact_prior(STATE, _numpy_linear(transition.layer), shape)
    np.testing.assert_allclose(_np(prior), np.stack(want), rtol=2e-5)


@pytest.mark.parametrize("case", ["conv_same", "conv_valid_stride2", "dense"])
def test_exact_moments_are_the_limit_of_the_official_sampling(case):
    # The official estimate, in NumPy, from many independent draws: the
    # moments pooled over the draws and the output positions. Each draw's
    # own mean and mean square are i.i.d., so their spread gives the
    # standard errors; the exact moments must lie within 5 of them.
    transition, shape = _built_transition(case)
    linear = _numpy_linear(transition.layer)
    rng = np.random.default_rng(4)
    draws = 2000 if len(shape) > 1 else 100_000
    noise = rng.normal(size=(draws, *shape))
    y = linear(
        np.maximum(noise * np.sqrt(STATE[1]) + STATE[0], 0.0), True, False
    )
    per_draw = y.reshape(draws, -1, y.shape[-1])
    draw_means = per_draw.mean(1)
    mean = draw_means.mean(0)
    draw_squares = ((per_draw - mean) ** 2).mean(1)
    var = draw_squares.mean(0)
    se_mean = draw_means.std(0) / np.sqrt(draws)
    se_var = draw_squares.std(0) / np.sqrt(draws)
    want_mean, want_var = exact_prior(STATE, linear, shape)
    assert np.all(np.abs(mean - want_mean) < 5 * se_mean + 1e-12)
    assert np.all(np.abs(var - want_var) < 5 * se_var)
    # Sanity: the tolerance is tight (about 1% of the variance). The
    # layer computes `exact_prior` (test_moments_propagation_matches_...).
    assert np.all(se_var < 0.01 * want_var)


def test_sampling_uses_fresh_seeded_draws_and_the_given_count():
    transition, shape = _built_transition("conv_same", "sampling", samples=3)
    h = np.zeros((1, *shape), "float32")
    noises = _noise_draws((3, *shape), 3, 2)
    linear = _numpy_linear(transition.layer)
    for noise in noises:
        _, prior = transition(h, STATE)
        want = sampled_prior(STATE, linear, noise)
        np.testing.assert_allclose(_np(prior), np.stack(want), rtol=2e-5)
    assert not np.allclose(noises[0], noises[1])


# -- gradients ----------------------------------------------------------------


def chain_model(shape=(6, 6, 3), dtype=None):
    """conv → BKN (no prior) → relu → transition by moments → BKN →
    relu → transition by sampling → BKN: both propagations in one model.
    Returns the model (outputs: the last BKN's output and state) and the
    transitions' outputs and priors."""
    inputs = keras.Input(shape, dtype="float64" if dtype == "float64" else None)
    z = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, dtype=dtype)(
        inputs
    )
    h, state = BatchKalmanNormalization(
        prior_weight=0.0, return_state=True, dtype=dtype
    )(z)
    probes = []
    for i, propagation in enumerate(["moments", "sampling"]):
        h = keras.layers.ReLU(dtype=dtype)(h)
        conv = keras.layers.Conv2D(
            5 + i, 3, padding="same", use_bias=False, dtype=dtype
        )
        z, prior = KalmanTransition(
            conv, propagation=propagation, seed=i, dtype=dtype
        )(h, state)
        h, state = BatchKalmanNormalization(return_state=True, dtype=dtype)(
            z, prior=prior
        )
        probes += [z, prior]
    return keras.Model(inputs, [h, state]), probes


# -- gradients ----------------------------------------------------------------


@pytest.mark.parametrize("propagation", ["moments", "sampling"])
def test_gradients_flow_through_the_prior_and_match_finite_differences(
    propagation,
):
    full, model = float64_two_layer_model(propagation)
    _randomize_affine(full, seed=5)
    x = np.random.default_rng(6).normal(size=(2, *SHAPE)) + 0.3
    # The gate passes (so the prior and its gradient are in play), with
    # each of the generator's first draws (check_gradients's build call in
    # inference draws too, before the differentiated step).
    oracle = OfficialTwoLayer(full, p=0.9)
    for noise in _noise_draws((1, *SHAPE[:2], 4), 7, 3, "float64"):
        use = noise if propagation == "sampling" else None
        assert oracle.train_step(x, use)[2] < 100
    check_gradients(model, x)


# -- the harness's checks, on a functional model -------------------------------


def _fit(model, x, y, steps=2):
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.05),
        loss="mse",
        jit_compile=True,
    )
    history = model.fit(x, y, batch_size=2, epochs=steps, verbose=0)
    return history.history["loss"]


def test_serializes_compiles_and_runs_in_mixed_precision(tmp_path):
    full, _ = chain_model()
    for layer in full.layers:
        if isinstance(layer, (BatchKalmanNormalization, KalmanTransition)):
            check_config_round_trip(layer)
    y_spec, state_spec = full.outputs
    assert tuple(state_spec.shape) == (2, 6)
    assert keras.backend.standardize_dtype(state_spec.dtype) == "float32"
    json.dumps(full.get_config())

    # A compiled (XLA / jax.jit) fit moves every weight and statistic.
    model = keras.Model(full.inputs[0], y_spec)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4, 6, 6, 3)).astype("float32")
    y = rng.normal(size=(4, 6, 6, 6)).astype("float32")
    before = [_np(w) for w in model.weights]
    losses = _fit(model, x, y)
    assert np.all(np.isfinite(losses))
    after = [_np(w) for w in model.weights]
    assert all(
        not np.array_equal(b, a) for b, a in zip(before, after, strict=True)
    )

    # .keras save / load: same weights and the same inference outputs.
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        _np(loaded(x, training=False)), _np(model(x, training=False))
    )
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(_np(a), _np(b))

    # mixed_float16: float16 outputs; the statistics and the weights stay
    # float32 (variances of ~1e7 here, beyond float16's range).
    keras.config.set_dtype_policy("mixed_float16")
    mixed, _ = chain_model()
    keras.config.set_dtype_policy("float32")
    out, state = mixed(x * 3e3, training=True)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert keras.backend.standardize_dtype(state.dtype) == "float32"
    assert np.all(np.isfinite(_np(out))) and np.all(np.isfinite(_np(state)))
    first = mixed.layers[2]
    assert _np(first.moving_variance).max() > 7e4
    for w in mixed.weights:
        dtype = keras.backend.standardize_dtype(w.dtype)
        assert dtype in ("float32", "int64", "uint32", "int32"), (w.path, dtype)
    mixed_model = keras.Model(mixed.inputs[0], mixed.outputs[0])
    assert np.all(np.isfinite(_fit(mixed_model, x, y, steps=1)))


def test_folding_leaves_a_layer_that_hands_its_statistics_on():
    full = two_layer_model()
    model = keras.Model(full.inputs[0], full.outputs[0])
    x = np.random.default_rng(8).normal(size=(4, 6, 6, 3)).astype("float32")
    model(x, training=True)
    folded = fold_batch_normalization(model)
    np.testing.assert_allclose(
        _np(folded(x)), _np(model(x, training=False)), rtol=1e-5, atol=1e-5
    )


# -- the running-estimate form is unchanged -----------------------------------


def test_return_state_keeps_the_output_of_a_config_saved_without_it():
    config = BatchKalmanNormalization(prior_weight=0.5).get_config()
    assert config["return_state"] is False
    del config["return_state"]  # a config saved before the argument
    old = BatchKalmanNormalization.from_config(config)
    new = BatchKalmanNormalization(prior_weight=0.5, return_state=True)
    new.build((2, 3, 3, 4))
    rng = np.random.default_rng(9)
    for _ in range(3):
        x = (rng.normal(size=(2, 3, 3, 4)) * 2 + 1).astype("float32")
        moving = _np(new.moving_mean), _np(new.moving_variance)
        y_new, state = new(x, training=True)
        np.testing.assert_array_equal(_np(y_new), _np(old(x, training=True)))
        # The state is what the moving averages were updated with.
        for m, stat, row in zip(
            moving,
            (new.moving_mean, new.moving_variance),
            _np(state),
            strict=True,
        ):
            np.testing.assert_allclose(
                _np(stat), MOMENTUM * m + (1 - MOMENTUM) * row, rtol=1e-6
            )
    assert callable(old.inference_affine) and new.inference_affine is None


# -- bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: KalmanTransition(keras.layers.BatchNormalization()),
            "KalmanTransition.*layer=<BatchNormalization",
        ),
        (
            lambda: KalmanTransition(keras.layers.Dense(3, activation="relu")),
            "KalmanTransition.*layer.activation=relu",
        ),
        (
            lambda: KalmanTransition(
                keras.layers.Conv1D(3, 2, padding="causal")
            ),
            "KalmanTransition.*layer.padding='causal'",
        ),
        (
            lambda: KalmanTransition(
                keras.layers.Dense(3), propagation="sample"
            ),
            "KalmanTransition.*propagation='sample'",
        ),
        (
            lambda: KalmanTransition(keras.layers.Dense(3), samples=0),
            "KalmanTransition.*samples=0",
        ),
        (
            lambda: KalmanTransition(keras.layers.Dense(3), seed=-1),
            "KalmanTransition.*seed=-1",
        ),
        (
            lambda: KalmanTransition(
                keras.layers.Dense(3), propagation="sampling"
            ).build((None, 4)),
            "KalmanTransition.*samples=1",
        ),
        (
            lambda: BatchKalmanNormalization(return_state="yes"),
            "BatchKalmanNormalization.*return_state='yes'",
        ),
    ],
)
def test_rejects_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_rejects_statistics_of_the_wrong_shape():
    inputs = keras.Input((6, 6, 3))
    state = keras.Input((4,), batch_size=2)  # (2, 4): 4 channels, not 3
    transition = KalmanTransition(keras.layers.Conv2D(5, 3))
    with pytest.raises(
        ValueError, match=r"KalmanTransition.*state.shape=\(2, 4\)"
    ):
        transition(inputs, state)
    z = keras.Input((6, 6, 5))
    with pytest.raises(
        ValueError, match=r"BatchKalmanNormalization.*prior.shape=\(2, 4\)"
    ):
        BatchKalmanNormalization()(z, prior=state)
    x = np.zeros((2, 6, 6, 5), "float32")
    with pytest.raises(ValueError, match=r"prior.shape=\(3, 5\)"):
        BatchKalmanNormalization()(x, training=True, prior=np.ones((3, 5)))


def test_docstrings_say_which_form_is_the_official_codes():
    doc = BatchKalmanNormalization.__doc__
    assert "Depth-wise prior (the official code's)" in doc
    assert "this project's simplification" in doc
    assert "Relation to the official code" in KalmanTransition.__doc__
