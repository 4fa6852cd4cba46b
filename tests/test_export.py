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
