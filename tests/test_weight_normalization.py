"""WeightNorm and CenteredWeightNorm, Dense and Conv2D."""

import keras
import numpy as np
import pytest

from keraslayers import (
    CenteredWeightNormConv2D,
    CenteredWeightNormDense,
    WeightNormConv2D,
    WeightNormDense,
    WeightStandardizedDense,
)

from .gradcheck import check_gradients
from .harness import check_layer, train_briefly

DENSE = ({"units": 6}, (8, 5), (8, 6))
CONV = ({"filters": 6, "kernel_size": 3}, (4, 6, 6, 3), (4, 4, 4, 6))


def _rows(layer):
    """The effective kernel as (units, fan_in) float64 rows."""
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    return kernel.reshape(-1, kernel.shape[-1]).T


@pytest.mark.parametrize(
    "cls, base",
    [
        (WeightNormDense, DENSE),
        (WeightNormConv2D, CONV),
    ],
)
@pytest.mark.parametrize(
    "extra, non_trainable", [({}, 0), ({"data_init": True}, 3)]
)
def test_weight_norm_harness(cls, base, extra, non_trainable, tmp_path):
    kwargs, shape, out = base
    check_layer(
        cls,
        {**kwargs, **extra},
        shape,
        expected_output_shape=out,
        expected_num_trainable_weights=3,
        expected_num_non_trainable_weights=non_trainable,
        tmp_path=tmp_path,
        run_fresh_process_check=True,
    )


@pytest.mark.parametrize(
    "cls, base",
    [
        (CenteredWeightNormDense, DENSE),
        (CenteredWeightNormConv2D, CONV),
    ],
)
@pytest.mark.parametrize(
    "extra, trainable", [({}, 2), ({"learnable_scale": True}, 3)]
)
def test_centered_harness(cls, base, extra, trainable, tmp_path):
    kwargs, shape, out = base
    check_layer(
        cls,
        {**kwargs, **extra},
        shape,
        expected_output_shape=out,
        expected_num_trainable_weights=trainable,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
        run_fresh_process_check=True,
    )


@pytest.mark.parametrize(
    "cls, base",
    [
        (WeightNormDense, DENSE),
        (WeightNormConv2D, CONV),
    ],
)
def test_weight_norm_row_norms_equal_g_after_training(cls, base):
    kwargs, shape, _ = base
    layer = cls(**kwargs)
    train_briefly(layer, shape)
    g = keras.ops.convert_to_numpy(layer.g)
    assert np.abs(g - 1).max() > 1e-3  # g moved
    np.testing.assert_allclose(
        np.linalg.norm(_rows(layer), axis=1), g, rtol=1e-6
    )


def test_weight_norm_starts_as_the_plain_layer():
    layer = WeightNormDense(4, kernel_initializer="glorot_uniform")
    layer.build((None, 3))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer.kernel),
        keras.ops.convert_to_numpy(layer._kernel),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "cls, base",
    [
        (WeightNormDense, DENSE),
        (WeightNormConv2D, CONV),
    ],
)
def test_data_dependent_init_standardizes_first_batch(cls, base):
    kwargs, shape, _ = base
    layer = cls(**kwargs, data_init=True)
    x = np.random.default_rng(0).normal(size=shape).astype("float32") * 3 + 1
    y = keras.ops.convert_to_numpy(layer(x, training=True)).astype(np.float64)
    flat = y.reshape(-1, y.shape[-1])
    np.testing.assert_allclose(flat.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(flat.std(0), 1, rtol=1e-3)
    # Only the first batch initializes.
    g_eff = keras.ops.convert_to_numpy(layer.effective_g).copy()
    layer(x * 5, training=True)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer.effective_g), g_eff
    )


