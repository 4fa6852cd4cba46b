"""Shared checks every keraslayers layer goes through.

`check_layer` plays the role of the `run_layer_test` method of Keras's own
test case (keras/src/testing/test_case.py), through the public API only:

1. config round trip (``from_config(get_config())`` and Keras serialization),
2. weight counts once built,
3. symbolic output shape (KerasTensor, ``compute_output_shape``) and eager
   output shape,
4. one ``fit`` step with ``jit_compile=True`` (XLA on TensorFlow, ``jax.jit``
   on JAX) that gives a finite loss and moves the trainable weights,
5. a ``mixed_float16`` run: the output is float16, every float weight stays
   float32, and a compiled fit step still gives a finite loss,
6. a ``.keras`` save / load round trip, of the model trained in 4, whose
   inference outputs are identical, optionally also after loading in a
   fresh Python process (one process per test run loads every such model).
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import keras
import numpy as np

FLOAT_DTYPES = {"float16", "bfloat16", "float32", "float64"}


def _random_input(shape, seed: int = 0, dtype: str = "float32") -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype(dtype)


def _model_around(layer_factory, input_shape, dtype=None) -> keras.Model:
    inputs = keras.Input(shape=input_shape[1:], batch_size=None)
    layer = layer_factory(dtype)
    outputs = layer(inputs)
    return keras.Model(inputs, outputs)


def _target_for(model, batch_size, seed):
    return _random_input((batch_size, *model.output_shape[1:]), seed=seed)


def _weight_values(weights) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(w.value).copy() for w in weights]


def check_config_round_trip(layer: keras.layers.Layer) -> None:
    config = layer.get_config()
    json.dumps(config)  # the config must be JSON-serializable
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config, (
        f"{layer.__class__.__name__}: from_config(get_config()) changed the "
        "config"
    )
    serialized = keras.saving.serialize_keras_object(layer)
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(layer)
    assert revived.get_config() == config


def check_layer(
    layer_cls,
    init_kwargs: dict[str, Any],
    input_shape: tuple[int, ...],
    *,
    expected_output_shape: tuple[int, ...] | None = None,
    expected_num_trainable_weights: int | None = None,
    expected_num_non_trainable_weights: int | None = None,
    tmp_path: Path | None = None,
    run_training_check: bool = True,
    run_mixed_precision_check: bool = True,
    run_fresh_process_check: bool = False,
    training_steps: int = 1,
) -> None:
    """Runs the shared battery of layer checks; raises AssertionError."""
    expected_output_shape = expected_output_shape or tuple(input_shape)
    name = layer_cls.__name__

    # 1. Config round trip, before and after build.
    layer = layer_cls(**init_kwargs)
    check_config_round_trip(layer)

    # 2-3. Symbolic shapes, then build and weight counts, then eager shapes.
    symbolic_in = keras.KerasTensor(input_shape, dtype="float32")
    symbolic_out = layer(symbolic_in)
    assert tuple(symbolic_out.shape) == tuple(expected_output_shape), (
        f"{name}: symbolic output shape {symbolic_out.shape} != "
        f"{expected_output_shape}"
    )
    assert layer.built
    computed = layer.compute_output_shape(input_shape)
    assert tuple(computed) == tuple(expected_output_shape), (
        f"{name}: compute_output_shape gave {computed}"
    )
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights, (
            f"{name}: {len(layer.trainable_weights)} trainable weights, "
            f"expected {expected_num_trainable_weights}"
        )
    if expected_num_non_trainable_weights is not None:
        got = len(layer.non_trainable_weights)
        assert got == expected_num_non_trainable_weights, (
            f"{name}: {got} non-trainable weights, expected "
            f"{expected_num_non_trainable_weights}"
        )
    check_config_round_trip(layer)

    x = _random_input(input_shape, seed=1)
    for training in (False, True):
        eager_out = layer(x, training=training)
        assert tuple(eager_out.shape) == tuple(expected_output_shape)
        values = keras.ops.convert_to_numpy(eager_out)
        assert np.all(np.isfinite(values)), f"{name}: non-finite output"

    def factory(dtype):
        kwargs = dict(init_kwargs)
        if dtype is not None:
            kwargs["dtype"] = dtype
        return layer_cls(**kwargs)

    # 4. One compiled training step. The trained model is the one saved in
    # 6 (compiling a step is most of a check's time).
    trained = None
    if run_training_check:
        trained = _check_fit(factory, input_shape, None, name, training_steps)

    # 5. Mixed precision: float16 compute, float32 weights.
    if run_mixed_precision_check:
        mixed = factory("mixed_float16")
        out = mixed(x, training=True)
        assert keras.backend.standardize_dtype(out.dtype) == "float16", (
            f"{name}: mixed_float16 output has dtype {out.dtype}"
        )
        for w in mixed.weights:
            dtype = keras.backend.standardize_dtype(w.dtype)
            if dtype in FLOAT_DTYPES:
                assert dtype == "float32", (
                    f"{name}: weight {w.path} is {dtype} under mixed_float16"
                )
        if run_training_check:
            _check_fit(factory, input_shape, "mixed_float16", name, 1)

    # 6. Save / load round trip with identical inference outputs.
    if tmp_path is not None:
        check_save_load(
            factory,
            input_shape,
            tmp_path,
            fresh_process=run_fresh_process_check,
            trained=trained,
        )


def _check_fit(factory, input_shape, dtype, name, steps):
    model = _model_around(factory, input_shape, dtype)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.01),
        loss="mse",
        jit_compile=True,
    )
    x = _random_input(input_shape, seed=2)
    y = _target_for(model, input_shape[0], seed=3)
    before = _weight_values(model.trainable_weights)
    history = model.fit(
        x,
        y,
        batch_size=input_shape[0],
        epochs=steps,
        verbose=0,
        shuffle=False,
    )
    loss = history.history["loss"][-1]
    assert np.isfinite(loss), f"{name}: non-finite loss {loss} ({dtype})"
    after = _weight_values(model.trainable_weights)
    if before:
        moved = any(
            not np.array_equal(b, a) for b, a in zip(before, after, strict=True)
        )
        assert moved, f"{name}: a fit step left every trainable weight as is"
    return model


# One Python process per test run loads every model saved by a fresh-process
# check: it imports only Keras and keraslayers, so a model that loads there
# needs nothing the test process registered or built. Starting it once
# instead of once per check saves an interpreter start and a backend import
# (several seconds each) per check.
_LOADER_SCRIPT = textwrap.dedent(
    """
    import sys
    import traceback

    import numpy as np
    import keras
    import keraslayers  # noqa: F401  (registers the serializable classes)

    # Replies go to the real stdout, marked; anything else printed goes to
    # stderr.
    replies, sys.stdout = sys.stdout, sys.stderr
    for line in sys.stdin:
        model_path, x_path, out_path = line.rstrip("\\n").split("\\t")
        try:
            model = keras.saving.load_model(model_path)
            x = np.load(x_path)
            out = keras.ops.convert_to_numpy(model(x, training=False))
            np.save(out_path, out)
            reply = "ok"
        except Exception:
            reply = "error " + traceback.format_exc().replace("\\n", "\\r")
        replies.write("@@loader@@ " + reply + "\\n")
        replies.flush()
    """
)


class _FreshLoader:
    """The process that loads saved models for the fresh-process checks."""

    _process: subprocess.Popen | None = None

    @classmethod
    def predict(cls, model_path: Path, x_path: Path, out_path: Path) -> None:
        process = cls._process
        if process is None or process.poll() is not None:
            process = cls._process = subprocess.Popen(
                [sys.executable, "-c", _LOADER_SCRIPT],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env={**os.environ},
            )
            atexit.register(process.kill)
        process.stdin.write(f"{model_path}\t{x_path}\t{out_path}\n")
        process.stdin.flush()
        reply = ""
        for line in process.stdout:
            if line.startswith("@@loader@@ "):
                reply = line.removeprefix("@@loader@@ ").rstrip("\n")
                break
        if reply != "ok":
            cls._process = None
            process.kill()
            detail = reply.removeprefix("error ").replace("\r", "\n")
            raise AssertionError(
                f"a fresh process could not load {model_path}:\n"
                f"{detail or '(the process exited)'}"
            )


def check_save_load(
    factory, input_shape, tmp_path, fresh_process=False, trained=None
):
    """Saves a model around the layer trained a step (``trained``, or one
    trained here), reloads it and compares its inference outputs."""
    x = _random_input(input_shape, seed=4)
    model = trained
    if model is None:
        model = _model_around(factory, input_shape)
        model.compile(optimizer="adam", loss="mse", jit_compile=True)
        # One training step so that moving statistics and weights leave
        # their initial values: a round trip of untouched weights proves
        # little.
        y = _target_for(model, input_shape[0], seed=5)
        model.fit(x, y, batch_size=input_shape[0], epochs=1, verbose=0)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    path = Path(tmp_path) / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    got = keras.ops.convert_to_numpy(loaded(x, training=False))
    np.testing.assert_array_equal(got, expected)
    for w_orig, w_loaded in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(w_orig.value),
            keras.ops.convert_to_numpy(w_loaded.value),
        )
    if fresh_process:
        x_path = Path(tmp_path) / "x.npy"
        out_path = Path(tmp_path) / "out.npy"
        np.save(x_path, x)
        _FreshLoader.predict(path, x_path, out_path)
        np.testing.assert_array_equal(np.load(out_path), expected)


def train_briefly(layer, input_shape, steps: int = 5, seed: int = 0):
    """Trains a model around `layer` for a few compiled steps (Adam, large
    learning rate so the weights move far from their initial values)."""
    model = _model_around(lambda dtype: layer, input_shape)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.05),
        loss="mse",
        jit_compile=True,
    )
    x = _random_input((steps * input_shape[0], *input_shape[1:]), seed=seed)
    y = _random_input((len(x), *model.output_shape[1:]), seed=seed + 1)
    model.fit(x, y, batch_size=input_shape[0], epochs=1, verbose=0)
    return model
