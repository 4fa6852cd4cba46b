"""Two simulated devices for the book: what each replica normalizes with.

Run as a script in a process of its own (devices are configured before
TensorFlow starts), whatever backend the book runs on:

    KERAS_BACKEND=tensorflow python -m normbook.two_devices 2 4 8 32

For every per-device batch size given, every layer is built twice from the
same seed and fed the same global batch: once on one device, once split over
two replicas of a `MirroredStrategy` (two logical CPUs), without and with
`synchronized=True`. Prints one JSON object: per layer, form and batch size,
the largest difference between the two-replica and the one-device output in
training mode, in units of the one-device output's standard deviation.
Chapters call it through :func:`normbook.two_devices.measure`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

FEATURES = 16


def measure(per_device_batches=(2, 4, 8, 32)) -> dict:
    """Runs this module in a fresh TensorFlow process; returns its report."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [here, *filter(None, [env.get("PYTHONPATH")])]
    )
    done = subprocess.run(
        [sys.executable, "-m", "normbook.two_devices"]
        + [str(b) for b in per_device_batches],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode:
        raise RuntimeError(
            "normbook.two_devices failed:\n" + done.stderr[-3000:]
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _layers(synchronized):
    import keras

    import keraslayers

    flag = {"synchronized": synchronized}
    return {
        "BN (Keras)": lambda: keras.layers.BatchNormalization(**flag),
        # Fixed bounds (the paper's final ones), as the comparison was built.
        "BRN": lambda: keraslayers.BatchRenormalization(
            r_max=3.0, d_max=5.0, **flag
        ),
        "BKN": lambda: keraslayers.BatchKalmanNormalization(**flag),
        "DBN, groups of 8": lambda: keraslayers.DecorrelatedBatchNormalization(
            group_size=8, **flag
        ),
        "IterNorm, groups of 8": lambda: keraslayers.IterativeNormalization(
            group_size=8, **flag
        ),
    }


def _main(per_device_batches):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    import numpy as np

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    report = {"replicas": strategy.num_replicas_in_sync, "results": []}
    for batch in per_device_batches:
        # Channels with unequal means and scales, and correlated (a random
        # mixing), as a layer's pre-activations are.
        mixing = rng.normal(size=(FEATURES, FEATURES)) / np.sqrt(FEATURES)
        x = rng.normal(size=(2 * batch, FEATURES)) @ mixing
        x = (x * np.linspace(0.5, 3.0, FEATURES) + 1.0).astype("float32")
        for synchronized in (False, True):
            for name, make in _layers(synchronized).items():
                single = make()
                reference = single(x, training=True).numpy()
                with strategy.scope():
                    layer = make()
                    layer.build(x.shape)
                dataset = tf.data.Dataset.from_tensor_slices(x).batch(len(x))
                inputs = next(
                    iter(strategy.experimental_distribute_dataset(dataset))
                )
                # Traced, so that the replicas' all-reduces run in order.
                out = tf.function(
                    lambda b, layer=layer: strategy.run(
                        lambda t: layer(t, training=True), args=(b,)
                    )
                )(inputs)
                parts = strategy.experimental_local_results(out)
                two = np.concatenate([p.numpy() for p in parts])
                scale = float(reference.std())
                report["results"].append(
                    {
                        "layer": name,
                        "synchronized": synchronized,
                        "per_device_batch": batch,
                        "difference": float(np.abs(two - reference).max())
                        / scale,
                    }
                )
                keras.backend.clear_session()
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    _main([int(b) for b in sys.argv[1:]] or [2, 4, 8, 32])
