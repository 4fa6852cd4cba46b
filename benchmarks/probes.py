"""Probes: the rates of the operations the slow layers are made of.

The roofline (`benchmarks/roofline.py`) prices every FLOP at the rate of a
large square matrix product and every byte at the rate of a long
elementwise pass. Where a layer stays far above that floor, the question
is whether its own operations can reach those rates on this machine at
all. Each probe times one such operation alone, in a compiled loop, in
calls alternating with the large product's, and reports the median ratio
of the two rates (side by side, so that the machine's other load affects
both alike, and the ratio travels between runs better than either rate):

* **whitening's products**: per group of m = 16 channels, Σ = XᵀX/n and
  its application X·Φ, on the benchmark's two tensors ((32, 16, 16, 64):
  4 groups of 8192 rows; (256, 512): 32 groups of 256 rows). Each loop
  iteration is one Newton–Schulz step X ← X(3I − XᵀX)/2, which keeps X
  bounded and makes every iteration depend on the last;
* **the orthogonal layers' matrices**: 512, 256, 64 and 16 square
  products (ONI's Newton iteration on one group as wide as the benchmark's
  Dense layers, 512, 256 and 64 units, and its small Conv2D, 16 filters),
  a batch of eight 64 × 64 products (groups of 64), and `eigh` at the same
  sizes (OWN), priced at 9 m³ FLOPs as in the roofline;
* **a weight normalizer's kernel side**: w = g·v/‖v‖ per output unit,
  forward and backward, alone, on square kernels of 8, 64, 256 and 512
  (the benchmark's Dense layers are 64, 256 and 512 wide); the
  difference between sizes separates what scales with the kernel from
  what each step pays whatever the size.

Usage: KERAS_BACKEND=jax python -m benchmarks.probes --out FILE
(merges this backend's entry into FILE; TensorFlow is compiled with XLA).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np
from keras import ops

from benchmarks import roofline

WHITENING_SHAPES = {
    "conv tensor (4 groups of 8192 rows)": (4, 8192, 16),
    "dense tensor (32 groups of 256 rows)": (32, 256, 16),
}
KERNELS = (8, 64, 256, 512)
MATRICES = (16, 64, 256, 512)


def _orthonormal(shape, seed=0):
    """A batch of matrices with orthonormal columns (Newton–Schulz's
    fixed point, so the loop keeps it there)."""
    a = np.random.default_rng(seed).normal(size=shape)
    q, _ = np.linalg.qr(a)
    return q.astype("float32")


def _whitening_loop(xla, shape):
    """X ← X(3I − XᵀX)/2 on (groups, rows, m): the Gram product and the
    application, 2 · 2·n·m² FLOPs per group."""
    g, n, m = shape
    eye = np.eye(m, dtype="float32")

    def body(i, x):
        s = ops.matmul(ops.transpose(x, (0, 2, 1)), x)
        return ops.matmul(x, 1.5 * eye - 0.5 * s)

    run = roofline._loop(body, _orthonormal(shape), xla)
    return run, 2 * 2.0 * g * n * m * m


def _square_loop(xla, groups, size):
    """A batch of (size × size) products."""
    a = np.random.default_rng(0).normal(size=(groups, size, size))
    a = (a / np.sqrt(size)).astype("float32")

    def body(i, x):
        return ops.matmul(x, x) * 0.5

    return roofline._loop(body, a, xla), groups * 2.0 * size**3


def _eigh_loop(xla, size):
    """`eigh` of one symmetric (size × size) matrix, priced at the
    roofline's 9 m³ FLOPs."""
    a = np.random.default_rng(0).normal(size=(size, size))
    a = (a @ a.T / size + np.eye(size)).astype("float32")

    def body(i, x):
        w, _ = ops.eigh(x)
        # Depends on the result, stays symmetric and bounded.
        return x + 1e-7 * ops.diag(w - ops.mean(w))

    return roofline._loop(body, a, xla), 9.0 * size**3


def whitening_products(xla, shape):
    """FLOP/s of whitening's thin products (see `_whitening_loop`)."""
    return roofline._rate(*_whitening_loop(xla, shape))


