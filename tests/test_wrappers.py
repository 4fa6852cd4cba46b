"""The weight-reparameterization wrappers around Keras layers with a kernel:
WeightNormalization, CenteredWeightNormalization,
OrthogonalWeightNormalization, WeightStandardization.

Oracle: the wrapper's output equals the plain Keras layer's (same config)
holding a float64 NumPy transcription of the effective kernel, computed on
the (units, fan_in) view the tests build independently per layer type.
"""

import keras
import numpy as np
import pytest

from keraslayers import (
    CenteredWeightNormalization,
    OrthogonalWeightNormalization,
    WeightNormalization,
    WeightNormDense,
    WeightStandardization,
    export_inference_model,
)

from .gradcheck import check_gradients
from .harness import check_layer

L = keras.layers


@keras.saving.register_keras_serializable(package="keraslayers_tests")
class NumpyNormal(keras.initializers.Initializer):
    """Normal values drawn by NumPy: Keras's random initializers compile a
    JAX program per new shape (about 2 s each here), which would dominate
    these tests' time."""

    def __call__(self, shape, dtype=None):
        rng = np.random.default_rng(sum(shape) + len(shape))
        values = rng.normal(scale=0.5, size=shape)
        return keras.ops.convert_to_tensor(values, dtype=dtype)


K = {"kernel_initializer": NumpyNormal()}
DW = {"depthwise_initializer": NumpyNormal()}
SEP = {**DW, "pointwise_initializer": NumpyNormal()}

# name: (factory of the wrapped layer, input shape, kernel layout).
TYPES = {
    "dense": (lambda **kw: L.Dense(6, **K, **kw), (8, 5), "last"),
    "einsum": (
        lambda **kw: L.EinsumDense(
            "btd,dhk->bthk", (3, 2, 3), bias_axes="hk", **K, **kw
        ),
        (4, 3, 5),
        "einsum",
    ),
    "conv1d": (lambda **kw: L.Conv1D(4, 3, **K, **kw), (2, 7, 3), "last"),
    "conv2d": (
        lambda **kw: L.Conv2D(4, 3, padding="same", **K, **kw),
        (2, 6, 6, 3),
        "last",
    ),
    "conv3d": (
        lambda **kw: L.Conv3D(4, 2, **K, **kw),
        (2, 4, 4, 4, 2),
        "last",
    ),
    "conv1d_transpose": (
        lambda **kw: L.Conv1DTranspose(4, 3, strides=2, **K, **kw),
        (2, 5, 3),
        "transposed",
    ),
    "conv2d_transpose": (
        lambda **kw: L.Conv2DTranspose(4, 3, **K, **kw),
        (2, 4, 4, 3),
        "transposed",
    ),
    "conv3d_transpose": (
        lambda **kw: L.Conv3DTranspose(3, 2, **K, **kw),
        (2, 3, 3, 3, 2),
        "transposed",
    ),
    # Kernel window 5 > 3 rows per OWN group: centering takes one rank
    # from a group, so a group as wide as the fan-in would be singular.
    "depthwise1d": (
        lambda **kw: L.DepthwiseConv1D(5, depth_multiplier=2, **DW, **kw),
        (2, 7, 3),
        "depthwise",
    ),
    "depthwise2d": (
        lambda **kw: L.DepthwiseConv2D(3, depth_multiplier=2, **DW, **kw),
        (2, 6, 6, 3),
        "depthwise",
    ),
    "separable2d": (
        lambda **kw: L.SeparableConv2D(4, 3, depth_multiplier=2, **SEP, **kw),
        (2, 6, 6, 3),
        "depthwise",
    ),
}
KERNEL_NAMES = ("kernel", "depthwise_kernel")


