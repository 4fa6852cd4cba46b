"""OrthogonalDense / OrthogonalConv2D (OWN by eigh, ONI by Newton)."""

import keras
import numpy as np
import pytest

from keraslayers import OrthogonalConv2D, OrthogonalDense

from .gradcheck import autodiff_gradients, check_gradients
from .harness import check_layer, train_briefly

SCALE = 1.414


def _groups(layer):
    """Effective W as (groups, group_size, fan_in) float64."""
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    rows = kernel.reshape(-1, kernel.shape[-1]).T
    return rows.reshape(layer._groups, layer._size, -1)


def _centered_groups(layer):
    kernel = keras.ops.convert_to_numpy(layer._kernel).astype(np.float64)
    rows = kernel.reshape(-1, kernel.shape[-1]).T
    rows = rows - rows.mean(1, keepdims=True)
    return rows.reshape(layer._groups, layer._size, -1)


def _polar(z):
    u, _, vt = np.linalg.svd(z, full_matrices=False)
    return u @ vt


def _relative(z, eps=1e-5):
    """The layer's ε: relative to the mean eigenvalue of ZZᵀ."""
    return eps * np.trace(z @ z.T) / len(z)


def _oni_singular_values(z, eps, num_iterations):
    """The closed form: b_T(λ/‖S‖_F)·√(λ − ε)/√‖S‖_F per eigenvalue λ."""
    s = z @ z.T + eps * np.eye(len(z))
    norm = np.linalg.norm(s)
    lam = np.linalg.eigvalsh(s)
    b = np.ones_like(lam)
    for _ in range(num_iterations):
        b = 1.5 * b - 0.5 * b**3 * (lam / norm)
    return np.sort(b * np.sqrt(np.maximum(lam - eps, 0)) / np.sqrt(norm))


CASES = [
    (OrthogonalDense, {"units": 6}, (8, 12), (8, 6)),
    (OrthogonalDense, {"units": 12, "group_size": 4}, (8, 5), (8, 12)),
    (
        OrthogonalConv2D,
        {"filters": 8, "kernel_size": 3},
        (2, 6, 6, 2),
        (2, 4, 4, 8),
    ),
]


@pytest.mark.parametrize("cls, kwargs, shape, out", CASES)
@pytest.mark.parametrize("method", ["newton", "eigh"])
def test_harness(cls, kwargs, shape, out, method, tmp_path):
    check_layer(
        cls,
        {**kwargs, "orthogonalization": method},
        shape,
        expected_output_shape=out,
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
        run_fresh_process_check=True,
    )


@pytest.mark.parametrize("method", ["newton", "eigh"])
def test_column_form_harness(method, tmp_path):
    check_layer(
        OrthogonalDense,
        {"units": 12, "orthogonalization": method, "form": "columns"},
        (8, 5),
        expected_output_shape=(8, 12),
        expected_num_trainable_weights=2,
        expected_num_non_trainable_weights=0,
        tmp_path=tmp_path,
        run_fresh_process_check=True,
    )


def test_learnable_scale_harness(tmp_path):
    check_layer(
        OrthogonalDense,
        {"units": 4, "learnable_scale": True},
        (4, 6),
        expected_output_shape=(4, 4),
        expected_num_trainable_weights=3,
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("cls, kwargs, shape, out", CASES)
def test_own_is_the_scaled_polar_factor_after_training(cls, kwargs, shape, out):
    layer = cls(**kwargs, orthogonalization="eigh")
    train_briefly(layer, shape)
    w = _groups(layer)
    eye = np.eye(layer._size)
    for g in range(layer._groups):
        np.testing.assert_allclose(w[g] @ w[g].T, SCALE**2 * eye, atol=2e-5)
        polar = _polar(_centered_groups(layer)[g])
        np.testing.assert_allclose(w[g], SCALE * polar, atol=2e-5)


@pytest.mark.parametrize("cls, kwargs, shape, out", CASES)
def test_oni_singular_values_follow_the_scalar_newton_map(
    cls, kwargs, shape, out
):
    layer = cls(**kwargs)  # newton, T = 5
    train_briefly(layer, shape)
    w = _groups(layer)
    z = _centered_groups(layer)
    for g in range(layer._groups):
        got = np.sort(np.linalg.svd(w[g], compute_uv=False))
        eps = _relative(z[g])
        expected = SCALE * _oni_singular_values(z[g], eps, 5)
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6)
    # T = 5 does not orthogonalize fully on a trained kernel: the test above
    # checks the closed form, not W Wᵀ = I.