@pytest.mark.parametrize(
    "cls, base",
    [
        (WeightNormDense, DENSE),
        (WeightNormConv2D, CONV),
    ],
)
def test_init_scale_sets_the_first_batch_std(cls, base):
    """The official code's init_scale: pre-activations start with mean 0
    and standard deviation init_scale; the config keeps it."""
    kwargs, shape, _ = base
    layer = cls(**kwargs, data_init=True, init_scale=0.1)
    x = np.random.default_rng(0).normal(size=shape).astype("float32") * 3 + 1
    y = keras.ops.convert_to_numpy(layer(x, training=True)).astype(np.float64)
    flat = y.reshape(-1, y.shape[-1])
    np.testing.assert_allclose(flat.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(flat.std(0), 0.1, rtol=1e-3)
    assert cls.from_config(layer.get_config()).init_scale == 0.1


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_a_non_positive_init_scale_is_refused(value):
    with pytest.raises(ValueError, match=r"WeightNormDense.*init_scale="):
        WeightNormDense(3, data_init=True, init_scale=value)


def test_data_dependent_init_inside_compiled_fit():
    # The JAX trainer drops updates to trainable weights made in the forward
    # pass; the offsets are non-trainable, so this works on every backend.
    layer = WeightNormDense(4, data_init=True)
    model = keras.Sequential([keras.Input((3,)), layer])
    model.compile(keras.optimizers.SGD(0.0), "mse", jit_compile=True)
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(64, 3)) * 4 + 2).astype("float32")
    model.fit(x, np.zeros((64, 4)), batch_size=64, epochs=1, verbose=0)
    y = keras.ops.convert_to_numpy(model(x)).astype(np.float64)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(y.std(0), 1, rtol=1e-3)


@pytest.mark.parametrize(
    "cls, base",
    [
        (CenteredWeightNormDense, DENSE),
        (CenteredWeightNormConv2D, CONV),
    ],
)
@pytest.mark.parametrize("learnable_scale", [False, True])
def test_centered_rows_zero_mean_and_norm_scale_after_training(
    cls, base, learnable_scale
):
    kwargs, shape, _ = base
    layer = cls(**kwargs, learnable_scale=learnable_scale)
    train_briefly(layer, shape)
    rows = _rows(layer)
    scale = (
        keras.ops.convert_to_numpy(layer.scale_weight)
        if learnable_scale
        else np.full(rows.shape[0], 1.414)
    )
    if learnable_scale:
        assert np.abs(scale - 1.414).max() > 1e-3
    np.testing.assert_allclose(rows.mean(1), 0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), scale, rtol=1e-6)


def test_centered_is_invariant_to_adding_a_constant_per_row():
    layer = CenteredWeightNormDense(3)
    layer.build((None, 5))
    before = _rows(layer)
    layer._kernel.assign(layer._kernel + np.array([1.0, -2.0, 3.0]))
    np.testing.assert_allclose(_rows(layer), before, atol=1e-6)


@pytest.mark.parametrize(
    "cls, kwargs, shape",
    [
        (WeightNormDense, {"units": 3}, (4, 5)),
        (WeightNormConv2D, {"filters": 3, "kernel_size": 2}, (2, 4, 4, 2)),
        (
            CenteredWeightNormDense,
            {"units": 3, "learnable_scale": True},
            (4, 5),
        ),
        (
            CenteredWeightNormConv2D,
            {"filters": 3, "kernel_size": 2},
            (2, 4, 4, 2),
        ),
    ],
)
def test_gradients_match_finite_differences(cls, kwargs, shape):
    layer = cls(**kwargs, dtype="float64")
    x = np.random.default_rng(2).normal(size=shape)
    check_gradients(layer, x)


@pytest.mark.parametrize("cls", [WeightNormDense, CenteredWeightNormDense])
def test_zero_and_constant_rows_stay_finite(cls):
    layer = cls(3, dtype="float32")
    layer.build((None, 4))
    kernel = np.random.default_rng(3).normal(size=(4, 3)).astype("float32")
    kernel[:, 0] = 0.0  # a zero row of W
    kernel[:, 1] = 2.5  # a constant row (zero after centering)
    layer._kernel.assign(kernel)
    x = np.random.default_rng(4).normal(size=(5, 4)).astype("float32")
    from .gradcheck import autodiff_gradients

    y = keras.ops.convert_to_numpy(layer(x))
    gx, gw = autodiff_gradients(layer, x, np.ones((5, 3)))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(gx))
    assert all(np.all(np.isfinite(g)) for g in gw)