# -- the (units, fan_in) view, transcribed per layout ------------------------
def _to_rows(kernel, layout):
    if layout == "last":  # (..., units)
        return kernel.reshape(-1, kernel.shape[-1]).T
    if layout == "transposed":  # (..., units, in)
        return np.moveaxis(kernel, -2, 0).reshape(kernel.shape[-2], -1)
    # depthwise (..., in, multiplier) and einsum "dhk" (d, h, k): the last
    # two axes, flattened in order, are the units.
    units = kernel.shape[-2] * kernel.shape[-1]
    return kernel.reshape(-1, units).T


def _from_rows(rows, layout, shape):
    if layout == "transposed":
        moved = (shape[-2], *shape[:-2], shape[-1])
        return np.moveaxis(rows.reshape(moved), 0, -2)
    return rows.T.reshape(shape)


# -- float64 transcriptions of the families ----------------------------------
def _wn(v, g, eps=1e-12):
    return g[:, None] * v / np.sqrt((v**2).sum(1, keepdims=True) + eps)


def _cwn(v, s, eps=1e-12):
    z = v - v.mean(1, keepdims=True)
    return s[:, None] * z / np.sqrt((z**2).sum(1, keepdims=True) + eps)


def _ws(v, gain, scaled):
    z = v - v.mean(1, keepdims=True)
    var = v.var(1, keepdims=True)
    if scaled:
        return gain[:, None] * z / np.sqrt(np.maximum(v.shape[1] * var, 1e-4))
    return z / np.sqrt(var + 1e-10)


def _polar(z):
    u, _, vt = np.linalg.svd(z, full_matrices=False)
    return u @ vt


def _oni(z, eps, iterations):
    # ε relative to the mean eigenvalue of ZZᵀ.
    s = z @ z.T
    s = s + eps * np.trace(s) / len(z) * np.eye(len(z))
    norm = np.linalg.norm(s)
    b = np.eye(len(z))
    for _ in range(iterations):
        b = 1.5 * b - 0.5 * b @ b @ b @ (s / norm)
    return b @ z / np.sqrt(norm)


def _orthogonal_layout(units, fan_in, method, group_size=None, form="auto"):
    """The documented grouping: (form, group size)."""
    if form == "auto":
        tall = units > fan_in and group_size is None
        form = "columns" if tall and method == "newton" else "rows"
    if group_size is None:
        # Centered rows span fan-in − 1 dimensions.
        divisors = [
            d for d in range(1, min(units, fan_in - 1) + 1) if units % d == 0
        ]
        group_size = units if form == "columns" else max(divisors)
    return form, group_size


def _orth(v, s, method, iterations=5, eps=1e-5, **grouping):
    units, fan_in = v.shape
    form, size = _orthogonal_layout(units, fan_in, method, **grouping)
    out = np.empty_like(v)
    for start in range(0, units, size):
        group = v[start : start + size]
        # Rows centered over the fan-in; in the column form, columns over
        # the group's units.
        if form == "columns":
            group = group.T
        group = group - group.mean(1, keepdims=True)
        w = _polar(group) if method == "eigh" else _oni(group, eps, iterations)
        out[start : start + size] = w.T if form == "columns" else w
    return s[:, None] * out


# -- helpers ------------------------------------------------------------------
def _np(x):
    return keras.ops.convert_to_numpy(x)


def _kernel_variable(wrapper):
    (v,) = [w for w in wrapper.layer.weights if w.name in KERNEL_NAMES]
    return v