@pytest.mark.parametrize("num_iterations", [12, 20, 40])
def test_oni_with_many_iterations_approaches_own(num_iterations):
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(16, 8)).astype("float32")  # 8 rows, fan-in 16
    oni = OrthogonalDense(8, num_iterations=num_iterations)
    own = OrthogonalDense(8, orthogonalization="eigh")
    for layer in (oni, own):
        layer.build((None, 16))
        layer._kernel.assign(kernel)
    w_oni, w_own = _groups(oni)[0], _groups(own)[0]
    assert np.all(np.isfinite(w_oni))
    # The paper's uncoupled iteration on the same kernel, in float32,
    # is what the coupled form replaces.
    z = _centered_groups(oni)[0].astype(np.float32)
    eps = np.float32(_relative(z))
    s = z @ z.T + eps * np.eye(8, dtype=np.float32)
    s_n = s / np.linalg.norm(s)
    b = np.eye(8, dtype=np.float32)
    with np.errstate(all="ignore"):
        for _ in range(num_iterations):
            b = 1.5 * b - 0.5 * b @ b @ b @ s_n
    plain = SCALE * b @ z / np.sqrt(np.linalg.norm(s))
    plain_error = np.abs(plain - w_own).max()
    error = np.abs(w_oni - w_own).max()
    tol = {12: 5e-2, 20: 1e-3, 40: 1e-4}[num_iterations]
    assert error < tol, error
    assert not np.isfinite(plain_error) or plain_error > 10 * error


@pytest.mark.parametrize("method", ["newton", "eigh"])
@pytest.mark.parametrize(
    "cls, kwargs, shape",
    [
        (OrthogonalDense, {"units": 4}, (3, 6)),
        (OrthogonalDense, {"units": 6, "group_size": 3}, (3, 4)),
        (OrthogonalConv2D, {"filters": 4, "kernel_size": 2}, (2, 3, 3, 2)),
    ],
)
def test_gradients_match_finite_differences(method, cls, kwargs, shape):
    layer = cls(**kwargs, orthogonalization=method, dtype="float64")
    x = np.random.default_rng(1).normal(size=shape)
    check_gradients(layer, x)


DEGENERATE = {
    "orthogonal init": lambda k: keras.initializers.Orthogonal(seed=0)(k.shape),
    "rank deficient": lambda k: np.repeat(k[:, :1], k.shape[1], axis=1),
    "zero row": lambda k: np.concatenate(
        [np.zeros_like(k[:, :1]), k[:, 1:]], axis=1
    ),
}


@pytest.mark.parametrize("method", ["newton", "eigh"])
@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_degenerate_kernels_stay_finite(method, case):
    layer = OrthogonalDense(4, orthogonalization=method)
    layer.build((None, 8))
    kernel = np.random.default_rng(2).normal(size=(8, 4)).astype("float32")
    layer._kernel.assign(keras.ops.convert_to_numpy(DEGENERATE[case](kernel)))
    x = np.random.default_rng(3).normal(size=(5, 8)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    gx, gw = autodiff_gradients(layer, x, np.ones((5, 4)))
    assert np.all(np.isfinite(y))
    assert np.all(np.isfinite(gx)) and all(np.all(np.isfinite(g)) for g in gw)


def test_orthogonal_init_gradient_is_correct_for_own():
    # S = I exactly: repeated eigenvalues, where eigh's textbook backward
    # is NaN. (Centering is skipped by using a kernel with zero-mean rows.)
    layer = OrthogonalDense(4, orthogonalization="eigh", dtype="float64")
    layer.build((None, 8))
    q, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(8, 8)))
    rows = q[:4] - q[:4].mean(1, keepdims=True)
    u, _, vt = np.linalg.svd(rows, full_matrices=False)
    layer._kernel.assign((u @ vt).T)  # orthonormal, zero-mean rows
    check_gradients(layer, np.random.default_rng(5).normal(size=(3, 8)))


@pytest.mark.parametrize("method", ["newton", "eigh"])
def test_mixed_precision(method):
    layer = OrthogonalConv2D(
        8, 3, orthogonalization=method, dtype="mixed_float16"
    )
    x = np.random.default_rng(6).normal(size=(2, 6, 6, 3)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    assert str(y.dtype) == "float16" and np.all(np.isfinite(y))
    assert keras.backend.standardize_dtype(layer._kernel.dtype) == "float32"


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"units": 4, "orthogonalization": "svd"}, "orthogonalization='svd'"),
        ({"units": 4, "num_iterations": -1}, "num_iterations=-1"),
        ({"units": 4, "epsilon": 0.0}, "epsilon=0.0"),
        ({"units": 4, "epsilon": -1e-5}, "epsilon=-1e-05"),
        ({"units": 4, "group_size": 0}, "group_size=0"),
    ],
)
def test_rejects_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match="OrthogonalDense") as info:
        OrthogonalDense(**kwargs)
    assert arg in str(info.value)


