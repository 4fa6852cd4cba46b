"""Side-by-side cost of the normalizers: compiled training steps, ratios to
baselines measured in the same process.

Each variant is a small model around one layer (the activation
normalizers behind a trainable affine layer, so that the gradient with
respect to their input is computed too). Its training step (forward,
backward, SGD update) is compiled into a loop of `n` steps over one
device-resident batch, so neither host-to-device copies nor Python
overhead enter the timing:

* TensorFlow: a `tf.function` (with `jit_compile=True` for XLA, or without)
  looping with `tf.range`;
* JAX: `jax.jit` of a `lax.fori_loop` over the stateless train step.

Each comparison group runs in several fresh processes (ratios measured in
one long process drifted with what it had run before). In each, the
group's variants are compiled and warmed up first, `n` is doubled until a
call lasts at least `min_call_seconds`, then every variant is timed once
per round, in interleaved rounds. Reported: per process the median time per
step and its ratio to the group's baseline; merged, the median over
processes and the range of the ratios (the run-to-run spread).

Usage (one backend per command; `make bench` runs all three and the
report):

    KERAS_BACKEND=tensorflow python -m benchmarks.bench --xla on  --out r.json
    KERAS_BACKEND=tensorflow python -m benchmarks.bench --xla off --out r.json
    KERAS_BACKEND=jax        python -m benchmarks.bench --out r.json
    ... --groups activation_conv,whitening --processes 1   # a subset
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keraslayers  # noqa: E402
from benchmarks import roofline  # noqa: E402


@keras.saving.register_keras_serializable(package="benchmarks")
class Affine(keras.layers.Layer):
    """x·γ + β per channel: the least a layer that reads and writes the
    tensor must pay."""

    def build(self, input_shape):
        shape = (input_shape[-1],)
        self.gamma = self.add_weight(shape=shape, initializer="ones")
        self.beta = self.add_weight(shape=shape, initializer="zeros")

    def call(self, x):
        return x * self.gamma + self.beta

    def compute_output_shape(self, input_shape):
        return input_shape


@dataclass
class Variant:
    group: str  # which comparison it belongs to
    name: str
    build: Callable[[], keras.Model]
    input_shape: tuple[int, ...]
    mode: str = "train"  # or "infer"


def _around(layers, input_shape):
    return keras.Sequential([keras.Input(input_shape[1:]), *layers])


def _after_affine(layers, input_shape):
    """The layers behind an `Affine`: a trainable layer in front makes the
    step compute the gradient with respect to the normalizer's input, as
    in any real network (without it the backward pass through the
    normalization is pruned away, and BN's costliest part goes unmeasured).
    """
    return _around([Affine(), *layers], input_shape)


def activation_variants(conv_shape, dense_shape) -> list[Variant]:
    out = []
    for kind, shape in (("conv", conv_shape), ("dense", dense_shape)):
        c = shape[-1]
        layers = {
            "affine": lambda: [Affine()],
            "keras_bn": lambda: [keras.layers.BatchNormalization()],
            "keras_gn": lambda c=c: [
                keras.layers.GroupNormalization(groups=min(32, c))
            ],
            # Fixed bounds: the scheduled default adds a step counter and
            # two ramps, which the recorded results did not time.
            "brn": lambda: [
                keraslayers.BatchRenormalization(r_max=3.0, d_max=5.0)
            ],
            "frn": lambda shape=shape: [
                keraslayers.FilterResponseNormalization(
                    learned_epsilon=len(shape) == 2
                )
            ],
            "frn_tlu": lambda shape=shape: [
                keraslayers.FilterResponseNormalization(
                    learned_epsilon=len(shape) == 2
                ),
                keraslayers.TLU(),
            ],
            "bkn": lambda: [keraslayers.BatchKalmanNormalization()],
            "dbn16": lambda: [
                keraslayers.DecorrelatedBatchNormalization(group_size=16)
            ],
            "iternorm16": lambda: [
                keraslayers.IterativeNormalization(group_size=16)
            ],
        }
        # An A/A control: Keras BN again, built and timed as a separate
        # variant. Its ratio to keras_bn is the noise floor of the group.
        layers["keras_bn_again"] = layers["keras_bn"]
        for name, make in layers.items():
            out.append(
                Variant(
                    f"activation_{kind}",
                    name,
                    lambda make=make, shape=shape: _after_affine(make(), shape),
                    shape,
                )
            )
    return out


def whitening_variants(shape) -> list[Variant]:
    out = []
    for size in (16, 32, 64):
        out.append(
            Variant(
                "whitening",
                f"dbn_g{size}",
                lambda size=size: _after_affine(
                    [keraslayers.DecorrelatedBatchNormalization(size)], shape
                ),
                shape,
            )
        )
        for t in (5, 10):
            out.append(
                Variant(
                    "whitening",
                    f"iternorm_g{size}_t{t}",
                    lambda size=size, t=t: _after_affine(
                        [keraslayers.IterativeNormalization(size, t)], shape
                    ),
                    shape,
                )
            )
    return out


WEIGHT_LAYERS = {
    "plain": (keras.layers.Dense, keras.layers.Conv2D, {}),
    "wn": (keraslayers.WeightNormDense, keraslayers.WeightNormConv2D, {}),
    "cwn": (
        keraslayers.CenteredWeightNormDense,
        keraslayers.CenteredWeightNormConv2D,
        {},
    ),
    "orth_eigh": (
        keraslayers.OrthogonalDense,
        keraslayers.OrthogonalConv2D,
        {"orthogonalization": "eigh"},
    ),
    "orth_newton": (
        keraslayers.OrthogonalDense,
        keraslayers.OrthogonalConv2D,
        {"orthogonalization": "newton"},
    ),
    # The group-size knob: ONI on groups of (at most) 64 output units.
    "orth_newton_g64": (
        keraslayers.OrthogonalDense,
        keraslayers.OrthogonalConv2D,
        {"orthogonalization": "newton", "group_size": 64},
    ),
    "ws": (
        keraslayers.WeightStandardizedDense,
        keraslayers.WeightStandardizedConv2D,
        {},
    ),
}


def _fit_group(kwargs, units, fan_in):
    """A requested group size capped at what the layer allows: the largest
    divisor of the units that centered rows of this fan-in can make
    orthonormal."""
    if "group_size" in kwargs:
        cap = keraslayers.orthogonal.default_group_size(units, fan_in)
        return {**kwargs, "group_size": min(kwargs["group_size"], cap)}
    return kwargs


def weight_variants(sizes) -> list[Variant]:
    out = []
    for size_name, (batch, units, conv_hw, filters) in sizes.items():
        for name, (dense_cls, conv_cls, kwargs) in WEIGHT_LAYERS.items():
            dense_shape = (batch, units)
            out.append(
                Variant(
                    f"weight_dense_{size_name}",
                    name,
                    lambda c=dense_cls, k=kwargs, u=units, s=dense_shape: (
                        _around([c(u, **_fit_group(k, u, s[-1]))], s)
                    ),
                    dense_shape,
                )
            )
            # Fewer images for convolutions: XLA's CPU convolutions are
            # slow, and the kernel-side cost is what differs between the
            # variants.
            conv_shape = (max(batch // 16, 2), conv_hw, conv_hw, filters)
            out.append(
                Variant(
                    f"weight_conv_{size_name}",
                    name,
                    lambda c=conv_cls, k=kwargs, f=filters, s=conv_shape: (
                        _around(
                            [
                                c(
                                    f,
                                    3,
                                    padding="same",
                                    **_fit_group(k, f, 9 * s[-1]),
                                )
                            ],
                            s,
                        )
                    ),
                    conv_shape,
                )
            )
    return out


def inference_variants(shape) -> list[Variant]:
    def bn_model():
        return _around(
            [
                keras.layers.Dense(shape[-1], use_bias=False),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
                keras.layers.Dense(shape[-1]),
            ],
            shape,
        )

    def plain_model():
        return _around(
            [
                keras.layers.Dense(shape[-1]),
                keras.layers.ReLU(),
                keras.layers.Dense(shape[-1]),
            ],
            shape,
        )

    def orth_model():
        return _around(
            [
                keraslayers.OrthogonalDense(shape[-1]),
                keras.layers.ReLU(),
                keraslayers.OrthogonalDense(shape[-1]),
            ],
            shape,
        )

    return [
        Variant("inference", "plain", plain_model, shape, "infer"),
        # A/A control: the same model again (the folded model is layer for
        # layer identical to it, so this is what its ratio should be).
        Variant("inference", "plain_again", plain_model, shape, "infer"),
        Variant("inference", "with_bn", bn_model, shape, "infer"),
        Variant(
            "inference",
            "bn_folded",
            lambda: keraslayers.fold_batch_normalization(bn_model()),
            shape,
            "infer",
        ),
        Variant("inference", "orthogonal", orth_model, shape, "infer"),
        Variant(
            "inference",
            "orthogonal_exported",
            lambda: keraslayers.export_inference_model(orth_model()),
            shape,
            "infer",
        ),
    ]


# --------------------------------------------------------------------------
# Compiled loops
# --------------------------------------------------------------------------


def _runner(model, x, y, mode, xla):
    """A callable `run(n)` that performs `n` compiled steps and waits for
    them. `n` is a runtime argument of the compiled loop, so calibrating it
    does not recompile."""
    backend = keras.backend.backend()
    loss_fn = keras.losses.MeanSquaredError()
    optimizer = keras.optimizers.SGD(1e-3)
    optimizer.build(model.trainable_variables)
    if backend == "jax":
        import jax

        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in optimizer.variables],
        )
        x, y = jax.device_put(x), jax.device_put(y)

        def loss_and_state(tv, ntv):
            out, ntv = model.stateless_call(tv, ntv, x, training=True)
            return loss_fn(y, out), ntv

        grad_fn = jax.value_and_grad(loss_and_state, has_aux=True)

        def train_body(i, state):
            tv, ntv, ov = state
            (_, ntv), grads = grad_fn(tv, ntv)
            tv, ov = optimizer.stateless_apply(ov, grads, tv)
            return tv, ntv, ov

        def infer_body(i, carry):
            tv, ntv, acc = carry
            out, _ = model.stateless_call(tv, ntv, x + acc, training=False)
            return tv, ntv, acc + 1e-9 * out.mean()

        if mode == "train":
            loop = jax.jit(lambda s, n: jax.lax.fori_loop(0, n, train_body, s))
        else:
            loop = jax.jit(
                lambda s, n: jax.lax.fori_loop(
                    0, n, infer_body, (s[0], s[1], 0.0)
                )
            )

        def call(n):
            nonlocal state
            result = loop(state, np.int32(n))
            jax.block_until_ready(result)
            if mode == "train":
                state = result

        return call

    import tensorflow as tf

    xs, ys = tf.constant(x), tf.constant(y)
    variables = model.trainable_variables

    # `while i < n` rather than `for _ in tf.range(n)`: AutoGraph gives a
    # range loop `maximum_iterations=n`, which XLA needs as a compile-time
    # constant, so every new `n` recompiled (~0.1 s, which the calibration
    # then took for run time).
    @tf.function(jit_compile=xla)
    def train_loop(n):
        loss = tf.constant(0.0)
        i = tf.constant(0)
        while i < n:
            with tf.GradientTape() as tape:
                loss = loss_fn(ys, model(xs, training=True))
            grads = tape.gradient(loss, variables)
            optimizer.apply(grads, variables)
            i += 1
        return loss

    @tf.function(jit_compile=xla)
    def infer_loop(n):
        acc = tf.constant(0.0)
        i = tf.constant(0)
        while i < n:
            # The accumulator makes each step depend on the previous one,
            # so the loop cannot be collapsed into one evaluation.
            out = model(xs + acc, training=False)
            acc = acc + 1e-9 * tf.reduce_mean(out)
            i += 1
        return acc

    loop = train_loop if mode == "train" else infer_loop

    def call(n):
        loop(tf.constant(n, tf.int32)).numpy()

    return call


def _seconds(run, n):
    start = time.perf_counter()
    run(n)
    return time.perf_counter() - start


def measure(
    variants,
    repeats,
    xla,
    min_call_seconds=0.1,
    max_steps=100_000,
    warmup=2,
    log=print,
    runner=None,
    limits=None,
):
    """Times every variant: compile and warm up all of them, calibrate the
    steps per call so that one call lasts at least `min_call_seconds`, then
    `repeats` interleaved rounds (every variant once per round, the order
    rotated between rounds so that none always follows the same one).
    `runner(model, x, y, mode, xla)` makes the timed loop (default: one
    device; `benchmarks.distributed` passes a two-replica one). With
    `limits` (a `roofline.Limits`), each row also gets the step's counted
    FLOPs and bytes and its floor on this machine."""
    runner = runner or _runner
    rng = np.random.default_rng(0)
    runners, steps, counts = [], [], []
    for i, variant in enumerate(variants):
        keras.utils.set_random_seed(i)
        model = variant.build()
        counts.append(_counts(model, variant, limits) if limits else {})
        x = rng.normal(size=variant.input_shape).astype("float32")
        y = rng.normal(size=(variant.input_shape[0], *model.output_shape[1:]))
        run = runner(model, x, y.astype("float32"), variant.mode, xla)
        for _ in range(warmup):
            run(1)
        # Doubling rather than extrapolating from one step: a one-step call
        # is mostly dispatch overhead for a small layer.
        n = 1
        while n < max_steps and _seconds(run, n) < min_call_seconds:
            n = min(2 * n, max_steps)
        run(n)
        runners.append(run)
        steps.append(n)
        log(f"  compiled {variant.group}/{variant.name}: {n} steps per call")
    times = [[] for _ in variants]
    order = list(range(len(variants)))
    for r in range(repeats):
        for i in order[r % len(order) :] + order[: r % len(order)]:
            times[i].append(_seconds(runners[i], steps[i]) / steps[i])
        log(f"  round {r + 1}/{repeats} done")
    results = []
    for variant, n, samples, count in zip(
        variants, steps, times, counts, strict=True
    ):
        q = np.percentile(samples, [25, 50, 75])
        if count:
            count["over_floor"] = float(q[1] * 1e3 / count["floor_ms"])
        results.append(
            {
                **count,
                "group": variant.group,
                "name": variant.name,
                "input_shape": list(variant.input_shape),
                "mode": variant.mode,
                "steps_per_call": n,
                "median_ms": float(q[1] * 1e3),
                "iqr_ms": [float(q[0] * 1e3), float(q[2] * 1e3)],
                "samples_ms": [float(s * 1e3) for s in samples],
            }
        )
    return results


def _counts(model, variant, limits):
    """The step's counted work and its floor (see `benchmarks.roofline`);
    for a reparameterized kernel also the kernel side's own floor."""
    batch = variant.input_shape[0]
    flops, nbytes, layers = roofline.step_counts(model, batch, variant.mode)
    # Bandwidth at the size of the step's largest tensor.
    elements = max(
        [math.prod(variant.input_shape)]
        + [math.prod(w.shape) for w in model.weights]
    )
    count = {
        "flops": flops,
        "bytes": nbytes,
        "layer_counts": layers,
        "floor_ms": 1e3 * limits.floor(flops, nbytes, elements),
        "bound": (
            "compute"
            if flops / limits.flops_per_s
            > nbytes / limits.bytes_per_s(elements)
            else "memory"
        ),
        "bytes_per_s": limits.bytes_per_s(elements),
    }
    own = [
        roofline._kernel_side(layer, batch)
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    own_flops = sum(f for f, _ in own)
    if own_flops:
        own_bytes = sum(b for _, b in own)
        count["kernel_side"] = {
            "flops": own_flops,
            "bytes": own_bytes,
            "floor_ms": 1e3 * limits.floor(own_flops, own_bytes, elements),
        }
    return count


BASELINES = {
    "activation_conv": "keras_bn",
    "activation_dense": "keras_bn",
    "whitening": "dbn_g64",
    "inference": "plain",
}


def add_ratios(results):
    by_group = {}
    for row in results:
        by_group.setdefault(row["group"], {})[row["name"]] = row
    for group, rows in by_group.items():
        baseline = BASELINES.get(group, "plain")
        base = rows.get(baseline)
        for row in rows.values():
            row["baseline"] = baseline
            row["ratio"] = (
                row["median_ms"] / base["median_ms"] if base else None
            )
    return results


def machine_info(xla):
    backend = keras.backend.backend()
    info = {
        "backend": backend,
        "xla": bool(xla) if backend == "tensorflow" else True,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    if backend == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        gpus = tf.config.list_physical_devices("GPU")
        info["device"] = "GPU" if gpus else "CPU"
    else:
        import jax

        info["jax"] = jax.__version__
        info["device"] = jax.devices()[0].platform.upper()
    return info


SIZES = {
    "quick": {
        "conv": (4, 4, 4, 16),
        "dense": (8, 32),
        "whiten": (16, 64),
        "weights": {"small": (8, 16, 4, 16)},
        "repeats": 2,
        "min_call_seconds": 0.0,
        "processes": 1,
    },
    "full": {
        "conv": (32, 16, 16, 64),
        "dense": (256, 512),
        "whiten": (512, 256),
        "weights": {
            "small": (128, 64, 8, 16),
            "medium": (128, 256, 16, 64),
            "large": (128, 512, 16, 128),
        },
        "repeats": 7,
        "min_call_seconds": 0.1,
        "processes": 3,
    },
}


def all_variants(size) -> list[Variant]:
    return (
        activation_variants(size["conv"], size["dense"])
        + whitening_variants(size["whiten"])
        + weight_variants(size["weights"])
        + inference_variants(size["dense"])
    )


def group_names(variants) -> list[str]:
    return list(dict.fromkeys(v.group for v in variants))


def merge_processes(per_process: list[list[dict]]) -> list[dict]:
    """One row per variant from the same group timed in several processes:
    the median over processes of each process's median and ratio, and the
    range of the per-process ratios (the run-to-run spread)."""
    merged = []
    for rows in zip(*per_process, strict=True):
        first = rows[0]
        ratios = [r["ratio"] for r in rows]
        known = [r for r in ratios if r is not None]
        merged.append(
            {
                **{k: first[k] for k in ("group", "name", "input_shape")},
                **{k: first[k] for k in ("mode", "baseline")},
                "processes": len(rows),
                "steps_per_call": [r["steps_per_call"] for r in rows],
                "median_ms": float(np.median([r["median_ms"] for r in rows])),
                "iqr_ms": [
                    float(np.median([r["iqr_ms"][0] for r in rows])),
                    float(np.median([r["iqr_ms"][1] for r in rows])),
                ],
                "process_medians_ms": [r["median_ms"] for r in rows],
                "samples_ms": [s for r in rows for s in r["samples_ms"]],
                "ratio": float(np.median(known)) if known else None,
                "process_ratios": ratios,
                "ratio_range": [min(known), max(known)] if known else None,
            }
        )
        if "floor_ms" in first:
            over = [r["over_floor"] for r in rows]
            merged[-1].update(
                {
                    k: first[k]
                    for k in ("flops", "bytes", "layer_counts", "bound")
                    if k in first
                }
            )
            merged[-1]["floor_ms"] = float(
                np.median([r["floor_ms"] for r in rows])
            )
            merged[-1]["over_floor"] = float(np.median(over))
            merged[-1]["over_floor_range"] = [min(over), max(over)]
            if "kernel_side" in first:
                merged[-1]["kernel_side"] = {
                    **first["kernel_side"],
                    "floor_ms": float(
                        np.median([r["kernel_side"]["floor_ms"] for r in rows])
                    ),
                }
    return merged


def _run_group_in_subprocess(args, group, out):
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench",
        "--xla",
        args.xla,
        "--size",
        args.size,
        "--groups",
        group,
        "--processes",
        "0",
        "--out",
        str(out),
    ]
    subprocess.run(command, check=True)
    return json.loads(Path(out).read_text())


def _updated(old: dict, new: dict) -> dict:
    """`old` with the groups measured in `new` replaced (kept in place),
    and the date of each partial run recorded."""
    if old["machine"]["backend"] != new["machine"]["backend"] or (
        old["machine"]["xla"] != new["machine"]["xla"]
    ):
        raise SystemExit("--update: the file holds another backend's run")
    fresh = {}
    for row in new["results"]:
        fresh.setdefault(row["group"], []).append(row)
    results, seen = [], set()
    for row in old["results"]:
        group = row["group"]
        if group in fresh:
            if group not in seen:
                results += fresh[group]
                seen.add(group)
        else:
            results.append(row)
    results += [r for g, rows in fresh.items() if g not in seen for r in rows]
    updates = old.get("updates", []) + [
        {"date": new["machine"]["date"], "groups": list(fresh)}
    ]
    limits = old.get("limits", []) + new.get("limits", [])
    return {**old, "results": results, "updates": updates, "limits": limits}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--xla", choices=["on", "off"], default="on")
    parser.add_argument("--size", choices=list(SIZES), default="full")
    parser.add_argument(
        "--groups",
        default="all",
        help="comma-separated comparison groups (default: all)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="independent processes per group (default: "
        f"{SIZES['full']['processes']} for the full size); 0 runs the "
        "groups in this process",
    )
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--update",
        action="store_true",
        help="replace only these groups' rows in an existing --out file",
    )
    args = parser.parse_args(argv)
    size = SIZES[args.size]
    xla = args.xla == "on"
    variants = all_variants(size)
    groups = group_names(variants)
    if args.groups != "all":
        wanted = args.groups.split(",")
        unknown = set(wanted) - set(groups)
        if unknown:
            parser.error(f"unknown groups {sorted(unknown)}; known: {groups}")
        groups = [g for g in groups if g in wanted]
    processes = size["processes"] if args.processes is None else args.processes
    info = machine_info(xla)
    print(
        f"benchmark: {info['backend']} xla={info['xla']} on "
        f"{info['device']}, groups {', '.join(groups)}",
        flush=True,
    )
    results, limits = [], []
    if processes == 0:
        chosen = [v for v in variants if v.group in groups]
        # The machine's limits, measured in this process with the layers'
        # backend and compiler, before them (benchmarks/roofline.py).
        measured = roofline.Limits(xla)
        results = add_ratios(
            measure(
                chosen,
                size["repeats"],
                xla,
                min_call_seconds=size["min_call_seconds"],
                log=lambda m: print(m, flush=True),
                limits=measured,
            )
        )
        limits.append({"groups": groups, **measured.summary()})
    else:
        # Each comparison runs in fresh processes: ratios measured in one
        # long process drifted with whatever it had compiled and run
        # before (up to 40% on the same pair), while the variants of one
        # group still run side by side, interleaved.
        with tempfile.TemporaryDirectory() as tmp:
            for group in groups:
                runs = []
                for k in range(processes):
                    print(f"[{group}] process {k + 1}/{processes}", flush=True)
                    payload = _run_group_in_subprocess(
                        args, group, Path(tmp) / f"{group}_{k}.json"
                    )
                    runs.append(payload["results"])
                    limits += payload["limits"]
                results += merge_processes(runs)
    payload = {
        "machine": info,
        "repeats": size["repeats"],
        "min_call_seconds": size["min_call_seconds"],
        "processes": max(processes, 1),
        "limits": limits,
        "results": results,
    }
    if args.update and Path(args.out).exists():
        payload = _updated(json.loads(Path(args.out).read_text()), payload)
    with open(args.out, "w") as f:
        json.dump(payload, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