def _inputs(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _built(wrapper_cls, name, seed=0, inner_kwargs=None, **kwargs):
    """A wrapper around TYPES[name], built, with random V, bias and family
    weights (so that the oracle sees non-trivial values)."""
    make, shape, _ = TYPES[name]
    wrapper = wrapper_cls(make(**(inner_kwargs or {})), **kwargs)
    wrapper.build(shape)
    rng = np.random.default_rng(seed)
    for weight in wrapper.weights:
        if weight.trainable:
            weight.assign(rng.normal(size=weight.shape).astype("float32"))
    for name_ in ("g", "scale_weight", "gain"):
        weight = getattr(wrapper, name_, None)
        if weight is not None:
            weight.assign(rng.uniform(0.5, 2.0, size=weight.shape))
    return wrapper


def _plain_output(wrapper, kernel, x):
    """The wrapped layer's class and config, holding `kernel`, on x."""
    inner = wrapper.layer
    plain = type(inner).from_config(inner.get_config())
    plain.build(x.shape)
    v = _kernel_variable(wrapper)
    plain.set_weights(
        [
            kernel.astype("float32") if w is v else _np(w.value)
            for w in inner.weights
        ]
    )
    return _np(plain(x))


def _family_kernel(wrapper, rows):
    """The float64 effective rows for the wrapper's family and weights."""
    units = rows.shape[0]

    def per_unit(weight, default):
        if weight is None:
            return np.full(units, default)
        return _np(weight).astype(np.float64)

    if isinstance(wrapper, WeightNormalization):
        return _wn(rows, per_unit(wrapper.g, 1.0))
    if isinstance(wrapper, CenteredWeightNormalization):
        return _cwn(rows, per_unit(wrapper.scale_weight, wrapper.scale))
    if isinstance(wrapper, WeightStandardization):
        return _ws(rows, per_unit(wrapper.gain, 1.0), wrapper.scaled)
    return _orth(
        rows,
        per_unit(wrapper.scale_weight, wrapper.scale),
        wrapper.orthogonalization,
        wrapper.num_iterations,
        wrapper.epsilon,
        group_size=wrapper.group_size,
        form=wrapper.form,
    )


WRAPPERS = {
    "wn": (WeightNormalization, {}),
    "cwn": (CenteredWeightNormalization, {"learnable_scale": True}),
    "own": (OrthogonalWeightNormalization, {"orthogonalization": "eigh"}),
    "oni": (OrthogonalWeightNormalization, {"learnable_scale": True}),
    "ws": (WeightStandardization, {}),
    "sws": (WeightStandardization, {"scaled": True}),
}


# -- oracle: every wrapper around every layer type ---------------------------
@pytest.mark.parametrize("family", sorted(WRAPPERS))
@pytest.mark.parametrize("name", sorted(TYPES))
def test_output_is_the_plain_layer_with_the_effective_kernel(family, name):
    cls, kwargs = WRAPPERS[family]
    wrapper = _built(cls, name, **kwargs)
    layout = TYPES[name][2]
    v = _np(_kernel_variable(wrapper)).astype(np.float64)
    kernel = _from_rows(
        _family_kernel(wrapper, _to_rows(v, layout)), layout, v.shape
    )
    np.testing.assert_allclose(
        _np(wrapper.kernel), kernel, rtol=2e-5, atol=2e-6
    )
    x = _inputs(TYPES[name][1], seed=1)
    np.testing.assert_allclose(
        _np(wrapper(x)), _plain_output(wrapper, kernel, x), rtol=1e-5, atol=1e-5
    )
    # The wrapped layer's kernel attribute is its variable again.
    assert isinstance(_kernel_variable(wrapper), keras.Variable)
    assert _kernel_variable(wrapper) in wrapper.layer.trainable_weights


@pytest.mark.parametrize("name", sorted(TYPES))
def test_orthogonal_rows_or_columns_are_orthonormal(name):
    """OWN's W Wᵀ = s²·I per row group, WᵀW = s²·I per column group."""
    wrapper = _built(
        OrthogonalWeightNormalization, name, orthogonalization="eigh"
    )
    layout = TYPES[name][2]
    rows = _to_rows(_np(wrapper.kernel).astype(np.float64), layout)
    units, fan_in = rows.shape
    form, size = _orthogonal_layout(units, fan_in, "eigh")
    for start in range(0, units, size):
        w = rows[start : start + size] / 1.414
        gram = w.T @ w if form == "columns" else w @ w.T
        np.testing.assert_allclose(gram, np.eye(len(gram)), atol=2e-5)


@pytest.mark.parametrize(
    "name, grouping",
    [
        ("dense", {"form": "rows", "group_size": 3}),
        ("dense", {"form": "columns"}),
        ("depthwise2d", {"group_size": 2}),
        ("conv2d_transpose", {}),
    ],
)
def test_orthogonal_grouping_arguments(name, grouping):
    wrapper = _built(
        OrthogonalWeightNormalization, name, num_iterations=7, **grouping
    )
    layout = TYPES[name][2]
    rows = _to_rows(_np(_kernel_variable(wrapper)).astype(np.float64), layout)
    scale = np.full(rows.shape[0], 1.414)
    expected = _orth(rows, scale, "newton", 7, **grouping)
    np.testing.assert_allclose(
        _to_rows(_np(wrapper.kernel), layout), expected, rtol=2e-5, atol=2e-6
    )


# -- WN's data-dependent initialization ---------------------------------------
def _per_unit(y, name):
    """Output values as (rows, units): channels last, or EinsumDense's
    trailing (h, k) axes."""
    if name == "einsum":
        return y.reshape(-1, y.shape[-2] * y.shape[-1])
    return y.reshape(-1, y.shape[-1])


@pytest.mark.parametrize("name", sorted(set(TYPES) - {"separable2d"}))
def test_data_init_standardizes_each_output_unit(name):
    make, shape, _ = TYPES[name]
    wrapper = WeightNormalization(make(), data_init=True, init_scale=0.5)
    x = _inputs(shape) * 3 + 1
    y = _per_unit(_np(wrapper(x, training=True)).astype(np.float64), name)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(y.std(0), 0.5, rtol=1e-3)
    # Only the first batch initializes; inference uses the offsets too.
    first = _np(wrapper(x, training=False))
    wrapper(x * 5, training=True)
    np.testing.assert_allclose(_np(wrapper(x, training=False)), first)


def test_data_init_on_a_channels_first_layer():
    layer = L.DepthwiseConv2D(
        3, depth_multiplier=2, data_format="channels_first"
    )
    wrapper = WeightNormalization(layer, data_init=True)
    y = _np(wrapper(_inputs((2, 3, 6, 6)) * 2 - 1, training=True))
    per_channel = np.moveaxis(y, 1, -1).reshape(-1, 6).astype(np.float64)
    np.testing.assert_allclose(per_channel.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(per_channel.std(0), 1, rtol=1e-3)


def test_data_init_inside_compiled_fit():
    wrapper = WeightNormalization(L.Conv1DTranspose(4, 3, **K), data_init=True)
    model = keras.Sequential([keras.Input((5, 3)), wrapper])
    model.compile(keras.optimizers.SGD(0.0), "mse", jit_compile=True)
    x = _inputs((16, 5, 3)) * 4 + 2
    model.fit(x, np.zeros((16, 7, 4)), batch_size=16, epochs=1, verbose=0)
    y = _np(model(x)).reshape(-1, 4).astype(np.float64)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(y.std(0), 1, rtol=1e-3)


# -- the shared layer checks, on a representative subset ----------------------
def _factory(cls, name, **kwargs):
    make = TYPES[name][0]

    def factory(dtype=None):
        inner = make() if dtype is None else make(dtype=dtype)
        return cls(inner, **kwargs)

    factory.__name__ = cls.__name__
    return factory


# A representative subset: each case pays three compiled fits and a
# save/load (3-6 s), so the full product is left to the oracle above. Every
# wrapper, and each way a Keras layer holds its kernel: `_kernel` behind a
# property (Dense, EinsumDense; also Conv1D/2D/3D), a `kernel` attribute
# (transposed and depthwise convolutions), `depthwise_kernel` (separable).
HARNESS = [
    (WeightNormalization, "dense", {"data_init": True}, 3, 3),
    (WeightNormalization, "conv2d_transpose", {}, 3, 0),
    (CenteredWeightNormalization, "einsum", {"learnable_scale": True}, 3, 0),
    (OrthogonalWeightNormalization, "depthwise2d", {}, 2, 0),
    (WeightStandardization, "separable2d", {"scaled": True}, 4, 0),
]


@pytest.mark.parametrize(
    "cls, name, kwargs, trainable, non_trainable",
    HARNESS,
    ids=[f"{c.__name__}-{n}" for c, n, *_ in HARNESS],
)
def test_harness(cls, name, kwargs, trainable, non_trainable, tmp_path):
    make, shape, _ = TYPES[name]
    check_layer(
        _factory(cls, name, **kwargs),
        {},
        shape,
        expected_output_shape=tuple(make().compute_output_shape(shape)),
        expected_num_trainable_weights=trainable,
        expected_num_non_trainable_weights=non_trainable,
        tmp_path=tmp_path,
    )


# -- gradients, stateless calls, mixed precision -----------------------------
# Float64 gradients through the substitution, for WN and both orthogonal
# methods (the CWN and WS math is the shared mixins', gradient-checked in
# test_weight_normalization.py and test_weight_standardization.py).
@pytest.mark.parametrize(
    "cls, make, kwargs, shape",
    [
        (
            WeightNormalization,
            lambda: L.Conv2DTranspose(2, 2, dtype="float64", **K),
            {},
            (2, 3, 3, 2),
        ),
        (
            OrthogonalWeightNormalization,
            lambda: L.Conv1D(3, 2, dtype="float64", **K),
            {"learnable_scale": True},
            (2, 5, 3),
        ),
        (
            OrthogonalWeightNormalization,
            lambda: L.DepthwiseConv2D(
                3, depth_multiplier=2, dtype="float64", **DW
            ),
            {"orthogonalization": "eigh"},
            (2, 4, 4, 2),
        ),
    ],
)
def test_gradients_match_finite_differences(cls, make, kwargs, shape):
    layer = cls(make(), **kwargs)
    check_gradients(layer, np.random.default_rng(2).normal(size=shape))


def _compiled(fn):
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    import tensorflow as tf

    return tf.function(fn, jit_compile=True)


@pytest.mark.parametrize(
    "family, name",
    [("wn", "conv2d_transpose"), ("oni", "einsum"), ("sws", "depthwise2d")],
)
def test_compiled_stateless_call_computes_with_the_given_values(family, name):
    """Values passed to `stateless_call` (under jax.jit / XLA) replace the
    variables, V included; the variables keep theirs."""
    cls, kwargs = WRAPPERS[family]
    wrapper = _built(cls, name, **kwargs)
    v = _kernel_variable(wrapper)
    stored = _np(v).copy()
    trainable = [_np(w.value) for w in wrapper.trainable_variables]
    index = [i for i, w in enumerate(wrapper.trainable_variables) if w is v]
    new_v = np.random.default_rng(5).normal(size=v.shape).astype("float32")
    trainable[index[0]] = new_v
    non_trainable = [_np(w.value) for w in wrapper.non_trainable_variables]
    x = _inputs(TYPES[name][1], seed=6)

    def run(trainable_values, inputs):
        outputs, _ = wrapper.stateless_call(
            trainable_values, non_trainable, inputs
        )
        return outputs

    got = _np(_compiled(run)(trainable, x))
    layout = TYPES[name][2]
    kernel = _from_rows(
        _family_kernel(wrapper, _to_rows(new_v.astype(np.float64), layout)),
        layout,
        new_v.shape,
    )
    np.testing.assert_allclose(
        got, _plain_output(wrapper, kernel, x), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(_np(v), stored)


def test_mixed_precision_keeps_the_kernel_math_in_float32():
    x = _inputs((8, 5))
    mixed = _built(
        WeightNormalization, "dense", inner_kwargs={"dtype": "mixed_float16"}
    )
    exact = _built(WeightNormalization, "dense")
    for weight, value in zip(mixed.weights, exact.weights, strict=True):
        assert keras.backend.standardize_dtype(weight.dtype) == "float32"
        weight.assign(value)
    assert mixed.compute_dtype == "float16"
    assert keras.backend.standardize_dtype(mixed.kernel.dtype) == "float32"
    np.testing.assert_array_equal(_np(mixed.kernel), _np(exact.kernel))
    y = mixed(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    np.testing.assert_allclose(_np(y), _np(exact(x)), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: WeightNormalization(L.Dense(6, **K)),
        lambda: WeightNormDense(6, **K),
    ],
    ids=["wrapper", "WeightNormDense"],
)
def test_g_starts_at_the_norm_of_v_when_built_inside_a_model_call(make, policy):
    """A subclassed model builds its layers on its first call, inside a
    symbolic trace (and, under a mixed policy, a float16 autocast scope):
    g = ‖v‖ must still come from v's float32 value, so that the layer
    starts as the plain layer."""
    keras.config.set_dtype_policy(policy)

    class Model(keras.Model):
        def __init__(self):
            super().__init__()
            self.wrapped = make()

        def call(self, inputs):
            return self.wrapped(inputs)

    model = Model()
    model(_inputs((4, 5)))
    layer = model.wrapped
    (v,) = [w for w in layer.weights if w.name == "kernel"]
    np.testing.assert_allclose(_np(layer.kernel), _np(v), rtol=1e-6)


# -- export -----------------------------------------------------------------
EXPORTED = [
    ("wn", "dense"),
    ("cwn", "einsum"),
    ("own", "conv1d"),
    ("sws", "conv2d"),
    ("wn", "conv3d"),
    ("oni", "conv1d_transpose"),
    ("ws", "conv2d_transpose"),
    ("cwn", "conv3d_transpose"),
    ("sws", "depthwise1d"),
    ("wn", "depthwise2d"),
    ("oni", "separable2d"),
]


@pytest.mark.parametrize("family, name", EXPORTED)
def test_export_replaces_the_wrapper_by_the_plain_layer(family, name):
    cls, kwargs = WRAPPERS[family]
    make, shape, _ = TYPES[name]
    if family == "wn" and name != "separable2d":
        kwargs = {**kwargs, "data_init": True}
    wrapper = cls(make(activation="relu"), name="wrapped", **kwargs)
    model = keras.Sequential([keras.Input(shape[1:]), wrapper])
    x = _inputs(shape, seed=3) * 2 + 1
    model(x, training=True)  # data init, where asked for
    exported = export_inference_model(model)
    (plain,) = exported.layers
    assert type(plain) is type(wrapper.layer)
    assert plain.name == "wrapped"
    assert plain.get_config()["activation"] == "relu"
    np.testing.assert_allclose(
        _np(exported(x)), _np(model(x)), rtol=1e-5, atol=1e-5
    )


def test_export_of_a_model_with_several_wrappers_and_a_weight_norm_dense(
    tmp_path,
):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            WeightNormalization(L.Conv2D(4, 3, **K), data_init=True),
            OrthogonalWeightNormalization(L.DepthwiseConv2D(3, **DW)),
            L.Flatten(),
            CenteredWeightNormalization(L.Dense(5, use_bias=False, **K)),
            WeightNormDense(2, **K),
        ]
    )
    model.build((None, 8, 8, 3))
    rng = np.random.default_rng(0)
    for weight in model.trainable_weights:
        weight.assign(rng.normal(scale=0.5, size=weight.shape))
    x = _inputs((16, 8, 8, 3))
    model(x, training=True)  # WN's data-dependent initialization
    exported = export_inference_model(model)
    assert [type(layer).__name__ for layer in exported.layers] == [
        "Conv2D",
        "DepthwiseConv2D",
        "Flatten",
        "Dense",
        "Dense",
    ]
    assert all(
        type(layer).__module__.startswith("keras.") for layer in exported.layers
    )
    expected = _np(model(x))
    np.testing.assert_allclose(_np(exported(x)), expected, rtol=1e-5, atol=1e-5)
    path = tmp_path / "exported.keras"
    exported.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_np(reloaded(x)), expected, rtol=1e-5, atol=1e-5)