def test_rejects_group_sizes_that_cannot_work():
    with pytest.raises(
        ValueError, match=r"OrthogonalDense.*<= 5.*group_size=8"
    ):
        OrthogonalDense(8, group_size=8).build((None, 5))
    # Centered rows of fan-in 5 span 4 dimensions: 5 rows cannot all be
    # orthonormal, which the layer says when it is asked for.
    with pytest.warns(UserWarning, match=r"OrthogonalDense.*spans 4"):
        square = OrthogonalDense(10, group_size=5, orthogonalization="eigh")
        square.build((None, 5))
    sv = np.linalg.svd(_groups(square)[0], compute_uv=False) / SCALE
    np.testing.assert_allclose(sv[:-1], 1.0, atol=1e-5)
    assert sv[-1] < 1e-3
    with pytest.raises(ValueError, match=r"OrthogonalDense.*fan_in=1"):
        OrthogonalDense(4, form="rows").build((None, 1))
    with pytest.raises(
        ValueError, match=r"OrthogonalDense.*\(6\).*group_size=4"
    ):
        OrthogonalDense(6, group_size=4).build((None, 5))
    with pytest.raises(ValueError, match=r"OrthogonalConv2D.*group_size=32"):
        OrthogonalConv2D(32, 1, group_size=32).build((None, 4, 4, 3))


def test_default_group_size_is_the_largest_divisor_within_fan_in_minus_1():
    """Centered rows span fan-in − 1 dimensions: the default groups are
    the largest that can be orthonormal."""
    for units, fan_in, size in [(12, 5, 4), (64, 64, 32), (64, 33, 32)]:
        layer = OrthogonalDense(units, form="rows")
        layer.build((None, fan_in))
        assert (layer._size, layer._groups) == (size, units // size)


@pytest.mark.parametrize("method", ["eigh", "newton"])
@pytest.mark.parametrize("fan_in", [64, 32])
def test_defaults_give_orthonormal_groups_at_any_scale_of_v(method, fan_in):
    """At the defaults (64 units), every group is orthonormal: rows
    (WWᵀ = I) or, in the column form, columns (WᵀW = I), and W does not
    depend on V's scale (ε is relative)."""
    init = keras.initializers.RandomNormal(stddev=1.0, seed=3)
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(fan_in, 64)).astype("float32")
    ws = []
    for stddev in (1.0, 1e-3):
        layer = OrthogonalDense(
            64,
            orthogonalization=method,
            num_iterations=12,
            kernel_initializer=init,
        )
        layer.build((None, fan_in))
        layer._kernel.assign(stddev * kernel)
        if layer._form == "columns":
            w, _ = _columns(layer)
            blocks = [w]
        else:
            blocks = list(_groups(layer))
        for block in blocks:
            sv = np.linalg.svd(block, compute_uv=False) / SCALE
            # float32 eigh to rounding; ONI's T = 12 converges to 1e-4.
            tol = 1e-5 if method == "eigh" else 1e-3
            np.testing.assert_allclose(sv, 1.0, atol=tol)
        ws.append(keras.ops.convert_to_numpy(layer.kernel))
    np.testing.assert_allclose(ws[0], ws[1], atol=1e-4)


def _columns(layer):
    """Effective W as (units, fan_in) float64, and V with each column
    centered over the units (the column form's Zᵀ, transposed back)."""
    w = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    v = keras.ops.convert_to_numpy(layer._kernel).astype(np.float64)
    w, v = w.reshape(-1, w.shape[-1]).T, v.reshape(-1, v.shape[-1]).T
    return w, v - v.mean(0, keepdims=True)


@pytest.mark.parametrize(
    "cls, kwargs, shape",
    [
        (OrthogonalDense, {"units": 12}, (8, 5)),
        (OrthogonalConv2D, {"filters": 24, "kernel_size": 2}, (2, 5, 5, 3)),
    ],
)
def test_more_units_than_fan_in_orthogonalizes_columns(cls, kwargs, shape):
    """The column form, the default for "newton" when the units exceed the
    fan-in (as in the official ONI code): the singular values follow the
    scalar Newton map on ZᵀZ for the columns centered over the units, and
    with many iterations WᵀW = s²I."""
    layer = cls(**kwargs)
    train_briefly(layer, shape)
    assert layer._form == "columns" and layer._groups == 1
    w, z = _columns(layer)
    got = np.sort(np.linalg.svd(w, compute_uv=False))
    expected = SCALE * _oni_singular_values(z.T, _relative(z.T), 5)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6)
    many = cls(**kwargs, num_iterations=40)
    many.build(shape)
    many._kernel.assign(layer._kernel)
    w, _ = _columns(many)
    np.testing.assert_allclose(
        w.T @ w, SCALE**2 * np.eye(w.shape[1]), atol=2e-4
    )


