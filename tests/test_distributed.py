"""Batch statistics on two devices are the global batch's.

Each backend's check runs `tests/distributed_worker.py` in a process of its
own (devices are configured before the backend starts): TensorFlow with two
logical CPUs under `MirroredStrategy`, JAX with two host devices under
`keras.distribution.DataParallel`. The worker trains every layer on one
device and on two from the same initial weights and reports the largest
differences (forward pass in training mode, weights and moving statistics
after one step and after a short fit).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import keraslayers

WORKER = pathlib.Path(__file__).with_name("distributed_worker.py")
LAYERS = (
    "BatchRenormalization",
    "BatchKalmanNormalization",
    "DecorrelatedBatchNormalization",
    "IterativeNormalization",
)
# float32 sums in another order (all-reduce of two halves, then the
# eigendecomposition or Newton iterations): measured ≤ 4.7e-6 on outputs of
# size ~5, ≤ 1.5e-6 on weights.
AGREE = 3e-5
# Half-batch statistics on the worker's data move outputs by ~1 (measured
# 0.85-1.27) and weights after the short fit by ≥ 0.3.
DISAGREE = 1e-2


@pytest.fixture(scope="module")
def report():
    backend = keras.backend.backend()
    env = dict(os.environ, KERAS_BACKEND=backend)
    if backend == "jax":
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "")
            + " --xla_force_host_platform_device_count=2"
        ).strip()
    elif backend != "tensorflow":
        pytest.fail(f"no two-device check for the {backend} backend")
    done = subprocess.run(
        [sys.executable, str(WORKER)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("layer", LAYERS + ("keras.BatchNormalization",))
def test_synchronized_statistics_match_one_device(report, layer):
    result = report["results"][f"{layer} synchronized=True"]
    for quantity, difference in result.items():
        assert difference <= AGREE, (layer, quantity, difference)


def test_weight_norm_data_init_uses_the_global_batch(report):
    """WN's data-dependent initialization on two devices gives the offsets
    of the global first batch (before the fix, the mirrored offsets were
    the average of the two half-batch initializations: off by 0.2-0.37)."""
    for form in (False, True):
        result = report["results"][
            f"WeightNormDense data_init synchronized={form}"
        ]
        for quantity, difference in result.items():
            assert difference <= AGREE, (quantity, difference)


@pytest.mark.parametrize("layer", LAYERS)
def test_unsynchronized_statistics(report, layer):
    """TensorFlow: each replica normalizes with its own half batch (the
    check above would catch a synchronized layer that did not all-reduce).
    JAX: the layer is traced for the global batch, so the statistics are
    global without the flag."""
    result = report["results"][f"{layer} synchronized=False"]
    if report["backend"] == "tensorflow":
        assert result["forward"] > DISAGREE, result
        assert result["fit"] > DISAGREE, result
    else:
        for quantity, difference in result.items():
            assert difference <= AGREE, (layer, quantity, difference)


def test_batches_were_split_over_both_devices(report):
    assert report["shards"] and set(report["shards"]) == {2}, report["shards"]


MAKERS = {
    "BatchRenormalization": lambda **kw: keraslayers.BatchRenormalization(**kw),
    "BatchKalmanNormalization": lambda **kw: (
        keraslayers.BatchKalmanNormalization(**kw)
    ),
    "DecorrelatedBatchNormalization": lambda **kw: (
        keraslayers.DecorrelatedBatchNormalization(group_size=4, **kw)
    ),
    "IterativeNormalization": lambda **kw: keraslayers.IterativeNormalization(
        group_size=4, **kw
    ),
}


@pytest.mark.parametrize("layer", LAYERS)
def test_synchronized_outside_a_strategy_changes_nothing(layer):
    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32") + 3
    plain, synced = MAKERS[layer](), MAKERS[layer](synchronized=True)
    config = synced.get_config()
    assert config["synchronized"] is True
    assert type(synced).from_config(config).synchronized is True
    a = keras.ops.convert_to_numpy(plain(x, training=True))
    b = keras.ops.convert_to_numpy(synced(x, training=True))
    np.testing.assert_array_equal(a, b)
    for u, v in zip(plain.weights, synced.weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(u), keras.ops.convert_to_numpy(v)
        )