# -- bad input --------------------------------------------------------------
@pytest.mark.parametrize(
    "layer",
    [
        L.LayerNormalization(),
        L.Embedding(10, 4),
        L.LSTM(3),
        "dense",
        WeightNormDense(3),
    ],
    ids=["layer_norm", "embedding", "lstm", "string", "wn_dense"],
)
@pytest.mark.parametrize(
    "cls",
    [
        WeightNormalization,
        CenteredWeightNormalization,
        OrthogonalWeightNormalization,
        WeightStandardization,
    ],
)
def test_a_layer_without_a_supported_kernel_is_refused(cls, layer):
    with pytest.raises(
        ValueError, match=rf"^{cls.__name__}: `layer` must .* Received: layer="
    ) as info:
        cls(layer)
    shown = layer if isinstance(layer, str) else layer.name
    assert str(shown) in str(info.value)


@pytest.mark.parametrize(
    "equation",
    [
        "ab,bb->ab",  # a repeated kernel letter (a diagonal)
        "ab,b->a",  # no output axis in the kernel
        "ab,ab->ab",  # no fan-in axis
        "ab,bcd->ac",  # kernel letter d in neither spec
    ],
)
def test_ambiguous_einsum_equations_are_refused(equation):
    layer = L.EinsumDense(equation, output_shape=3)
    with pytest.raises(
        ValueError, match="WeightStandardization: .*layer="
    ) as e:
        WeightStandardization(layer)
    assert equation in str(e.value)