def square_products(xla, groups, size):
    """FLOP/s of a batch of (size × size) products."""
    return roofline._rate(*_square_loop(xla, groups, size))


def eigh_rate(xla, size):
    """9 m³ FLOPs per second of `eigh` of one (size × size) matrix."""
    return roofline._rate(*_eigh_loop(xla, size))


def side_by_side(probe, reference, rounds=7, min_seconds=0.1):
    """The probe's rate and its ratio to the reference's, timed in
    alternating calls (so that whatever else the machine does affects
    both alike): the medians over `rounds` of each and of their ratio."""
    (run_p, work_p), (run_r, work_r) = probe, reference
    n_p = roofline._calibrate(run_p, min_seconds)
    n_r = roofline._calibrate(run_r, min_seconds)
    rates, ratios = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        run_r(n_r)
        middle = time.perf_counter()
        run_p(n_p)
        end = time.perf_counter()
        rate = work_p * n_p / (end - middle)
        rates.append(rate)
        ratios.append(rate / (work_r * n_r / (middle - start)))
    return float(np.median(rates)), float(np.median(ratios))


def _weight_norm_step(v, g, cotangent):
    """One SGD step of v through w = g·v/‖v‖ (norm over the fan-in axis 0,
    the stored layout), with a fixed gradient of w."""
    backend = keras.backend.backend()

    def forward(v):
        norm = ops.sqrt(ops.sum(ops.square(v), axis=0, keepdims=True) + 1e-12)
        return ops.sum(g * v / norm * cotangent)

    if backend == "jax":
        import jax

        grad = jax.grad(forward)(v)
    else:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(v)
            y = forward(v)
        grad = tape.gradient(y, v)
    return v - 1e-3 * grad


def weight_norm_kernel_side(xla, size):
    """Seconds per step of the kernel side alone, SGD update included
    (its floor, in `run`: 8 passes over the kernel: read V, write W; read
    dW and V, write dV; the update's two reads and one write)."""
    rng = np.random.default_rng(0)
    v0 = rng.normal(size=(size, size)).astype("float32")
    g = np.ones((1, size), "float32")
    cotangent = rng.normal(size=(size, size)).astype("float32")

    def body(i, v):
        return _weight_norm_step(v, g, cotangent)

    return 1.0 / roofline._rate(roofline._loop(body, v0, xla), 1.0)


def run(xla=True):
    reference = _square_loop(xla, 1, 2048)  # the roofline's FLOP/s
    out = {
        "flops_per_s": roofline._rate(*reference),
        "whitening_products": {},
        "matrices": {},
        "weight_norm_kernel_side": {},
    }

    def entry(probe):
        rate, of_large = side_by_side(probe, reference)
        return {"flops_per_s": rate, "of_large": of_large}

    for name, shape in WHITENING_SHAPES.items():
        out["whitening_products"][name] = {
            "shape": list(shape),
            **entry(_whitening_loop(xla, shape)),
        }
    # One group as wide as the benchmark's layers: Dense 64, 256 and 512
    # units; the small Conv2D's 16 filters; and ONI's groups of 64.
    for size in MATRICES:
        out["matrices"][f"{size} x {size} product"] = entry(
            _square_loop(xla, 1, size)
        )
        out["matrices"][f"eigh {size} x {size} (9 m^3)"] = entry(
            _eigh_loop(xla, size)
        )
    out["matrices"]["8 products of 64 x 64"] = entry(_square_loop(xla, 8, 64))
    bandwidth = roofline.Limits(xla, flops_per_s=out["flops_per_s"])
    for size in KERNELS:
        seconds = weight_norm_kernel_side(xla, size)
        elements = size * size
        floor = 8 * roofline.BYTES * elements / bandwidth.bytes_per_s(elements)
        out["weight_norm_kernel_side"][f"{size}x{size}"] = {
            "seconds": seconds,
            "floor_seconds": floor,
            "over_floor": seconds / floor,
        }
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    backend = keras.backend.backend()
    key = "jax" if backend == "jax" else "tensorflow_xla"
    start = time.perf_counter()
    result = run(xla=True)
    payload = json.loads(args.out.read_text()) if args.out.exists() else {}
    payload[key] = result
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"probes ({key}): {time.perf_counter() - start:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
