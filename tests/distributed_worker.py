"""Two simulated devices: does each batch-statistics layer see the global
batch? Run as ``python tests/distributed_worker.py`` with KERAS_BACKEND set;
prints one JSON object (see `tests/test_distributed.py`).

Devices must be configured before the backend starts, hence a process of its
own: TensorFlow gets two logical CPUs and a `MirroredStrategy`; JAX gets two
host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``, set by
the caller) and `keras.distribution.DataParallel`.

For every layer, one model is trained on one device and a copy with the same
initial weights on the two devices (with the synchronized flag off and on),
on the same global batches in the same order; the report gives the largest
difference of

* the training-mode outputs of one forward pass on a global batch,
* every weight (trainable and moving statistics) after one training step,
* every weight after a short `fit` (4 epochs of 4 batches).
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BACKEND = os.environ["KERAS_BACKEND"]

if BACKEND == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keraslayers  # noqa: E402

GLOBAL_BATCH = 64
FEATURES = 16
# How many devices held a part of each forward batch (TensorFlow: replicas
# that returned a part; JAX: shards of the input array).
SHARDS = []


def layers(synchronized: bool):
    """The layers under test, keyed by name; the control is Keras's own
    BatchNormalization (synchronized only exists on TensorFlow)."""
    flag = {"synchronized": synchronized}
    made = {
        "BatchRenormalization": lambda: keraslayers.BatchRenormalization(
            **flag
        ),
        "BatchKalmanNormalization": lambda: (
            keraslayers.BatchKalmanNormalization(prior_weight=0.5, **flag)
        ),
        "DecorrelatedBatchNormalization": lambda: (
            keraslayers.DecorrelatedBatchNormalization(group_size=8, **flag)
        ),
        "IterativeNormalization": lambda: keraslayers.IterativeNormalization(
            group_size=8, **flag
        ),
    }
    # Weight normalization's data-dependent initialization reads the first
    # batch: always the global one (it has no flag).
    made["WeightNormDense data_init"] = lambda: keraslayers.WeightNormDense(
        FEATURES, data_init=True
    )
    control = {"synchronized": synchronized} if BACKEND == "tensorflow" else {}
    made["keras.BatchNormalization"] = lambda: keras.layers.BatchNormalization(
        **control
    )
    return made


def build(make_layer):
    # Inputs with a large mean and unequal scales, so that half-batch
    # statistics differ clearly from the global batch's.
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(FEATURES),
            make_layer(),
            keras.layers.ReLU(),
            keras.layers.Dense(4),
        ]
    )


def data():
    rng = np.random.default_rng(0)
    # The first and second half of every batch come from different
    # distributions (as when each device holds another shard): what the
    # per-device statistics get most wrong.
    n = GLOBAL_BATCH * 4
    x = rng.normal(size=(n, FEATURES)) * np.linspace(0.5, 4.0, FEATURES)
    x = x + 2.0
    half = (np.arange(n) % GLOBAL_BATCH) >= GLOBAL_BATCH // 2
    x[half] = x[half] * 1.5 - 3.0
    y = rng.normal(size=(n, 4))
    return x.astype("float32"), y.astype("float32")


def compile_model(model):
    # XLA cannot compile a step whose variables live on two CPU devices
    # under MirroredStrategy (TensorFlow's "variable on a different
    # device" limitation, Keras's own BatchNormalization included), so the
    # TensorFlow two-device runs are compiled as tf.functions.
    model.compile(
        optimizer=keras.optimizers.SGD(0.05),
        loss="mse",
        jit_compile=BACKEND != "tensorflow",
    )


def weights_of(model):
    return [np.asarray(keras.ops.convert_to_numpy(w)) for w in model.weights]


def largest_difference(a, b):
    return float(max(np.max(np.abs(u - v)) for u, v in zip(a, b, strict=True)))


def forward(model, x, strategy=None):
    if strategy is None:
        return np.asarray(keras.ops.convert_to_numpy(model(x, training=True)))
    if BACKEND == "jax":
        # The batch laid out as the trainer lays it out: split over the
        # devices along the batch axis.
        layout = strategy.get_data_layout(x.shape)
        sharded = keras.distribution.distribute_tensor(x, layout)
        SHARDS.append(len(sharded.addressable_shards))
        return np.asarray(
            keras.ops.convert_to_numpy(model(sharded, training=True))
        )
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(GLOBAL_BATCH)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    # Traced, as fit traces its steps: replicas run eagerly in threads
    # would issue their all-reduces in an unspecified order.
    out = tf.function(
        lambda b: strategy.run(lambda t: model(t, training=True), args=(b,))
    )(batch)
    parts = strategy.experimental_local_results(out)
    SHARDS.append(len(parts))
    return np.concatenate([p.numpy() for p in parts])


def measurements(model, initial, x, y, strategy=None):
    """From the same initial weights: the training-mode output on the first
    global batch, the weights after one step, the weights after 4 epochs."""
    batch = x[:GLOBAL_BATCH]
    out = {"forward": forward(model, batch, strategy)}
    for key, data, epochs in (
        ("step", (batch, y[:GLOBAL_BATCH]), 1),
        ("fit", (x, y), 4),
    ):
        model.set_weights(initial)
        model.fit(
            *data,
            batch_size=GLOBAL_BATCH,
            epochs=epochs,
            shuffle=False,
            verbose=0,
        )
        out[key] = weights_of(model)
    return out


def one_device(make_layer, x, y):
    """The initial weights and the measurements on one device."""
    keras.utils.set_random_seed(0)
    reference = build(make_layer)
    initial = reference.get_weights()
    compile_model(reference)
    return initial, measurements(reference, initial, x, y)


def two_devices(make_layer, x, y, distributed, initial, one):
    """The measurements on two devices from the same initial weights;
    returns the three largest differences from ``one``."""
    keras.utils.set_random_seed(0)
    with distributed() as strategy:
        model = build(make_layer)
        model.set_weights(initial)
        compile_model(model)
        two = measurements(model, initial, x, y, strategy)
    return {
        "forward": float(np.max(np.abs(one["forward"] - two["forward"]))),
        "step": largest_difference(one["step"], two["step"]),
        "fit": largest_difference(one["fit"], two["fit"]),
    }


def configuration(make_layer):
    layer = make_layer()
    config = {k: v for k, v in layer.get_config().items() if k != "name"}
    return type(layer).__name__, json.dumps(config, sort_keys=True)


class TwoReplicas:
    """TensorFlow: a MirroredStrategy over the two logical CPUs."""

    strategy = None

    def __enter__(self):
        # One strategy for the process: a second MirroredStrategy reuses
        # the first one's collective instance keys, and their all-reduces
        # then collide.
        if TwoReplicas.strategy is None:
            TwoReplicas.strategy = tf.distribute.MirroredStrategy(
                ["/cpu:0", "/cpu:1"]
            )
        self.strategy = TwoReplicas.strategy
        self.scope = self.strategy.scope()
        self.scope.__enter__()
        return self.strategy

    def __exit__(self, *exc):
        self.scope.__exit__(*exc)


class DataParallel:
    """JAX: keras.distribution.DataParallel over the two host devices."""

    def __enter__(self):
        import jax

        devices = jax.devices()
        if len(devices) != 2:
            raise RuntimeError(f"expected 2 JAX devices, found {devices}")
        distribution = keras.distribution.DataParallel(devices=devices)
        keras.distribution.set_distribution(distribution)
        return distribution

    def __exit__(self, *exc):
        keras.distribution.set_distribution(None)


def main():
    x, y = data()
    distributed = TwoReplicas if BACKEND == "tensorflow" else DataParallel
    report = {"backend": BACKEND, "results": {}}
    # One device: `synchronized` changes nothing without a strategy
    # (tests/test_distributed.py checks that), so each layer's reference
    # is measured once, with the flag off, for both forms. Two devices: a
    # form whose configuration is the same as the other's (weight
    # normalization has no flag; Keras's BN on JAX takes none) is measured
    # once and reported under both names.
    references = {
        name: one_device(make_layer, x, y)
        for name, make_layer in layers(False).items()
    }
    measured = {}
    for synchronized in (False, True):
        for name, make_layer in layers(synchronized).items():
            same = configuration(make_layer)
            if same not in measured:
                measured[same] = two_devices(
                    make_layer, x, y, distributed, *references[name]
                )
            report["results"][f"{name} synchronized={synchronized}"] = measured[
                same
            ]
    report["shards"] = SHARDS
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