@pytest.mark.parametrize(
    "layer, arg",
    [
        (L.SeparableConv2D(4, 3), "SeparableConv2D"),
        (
            L.EinsumDense("btd,dhk->bthk", (3, 2, 3), bias_axes="k"),
            "bias_axes='k'",
        ),
        (L.Dense(3, use_bias=False), "use_bias=False"),
        (L.EinsumDense("ab,bc->ac", 3), "use_bias=False"),
    ],
)
def test_data_init_needs_output_channels_with_a_bias(layer, arg):
    with pytest.raises(ValueError, match="WeightNormalization") as info:
        WeightNormalization(layer, data_init=True)
    assert arg in str(info.value)


def test_lora_is_refused():
    with pytest.raises(ValueError, match=r"WeightNormalization.*lora_rank=2"):
        WeightNormalization(L.Dense(3, lora_rank=2))


@pytest.mark.parametrize(
    "cls, kwargs, arg",
    [
        (WeightNormalization, {"epsilon": 0.0}, "epsilon=0.0"),
        (WeightNormalization, {"init_scale": -1.0}, "init_scale=-1.0"),
        (CenteredWeightNormalization, {"scale": 0}, "scale=0"),
        (
            OrthogonalWeightNormalization,
            {"orthogonalization": "qr"},
            "orthogonalization='qr'",
        ),
        (OrthogonalWeightNormalization, {"form": "diag"}, "form='diag'"),
        (WeightStandardization, {"epsilon": -1.0}, "epsilon=-1.0"),
        (WeightStandardization, {"scaled": "yes"}, "scaled='yes'"),
    ],
)
def test_rejects_bad_arguments(cls, kwargs, arg):
    with pytest.raises(ValueError, match=cls.__name__) as info:
        cls(L.Dense(3), **kwargs)
    assert arg in str(info.value)


def test_a_group_larger_than_the_fan_in_is_refused_at_build():
    wrapper = OrthogonalWeightNormalization(
        L.Conv2DTranspose(8, 2, **K), group_size=8, form="rows"
    )
    with pytest.raises(
        ValueError, match=r"OrthogonalWeightNormalization.*group_size=8"
    ):
        wrapper.build((None, 4, 4, 1))
