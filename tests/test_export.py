"""export_inference_model."""

import subprocess
import sys

import keras
import numpy as np
import pytest

import keraslayers
from keraslayers import export_inference_model

from .harness import train_briefly

LAYERS = {
    "wn": lambda: keraslayers.WeightNormConv2D(6, 3, data_init=True),
    "cwn": lambda: keraslayers.CenteredWeightNormConv2D(6, 3),
    "own": lambda: keraslayers.OrthogonalConv2D(6, 3, orthogonalization="eigh"),
    "oni": lambda: keraslayers.OrthogonalConv2D(6, 3, activation="relu"),
    "ws": lambda: keraslayers.WeightStandardizedConv2D(6, 3, scaled=True),
}


def _model(conv):
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            conv,
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keraslayers.OrthogonalDense(4, use_bias=False),
            keraslayers.WeightNormDense(2),
        ]
    )


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_export_keeps_predictions_and_drops_the_dependency(name, tmp_path):
    model = _model(LAYERS[name]())
    model.build((None, 8, 8, 3))
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    model.compile("adam", "mse", jit_compile=True)
    model.fit(x, np.zeros((16, 2)), epochs=2, batch_size=8, verbose=0)
    exported = export_inference_model(model)
    kinds = {type(layer).__name__ for layer in exported.layers}
    assert kinds == {"Conv2D", "ReLU", "Flatten", "Dense"}
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(exported(x)),
        expected,
        rtol=1e-5,
        atol=1e-5,
    )
    path = tmp_path / "exported.keras"
    exported.save(path)
    np.save(tmp_path / "x.npy", x)
    # A fresh interpreter that never imports keraslayers loads and runs it.
    script = (
        "import sys, numpy as np, keras\n"
        "m = keras.saving.load_model(sys.argv[1])\n"
        "y = keras.ops.convert_to_numpy(m(np.load(sys.argv[2])))\n"
        "assert 'keraslayers' not in sys.modules\n"
        "np.save(sys.argv[3], y)\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(path),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        check=True,
        capture_output=True,
    )
    np.testing.assert_allclose(
        np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5
    )


def test_exported_layers_hold_the_effective_kernel():
    layer = keraslayers.CenteredWeightNormDense(3)
    model = train_briefly(layer, (4, 5))
    exported = export_inference_model(model)
    dense = exported.layers[-1]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(dense.kernel),
        keras.ops.convert_to_numpy(layer.kernel),
    )


def test_rejects_what_is_not_a_built_model():
    with pytest.raises(ValueError, match="export_inference_model.*model="):
        export_inference_model("model.keras")


def _kalman_model(prior_as_output=False):
    """Dense → BKN (state) → ReLU → KalmanTransition(Dense) → BKN(prior)."""
    inputs = keras.Input((6,))
    z = keras.layers.Dense(5, use_bias=False)(inputs)
    h, state = keraslayers.BatchKalmanNormalization(return_state=True)(z)
    h = keras.layers.ReLU()(h)
    z, prior = keraslayers.KalmanTransition(
        keras.layers.Dense(4, use_bias=False), name="transition"
    )(h, state)
    y = keraslayers.BatchKalmanNormalization()(z, prior=prior)
    outputs = [y, prior] if prior_as_output else y
    model = keras.Model(inputs, outputs)
    # Moving statistics away from their initial values, so that inference
    # is not the identity.
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    for _ in range(3):
        model(x, training=True)
    return model, x


def test_a_kalman_transition_exports_as_its_wrapped_layer():
    model, x = _kalman_model()
    exported = export_inference_model(model)
    kinds = [type(layer).__name__ for layer in exported.layers]
    assert "KalmanTransition" not in kinds
    assert isinstance(exported.get_layer("transition"), keras.layers.Dense)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(exported(x)),
        keras.ops.convert_to_numpy(model(x)),
        rtol=1e-6,
        atol=1e-6,
    )


def test_a_prior_read_elsewhere_keeps_its_transition():
    model, x = _kalman_model(prior_as_output=True)
    exported = export_inference_model(model)
    kinds = [type(layer).__name__ for layer in exported.layers]
    assert "KalmanTransition" in kinds
    for ours, theirs in zip(exported(x), model(x), strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(ours),
            keras.ops.convert_to_numpy(theirs),
            rtol=1e-6,
            atol=1e-6,
        )