@pytest.mark.parametrize(
    "cls, kwargs, arg",
    [
        (WeightNormDense, {"units": 3, "epsilon": 0.0}, "epsilon=0.0"),
        (WeightNormDense, {"units": 0}, "units=0"),
        (
            CenteredWeightNormDense,
            {"units": 3, "epsilon": -1.0},
            "epsilon=-1.0",
        ),
        (CenteredWeightNormDense, {"units": 3, "scale": 0}, "scale=0"),
        (
            WeightNormConv2D,
            {"filters": 3, "kernel_size": 0},
            "kernel_size=(0, 0)",
        ),
        (
            WeightNormConv2D,
            {"filters": 3, "kernel_size": 3, "padding": "full"},
            "padding='full'",
        ),
    ],
)
def test_rejects_bad_arguments(cls, kwargs, arg):
    with pytest.raises(ValueError, match=cls.__name__) as info:
        cls(**kwargs)
    assert arg in str(info.value)


def test_data_init_needs_a_bias():
    with pytest.raises(ValueError, match=r"WeightNormDense.*use_bias=False"):
        WeightNormDense(3, data_init=True, use_bias=False).build((None, 2))


@pytest.mark.parametrize(
    "cls", [WeightNormDense, CenteredWeightNormDense, WeightStandardizedDense]
)
@pytest.mark.parametrize("mean_over_std", [0.0, 100.0])
def test_dense_output_as_accurate_as_the_kernel_product(cls, mean_over_std):
    # The per-unit Dense layers scale (and, centered, center the input of)
    # x·V instead of forming W. On a kernel whose units' mean is far from
    # zero, and inputs with an offset (post-ReLU-like), that must lose no
    # more than x·W with W formed in float32 does, against float64 math.
    rng = np.random.default_rng(0)
    fan_in, units = 256, 64
    x = (rng.normal(size=(32, fan_in)) + 1.0).astype("float32")
    layer = cls(units, use_bias=False, dtype="float32")
    layer.build((None, fan_in))
    v = 0.05 * (rng.normal(size=(fan_in, units)) + mean_over_std)
    layer.trainable_variables[0].assign(v.astype("float32"))
    rows = _rows(layer)  # W as the kernel path forms it, in float32
    v64 = v.astype("float32").astype(np.float64)
    centered = v64 - v64.mean(0) if cls is not WeightNormDense else v64
    if cls is WeightStandardizedDense:
        w = centered / np.sqrt((centered**2).mean(0) + layer.epsilon)
    else:
        scale = (
            layer.scale
            if cls is CenteredWeightNormDense
            else keras.ops.convert_to_numpy(layer.g).astype(np.float64)
        )
        w = centered * (scale / np.sqrt((centered**2).sum(0) + layer.epsilon))
    reference = x.astype(np.float64) @ w
    size = np.abs(reference).max()
    ours = keras.ops.convert_to_numpy(layer(x)).astype(np.float64)
    kernel_path = (x @ rows.T.astype(np.float32)).astype(np.float64)
    ours_error = np.abs(ours - reference).max() / size
    kernel_error = np.abs(kernel_path - reference).max() / size
    assert kernel_error < 1e-3  # the yardstick itself is float32-accurate
    assert ours_error <= 2 * kernel_error + 1e-6, (ours_error, kernel_error)


class _DoubledKernel(WeightStandardizedDense):
    """A user's subclass that changes W through the `kernel` property."""

    @property
    def kernel(self):
        return 2.0 * super().kernel


class _ClippedWeightNorm(WeightNormDense):
    """A user's subclass that changes W through `_reparameterize`."""

    def _reparameterize(self, v, fan_axis=1):
        return keras.ops.clip(super()._reparameterize(v, fan_axis), -0.1, 0.1)


@pytest.mark.parametrize("cls", [_DoubledKernel, _ClippedWeightNorm])
def test_a_subclass_that_changes_the_kernel_is_honoured(cls):
    # The per-unit Dense layers compute x·W without forming W; a subclass
    # that overrides how W is formed (a binarized kernel, say) must still
    # get x·W for its W.
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    layer = cls(4, use_bias=False)
    y = keras.ops.convert_to_numpy(layer(x))
    w = keras.ops.convert_to_numpy(layer.kernel)
    np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-6)
