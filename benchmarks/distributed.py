"""What synchronized batch statistics cost: training steps on two devices,
with and without `synchronized=True`, ratios measured side by side.

TensorFlow only (the backend where `synchronized` does anything): two
logical CPU devices and a `MirroredStrategy`, the global batch split in
two. Every layer is timed in both forms, with Keras's own
`BatchNormalization` (unsynchronized) as the baseline and its synchronized
form as the control, in interleaved rounds (`benchmarks.bench.measure`).
The step is a `tf.function` without XLA: XLA cannot compile a step whose
variables sit on two CPU devices under `MirroredStrategy`.

On a machine with two cores the two replicas share them, so the ratios
measure what the extra all-reduces and passes cost, not a speed-up.

Usage (writes the JSON and a Markdown table next to it):

    python -m benchmarks.distributed --out benchmarks/results/distributed.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras  # noqa: E402

import keraslayers  # noqa: E402
from benchmarks import bench  # noqa: E402

STRATEGY = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
GROUP = "two_devices"
BASELINE = "keras_bn"

LAYERS = {
    "keras_bn": lambda sync: keras.layers.BatchNormalization(synchronized=sync),
    "brn": lambda sync: keraslayers.BatchRenormalization(
        r_max=3.0, d_max=5.0, synchronized=sync
    ),
    "bkn": lambda sync: keraslayers.BatchKalmanNormalization(synchronized=sync),
    "dbn_g16": lambda sync: keraslayers.DecorrelatedBatchNormalization(
        group_size=16, synchronized=sync
    ),
    "iternorm_g16": lambda sync: keraslayers.IterativeNormalization(
        group_size=16, synchronized=sync
    ),
}

SHAPES = {"full": (32, 16, 16, 64), "quick": (4, 4, 4, 16)}


def variants(shape) -> list[bench.Variant]:
    out = []
    for name, make in LAYERS.items():
        for sync in (False, True):

            def build(make=make, sync=sync):
                with STRATEGY.scope():
                    return bench._after_affine([make(sync)], shape)

            label = f"{name}_sync" if sync else name
            out.append(bench.Variant(GROUP, label, build, shape))
    return out


def mirrored_runner(model, x, y, mode, xla):
    """`run(n)`: n training steps, each split over the two replicas (half
    the global batch each), the gradients all-reduced by the optimizer."""
    if mode != "train" or xla:
        raise ValueError("mirrored_runner: training steps without XLA only")
    loss_fn = keras.losses.MeanSquaredError(reduction="sum_over_batch_size")
    with STRATEGY.scope():
        optimizer = keras.optimizers.SGD(1e-3)
        optimizer.build(model.trainable_variables)
    half = x.shape[0] // 2

    def shard(array):
        return STRATEGY.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(
                array[ctx.replica_id_in_sync_group * half :][:half]
            )
        )

    xs, ys = shard(x), shard(y)
    variables = model.trainable_variables

    def step(xb, yb):
        with tf.GradientTape() as tape:
            # Each replica's loss is its share of the global mean.
            loss = loss_fn(yb, model(xb, training=True)) / 2
        grads = tape.gradient(loss, variables)
        optimizer.apply(grads, variables)
        return loss

    @tf.function
    def loop(n):
        i = tf.constant(0)
        while i < n:
            STRATEGY.run(step, args=(xs, ys))
            i += 1
        return i

    def call(n):
        loop(tf.constant(n, tf.int32)).numpy()

    return call


def add_ratios(results):
    """Ratio to Keras BN unsynchronized, and each synchronized layer's
    ratio to its own unsynchronized form (`sync_ratio`)."""
    by_name = {row["name"]: row for row in results}
    base = by_name[BASELINE]["median_ms"]
    for row in results:
        row["baseline"] = BASELINE
        row["ratio"] = row["median_ms"] / base
        if row["name"].endswith("_sync"):
            plain = by_name[row["name"].removesuffix("_sync")]
            row["sync_ratio"] = row["median_ms"] / plain["median_ms"]
    return results


def markdown(payload) -> str:
    m = payload["machine"]
    lines = [
        "# Synchronized batch statistics on two devices",
        "",
        f"{m['device']} ({m['processor']}, {m['cpu_count']} cores), "
        f"TensorFlow {m.get('tensorflow')}, Keras {m['keras']}, {m['date']}; "
        "two logical CPU devices, MirroredStrategy, no XLA; input "
        f"{tuple(payload['results'][0]['input_shape'])} (global batch).",
        "",
        "| layer | ms per step | ratio to Keras BN | synchronized / not |",
        "|---|---|---|---|",
    ]
    for row in payload["results"]:
        sync = row.get("sync_ratio")
        lines.append(
            f"| {row['name']} | {row['median_ms']:.2f} | {row['ratio']:.2f} "
            f"| {'' if sync is None else f'{sync:.2f}'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=list(SHAPES), default="full")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--min-call-seconds", type=float, default=0.2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    results = bench.measure(
        variants(SHAPES[args.size]),
        repeats=args.repeats,
        xla=False,
        min_call_seconds=args.min_call_seconds,
        log=lambda message: print(message, file=sys.stderr, flush=True),
        runner=mirrored_runner,
    )
    machine = bench.machine_info(xla=False)
    machine["devices"] = STRATEGY.num_replicas_in_sync
    payload = {
        "machine": machine,
        "repeats": args.repeats,
        "min_call_seconds": args.min_call_seconds,
        "results": add_ratios(results),
    }
    out = Path(args.out)
    out.write_text(json.dumps(payload, indent=1))
    out.with_suffix(".md").write_text(markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
