"""Every example in the docstrings and in the README runs as written and
does what it says."""

import doctest
import importlib
import re
from pathlib import Path

import keras
import numpy as np
import pytest

import keraslayers

ROOT = Path(__file__).resolve().parents[1]
MODULES = [
    "keraslayers.batch_kalman_normalization",
    "keraslayers.batch_renormalization",
    "keraslayers.export",
    "keraslayers.filter_response_normalization",
    "keraslayers.folding",
    "keraslayers.orthogonal",
    "keraslayers.weight_normalization",
    "keraslayers.weight_standardization",
    "keraslayers.whitening",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that save write here
    module = importlib.import_module(name)
    globs = {"keras": keras, "np": np, "keraslayers": keraslayers}
    globs.update({k: getattr(keraslayers, k) for k in keraslayers.__all__})
    result = doctest.testmod(
        module,
        globs=globs,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False,
    )
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} example(s) of {name} failed"


def _readme_python_blocks():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_readme_model_example_learns_and_folds():
    (block,) = [
        b for b in _readme_python_blocks() if "fold_batch_normalization" in b
    ]
    # Ten classes of 28x28 textures: stripes whose orientation is the
    # class, at a random phase, plus noise. Small convolutions see the
    # orientation anywhere, so the README's model can learn it.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, size=1280)
    rows, cols = np.mgrid[0:28, 0:28]
    angle = np.pi * y / 10
    phase = rng.uniform(0, 2 * np.pi, size=1280)
    wave = np.cos(
        2
        * np.pi
        / 5
        * (
            np.cos(angle)[:, None, None] * rows
            + np.sin(angle)[:, None, None] * cols
        )
        + phase[:, None, None]
    )
    x = (wave + rng.normal(0.0, 0.3, size=wave.shape))[..., None]
    x = x.astype("float32")
    keras.utils.set_random_seed(0)
    namespace = {"x_train": x, "y_train": y}
    exec(block, namespace)  # noqa: S102 (the README's own example)
    model, folded = namespace["model"], namespace["inference_model"]
    losses = model.history.history["loss"]
    accuracy = model.history.history["accuracy"][-1]
    assert losses[-1] < 0.5 * losses[0], losses
    assert accuracy > 0.5, accuracy
    assert not any(
        isinstance(layer, keraslayers.BatchRenormalization)
        for layer in folded.layers
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(folded(x[:16])),
        keras.ops.convert_to_numpy(model(x[:16], training=False)),
        rtol=1e-4,
        atol=1e-4,
    )
