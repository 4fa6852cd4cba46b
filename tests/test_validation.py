"""Arguments and inputs a user can get wrong, across the layer families:
a clear ValueError at construction, or Keras's own behaviour."""

import keras
import numpy as np
import pytest

import keraslayers as kl

ACTIVATION_LAYERS = [
    lambda **kw: kl.BatchRenormalization(**kw),
    lambda **kw: kl.BatchKalmanNormalization(**kw),
    lambda **kw: kl.DecorrelatedBatchNormalization(group_size=2, **kw),
    lambda **kw: kl.IterativeNormalization(group_size=2, **kw),
    lambda **kw: kl.FilterResponseNormalization(**kw),
]
NAMES = ["BRN", "BKN", "DBN", "IterNorm", "FRN"]


@pytest.mark.backend_independent
@pytest.mark.parametrize("make", ACTIVATION_LAYERS, ids=NAMES)
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_epsilon_is_refused(make, value):
    with pytest.raises(ValueError, match=r"epsilon=(inf|-inf|nan)"):
        make(epsilon=value)


@pytest.mark.backend_independent
@pytest.mark.parametrize("make", ACTIVATION_LAYERS[:4], ids=NAMES[:4])
@pytest.mark.parametrize("value", [0.0, 0, -1e-3])
def test_a_non_positive_epsilon_is_refused(make, value):
    # One rule for every ε added to a batch variance: > 0, so a constant
    # channel divides by √ε rather than 0 (FRN alone takes 0, with a
    # learned ε).
    name = type(make()).__name__
    with pytest.raises(ValueError) as info:
        make(epsilon=value)
    message = str(info.value)
    assert message.startswith(f"{name}: `epsilon` must be > 0"), message
    assert message.endswith(f"Received: epsilon={value!r}"), message


@pytest.mark.parametrize(
    "make",
    [
        lambda: kl.WeightNormDense(3, epsilon=float("inf")),
        lambda: kl.CenteredWeightNormDense(3, epsilon=float("nan")),
        lambda: kl.OrthogonalDense(3, epsilon=float("inf")),
        lambda: kl.WeightStandardizedDense(3, epsilon=float("inf")),
        lambda: kl.BatchRenormalization(momentum=float("nan")),
    ],
)
@pytest.mark.backend_independent
def test_non_finite_hyperparameters_of_other_layers_are_refused(make):
    with pytest.raises(ValueError, match=r"Received: \w+=(inf|nan)"):
        make()


def test_an_infinite_renorm_clip_means_no_clipping():
    layer = kl.BatchRenormalization(r_max=float("inf"), d_max=float("inf"))
    assert layer.r_max == float("inf")


@pytest.mark.backend_independent
@pytest.mark.parametrize("make", ACTIVATION_LAYERS[:4], ids=NAMES[:4])
@pytest.mark.parametrize("flag", ["center", "scale", "synchronized"])
def test_a_string_flag_is_refused(make, flag):
    with pytest.raises(ValueError, match=rf"{flag}='False'"):
        make(**{flag: "False"})


@pytest.mark.parametrize(
    "make, flag",
    [
        (lambda v: kl.WeightNormDense(3, data_init=v), "data_init"),
        (lambda v: kl.WeightNormDense(3, use_bias=v), "use_bias"),
        (lambda v: kl.WeightStandardizedDense(3, scaled=v), "scaled"),
        (
            lambda v: kl.FilterResponseNormalization(learned_epsilon=v),
            "learned_epsilon",
        ),
    ],
)
@pytest.mark.backend_independent
def test_string_flags_of_other_layers_are_refused(make, flag):
    with pytest.raises(ValueError, match=rf"{flag}='no'"):
        make("no")


@pytest.mark.backend_independent
def test_data_init_without_a_bias_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"WeightNormDense.*use_bias=False"):
        kl.WeightNormDense(3, data_init=True, use_bias=False)


def test_data_init_waits_for_a_batch_with_more_than_one_row():
    rng = np.random.default_rng(0)
    layer = kl.WeightNormDense(4, data_init=True)
    layer.build((None, 3))
    with pytest.warns(UserWarning, match=r"WeightNormDense.*one row"):
        layer(rng.normal(size=(1, 3)).astype("float32"), training=True)
    g = keras.ops.convert_to_numpy(layer.effective_g)
    assert np.abs(g).max() < 10, g  # not the 1/sqrt(1e-6) of a zero variance
    x = rng.normal(size=(64, 3)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    # The first batch with rows to measure initializes: unit pre-activations.
    pre = x @ keras.ops.convert_to_numpy(layer.kernel) + (
        keras.ops.convert_to_numpy(layer.effective_bias)
    )
    np.testing.assert_allclose(pre.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(pre.std(0), 1, atol=1e-3)
    assert y.shape == (64, 4)


@pytest.mark.parametrize("make", ACTIVATION_LAYERS, ids=NAMES)
def test_integer_inputs_are_cast_like_keras_batch_normalization(make):
    x = np.random.default_rng(1).integers(0, 255, size=(16, 4)).astype("uint8")
    model_int = keras.Sequential([keras.Input((4,), dtype="uint8"), make()])
    model_float = keras.Sequential([keras.Input((4,)), make()])
    model_float.set_weights(model_int.get_weights())
    keras_bn = keras.Sequential(
        [keras.Input((4,), dtype="uint8"), keras.layers.BatchNormalization()]
    )
    keras_bn(x, training=True)  # the behaviour we follow: no error
    out_int = keras.ops.convert_to_numpy(model_int(x, training=True))
    out_float = keras.ops.convert_to_numpy(
        model_float(x.astype("float32"), training=True)
    )
    assert out_int.dtype == np.float32
    np.testing.assert_allclose(out_int, out_float, rtol=1e-5, atol=1e-5)
    model_int.compile("sgd", "mse", jit_compile=True)
    model_int.fit(x, np.zeros((16, 4), "float32"), epochs=1, verbose=0)