def test_own_column_form_is_the_polar_factor():
    layer = OrthogonalDense(12, orthogonalization="eigh", form="columns")
    train_briefly(layer, (8, 5))
    w, z = _columns(layer)
    np.testing.assert_allclose(w, SCALE * _polar(z), atol=1e-4)


def test_a_config_saved_before_revision_2_keeps_its_function():
    """Revision 1 (a config without `revision`): groups of up to fan-in
    rows, the column form centered like the rows, an absolute ε. A model
    saved then loads with the same W."""
    rng = np.random.default_rng(0)
    kernel = 1e-2 * rng.normal(size=(8, 16)).astype("float32")
    config = OrthogonalDense(16).get_config()
    assert config["revision"] == 2
    del config["revision"]
    old = OrthogonalDense.from_config(config)
    old.build((None, 8))
    old._kernel.assign(kernel)
    assert (old._form, old._size) == ("columns", 16)
    w, _ = _columns(old)
    # Revision 1's column form: rows centered, so the ones direction is
    # null, and ε = 1e-5 absolute.
    z = kernel.T.astype(np.float64)
    z = z - z.mean(1, keepdims=True)
    expected = SCALE * _oni_singular_values(z.T, 1e-5, 5)
    got = np.sort(np.linalg.svd(w, compute_uv=False))
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6)
    assert got[0] < 1e-3
    rows = OrthogonalDense.from_config({**config, "orthogonalization": "eigh"})
    rows.build((None, 8))
    assert (rows._form, rows._size, rows._revision) == ("rows", 8, 1)


def test_form_defaults_and_a_config_without_form_keeps_row_groups():
    assert OrthogonalDense(8).get_config()["form"] == "auto"
    # With an explicit group size, or for OWN, "auto" means rows.
    for layer in (
        OrthogonalDense(12, group_size=4),
        OrthogonalDense(12, orthogonalization="eigh"),
    ):
        layer.build((None, 5))
        assert layer._form == "rows"
    # A config saved before `form` existed keeps its row groups.
    config = OrthogonalDense(12).get_config()
    del config["form"]
    old = OrthogonalDense.from_config(config)
    old.build((None, 5))
    assert (old.form, old._form, old._size) == ("rows", "rows", 4)


def test_column_form_needs_groups_at_least_as_tall_as_the_fan_in():
    with pytest.raises(ValueError, match=r"OrthogonalDense.*column form"):
        OrthogonalDense(4, form="columns").build((None, 5))
    with pytest.raises(ValueError, match=r"OrthogonalDense.*form='diagonal'"):
        OrthogonalDense(4, form="diagonal")


def _fit_warnings(model, jit_compile):
    import warnings

    model.compile("sgd", "mse", jit_compile=jit_compile)
    x = np.ones((8, *model.input_shape[1:]), "float32")
    y = np.ones((8, *model.output_shape[1:]), "float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, verbose=0)
    return [str(w.message) for w in caught if "Jacobi" in str(w.message)]


# The warning is about TensorFlow's XLA; on JAX, jit_compile=False only
# makes Keras run the step op by op (20 s here) to show the same absence
# of a warning that the compiled step shows.
@pytest.mark.parametrize(
    "jit_compile",
    [True, False] if keras.backend.backend() == "tensorflow" else [True],
)
def test_warns_about_a_large_eigh_compiled_by_tensorflow_xla(jit_compile):
    def model(size, orthogonalization="eigh"):
        # Fan-in size + 1: the default row group is then all `size` units.
        return keras.Sequential(
            [
                keras.Input((size + 1,)),
                OrthogonalDense(size, orthogonalization=orthogonalization),
            ]
        )

    warned = _fit_warnings(model(128), jit_compile)
    expect = jit_compile and keras.backend.backend() == "tensorflow"
    assert len(warned) == int(expect)
    if expect:
        assert "OrthogonalDense" in warned[0] and "128×128" in warned[0]
        assert "orthogonalization='newton'" in warned[0]
    # Small groups and the Newton form compile fast: no warning.
    assert _fit_warnings(model(64), jit_compile) == []
    assert _fit_warnings(model(128, "newton"), jit_compile) == []
