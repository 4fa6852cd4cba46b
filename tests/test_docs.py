"""Every example in the docstrings and in the README runs as written and
does what it says."""

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import keras
import numpy as np
import pytest

import keraslayers

ROOT = Path(__file__).resolve().parents[1]
# Every public module of the installed package, found rather than listed,
# so that a new module's examples run too.
MODULES = ["keraslayers"] + [
    f"keraslayers.{info.name}"
    for info in pkgutil.iter_modules(keraslayers.__path__)
    if not info.name.startswith("_")
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run_as_written(name, tmp_path, monkeypatch):
    """Each docstring's examples run with nothing but what they import, as
    a user pasting them into a fresh interpreter would: empty globals, not
    the module's namespace (`python -m doctest` and `pytest
    --doctest-modules` lend the module's imports to its examples) and no
    names injected by the suite. An example that saves a file writes it
    into a temporary directory of its own, not the working directory."""
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False,
    )
    failures = []
    # The finder gives each docstring its own copy of the empty globals,
    # and skips the names a module imports (`__init__`'s re-exports).
    for test in finder.find(module, globs={}):
        runner.run(test, out=failures.append)
    assert not failures, "".join(failures)
    if name != "keraslayers":
        assert runner.tries > 0, f"{name} has no examples"
    assert list(tmp_path.iterdir()) == [], (
        f"an example of {name} wrote into the working directory"
    )


def _readme_section(title):
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {title}\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, f"README has no section {title!r}"
    return match.group(1)


# The layers whose training mode updates state: moving statistics, or
# weight normalization's data-dependent initialization.
STATEFUL = [
    keraslayers.BatchRenormalization,
    keraslayers.BatchKalmanNormalization,
    keraslayers.DecorrelatedBatchNormalization,
    keraslayers.IterativeNormalization,
    keraslayers.WeightNormDense,
    keraslayers.WeightNormConv2D,
    keraslayers.WeightNormalization,
]


@pytest.mark.backend_independent
@pytest.mark.parametrize("layer", STATEFUL, ids=lambda c: c.__name__)
def test_stateful_layers_point_to_the_training_pitfall(layer):
    section = _readme_section("Pitfalls")
    assert "training=training" in section
    assert layer.__name__ in section or "data_init" in section
    doc = " ".join(layer.__doc__.split())
    assert "`training=training`" in doc and '(README, "Pitfalls")' in doc


class Net(keras.Model):
    """A subclassed model with every stateful layer, side by side; `call`
    passes `training` on, omits it, or has no such argument."""

    def __init__(self, passes):
        super().__init__()
        self.passes = passes
        self.dense = keras.layers.Dense(8)
        self.norms = [
            keraslayers.BatchRenormalization(),
            keraslayers.BatchKalmanNormalization(),
            keraslayers.DecorrelatedBatchNormalization(group_size=4),
            keraslayers.IterativeNormalization(group_size=4),
            keras.layers.BatchNormalization(),  # Keras's own, the control
        ]
        self.weight_norm = keraslayers.WeightNormDense(8, data_init=True)

    def _forward(self, x, training):
        kwargs = {} if self.passes == "omits" else {"training": training}
        h = self.dense(x)
        outputs = [norm(h, **kwargs) for norm in self.norms]
        outputs.append(self.weight_norm(x, **kwargs))
        return keras.ops.sum(keras.ops.stack(outputs), axis=0)


class NetWithTraining(Net):
    def call(self, x, training=None):
        return self._forward(x, training)


class NetWithoutTraining(Net):
    def call(self, x):
        return self._forward(x, None)


def _state_moved(model):
    """Per layer, whether `fit` changed its state."""
    moved = {
        type(norm).__name__: bool(
            np.any(keras.ops.convert_to_numpy(norm.moving_mean) != 0)
        )
        for norm in model.norms
    }
    initialized = keras.ops.convert_to_numpy(model.weight_norm.initialized)
    moved["WeightNormDense data_init"] = bool(initialized == 1)
    return moved


@pytest.mark.parametrize("passes", ["passes", "omits", "has_no_argument"])
def test_the_readme_training_pitfall(passes):
    """README, "Pitfalls": with `training=training` passed on, `fit` moves
    every moving statistic and runs `data_init` on every backend; a
    `call` that omits it leaves them on JAX only; a `call` without a
    `training` argument leaves them on both."""
    x = np.random.default_rng(0).normal(3.0, 2.0, (64, 6)).astype("float32")
    y = np.zeros((64, 8), "float32")
    cls = NetWithoutTraining if passes == "has_no_argument" else None
    model = (cls or NetWithTraining)(passes)
    model.compile("sgd", "mse")
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    expected = {
        "passes": True,
        "omits": keras.backend.backend() != "jax",
        "has_no_argument": False,
    }[passes]
    moved = _state_moved(model)
    assert moved == dict.fromkeys(moved, expected), moved


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
