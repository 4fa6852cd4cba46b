"""The machine's limits and each benchmarked step's floor (a roofline).

Two numbers bound how fast a step can run on this machine:

* **FLOP/s**: a 2048 × 2048 float32 matrix product, repeated inside one
  compiled loop (the fastest arithmetic the backend's kernels reach);
* **bytes/s**: an elementwise pass `x·a + b` over a tensor as large as the
  step's activation tensor, repeated inside one compiled loop. At the
  benchmark's sizes the tensors live in the processor's caches, and a
  single elementwise pass is the most bandwidth-bound thing a normalizer
  does, so this is what "memory speed" means for these layers here (a
  pass over 128 MiB, out of cache, is reported beside it).

Both are measured in the same process as the layers, right before them,
with the same backend and compiler. A step's **floor** is
max(FLOPs / FLOP/s, bytes / (bytes/s)) for the step's counted work
(`step_counts`), and **time / floor** says how far the measured step is
from what the machine allows: ≈ 1 is at the limit, 10 is ten times slower
than the limit.

What is counted (float32, 4 bytes per number), for a training step of
the benchmark's models (`bench._after_affine`, `bench._around`):

* every layer reads its inputs and parameters and writes its output once
  in the forward pass; in the backward pass it reads the output gradient
  and its saved input, and writes the input gradient (unless no earlier
  layer has parameters: the model's input needs none) and its parameters'
  gradients. Layers are not fused with each other, but a layer is:
  BN's statistics and its normalization count as one read of x, as a
  fused kernel would do it;
* the loss (mean squared error) reads the output and the target and
  writes the output gradient; plain SGD reads each parameter and its
  gradient and writes the parameter;
* FLOPs are multiply-adds × 2 for products (2·n·k·m for an (n, k) by
  (k, m) product), and a few operations per element for elementwise work
  (listed per layer below). The eigendecomposition is counted as 9 m³
  (Golub & Van Loan's count for a symmetric m × m matrix with vectors).

These are lower bounds of what any implementation must do, not what ours
does: time / floor includes everything the implementation does beyond
them (transposes, copies, extra passes, per-operation overhead).
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np

BYTES = 4  # float32


def _layer_shapes(layer):
    shape_in = tuple(layer.input.shape)
    shape_out = tuple(layer.output.shape)
    return shape_in, shape_out


def _elements(shape, batch):
    return batch * math.prod(d for d in shape[1:])


def _kernel_side(layer, batch):
    """FLOPs and bytes of computing a reparameterized layer's effective
    kernel from its stored parameters, forward and backward (nothing for a
    plain layer). Counted on the (units, fan_in) view."""
    import keraslayers
    from keraslayers import _kernel_layers

    if not isinstance(layer, _kernel_layers._ReparameterizedKernel):
        return 0.0, 0.0
    shape = tuple(layer._kernel.shape)
    units, fan_in = shape[-1], math.prod(shape[:-1])
    p = units * fan_in
    # Read V, write W; backward read dW and V, write dV.
    nbytes = 5 * p * BYTES
    if isinstance(
        layer,
        (keraslayers.WeightNormDense, keraslayers.WeightNormConv2D),
    ):
        return 8.0 * p, nbytes  # norms (2), scale (1); backward (5)
    if isinstance(
        layer,
        (
            keraslayers.CenteredWeightNormDense,
            keraslayers.CenteredWeightNormConv2D,
            keraslayers.WeightStandardizedDense,
            keraslayers.WeightStandardizedConv2D,
        ),
    ):
        return 14.0 * p, nbytes  # + centering forward (2) and backward (4)
    # Orthogonal: groups of g rows (or columns) of the centered matrix Z.
    form = layer._resolved_form(units, fan_in)
    rows, cols = (units, fan_in) if form == "rows" else (fan_in, units)
    if form == "rows":
        g = layer.group_size or keraslayers.orthogonal.default_group_size(
            units, fan_in, layer._revision
        )
    else:  # the columns of one group of all units, fan-in of them
        g = min(layer.group_size or rows, rows)
    groups = rows / g
    products = 2 * 2 * rows * g * cols  # S = Z Zᵀ and W = B Z
    if layer.orthogonalization == "newton":
        t = layer.num_iterations
        matrix = groups * (3 * t - 3) * 2 * g**3
    else:
        matrix = groups * (9 * g**3 + 2 * 2 * g**3)  # eigh, U·diag·Uᵀ
    forward = 2 * p + products + matrix
    matrix_bytes = 2 * groups * g * g * BYTES * 3
    # Backward of products and of the matrix function: twice the forward.
    return 3.0 * forward, nbytes + matrix_bytes


def layer_counts(layer, batch, needs_input_grad):
    """(FLOPs, bytes) of one layer's forward and backward pass."""
    import keraslayers

    if isinstance(layer, keras.layers.InputLayer):
        return 0.0, 0.0
    shape_in, shape_out = _layer_shapes(layer)
    n_in, n_out = _elements(shape_in, batch), _elements(shape_out, batch)
    params = sum(math.prod(w.shape) for w in layer.trainable_weights)
    dx = n_in if needs_input_grad else 0
    # Generic traffic: forward reads x and the parameters, writes y;
    # backward reads dy, x (and the parameters if dx is needed), writes dx
    # and the parameters' gradients.
    nbytes = BYTES * (
        n_in + params + n_out + n_out + n_in + dx + params * (dx > 0) + params
    )
    name = type(layer).__name__
    if name == "Affine":
        flops = 2 * n_in + 3 * n_in + dx
    elif isinstance(
        layer,
        (
            keras.layers.BatchNormalization,
            keras.layers.GroupNormalization,
            keraslayers.BatchRenormalization,
            keraslayers.BatchKalmanNormalization,
        ),
    ):
        # Forward: mean (1), squared deviations and their sum (3),
        # normalize and affine (2); backward: Σdy, Σdy·x̂ (4), dx (4).
        flops = 6 * n_in + 4 * n_in + (4 * n_in if dx else 0)
    elif isinstance(layer, keraslayers.FilterResponseNormalization):
        flops = 5 * n_in + 4 * n_in + (4 * n_in if dx else 0)
    elif isinstance(layer, keraslayers.TLU):
        flops = n_in + n_in + (n_in if dx else 0)
    elif isinstance(
        layer,
        (
            keraslayers.DecorrelatedBatchNormalization,
            keraslayers.IterativeNormalization,
        ),
    ):
        channels = shape_in[-1]
        n = n_in // channels
        size = min(layer.group_size, channels)
        sizes = [size] * (channels // size)
        if channels % size:
            sizes.append(channels % size)
        # Covariance and application, 2·n·m² each; backward: three such
        # products (dΦ, d(x − μ) through Φ, through Σ).
        products = sum(2 * n * m * m for m in sizes)
        if isinstance(layer, keraslayers.IterativeNormalization):
            t = layer.num_iterations
            matrix = sum((3 * t - 3) * 2 * m**3 for m in sizes)
        else:
            matrix = sum((9 + 4) * m**3 for m in sizes)
        flops = (
            2 * products
            + (3 * products if dx else 2 * products)
            + 3 * matrix
            + 10 * n_in
        )
        nbytes += BYTES * 3 * sum(m * m for m in sizes)
    elif isinstance(layer, (keras.layers.Dense,)) or name.endswith("Dense"):
        kernel = layer._kernel if hasattr(layer, "_kernel") else layer.kernel
        fan_in, units = math.prod(kernel.shape[:-1]), kernel.shape[-1]
        rows = n_in // fan_in
        mult = 2 * rows * fan_in * units
        flops = mult + mult + (mult if dx else 0) + 2 * n_out
        extra_flops, extra_bytes = _kernel_side(layer, batch)
        flops, nbytes = flops + extra_flops, nbytes + extra_bytes
    elif isinstance(layer, keras.layers.Conv2D) or name.endswith("Conv2D"):
        kernel = layer._kernel if hasattr(layer, "_kernel") else layer.kernel
        per_output = math.prod(kernel.shape[:-1])  # kh·kw·(in / groups)
        mult = 2 * n_out * per_output
        flops = mult + mult + (mult if dx else 0) + 2 * n_out
        extra_flops, extra_bytes = _kernel_side(layer, batch)
        flops, nbytes = flops + extra_flops, nbytes + extra_bytes
    elif isinstance(layer, keras.layers.ReLU):
        flops = n_in + (n_in if dx else 0)
    else:
        raise ValueError(f"roofline: no count for layer {name}")
    return float(flops), float(nbytes)


def step_counts(model, batch, mode="train"):
    """(FLOPs, bytes, per-layer list) of one training step of `model` on a
    batch of `batch` examples: forward, backward, loss, SGD update (or,
    for mode="infer", of one forward pass)."""
    total_flops = total_bytes = 0.0
    layers = []
    seen_params = False
    for layer in model.layers:
        if mode == "infer":
            shape_in, shape_out = _layer_shapes(layer)
            n_in = _elements(shape_in, batch)
            n_out = _elements(shape_out, batch)
            params = sum(math.prod(w.shape) for w in layer.weights)
            f, _ = layer_counts(layer, batch, needs_input_grad=False)
            # The forward share only: roughly a third of a training step's
            # products for a linear layer, the generic traffic in and out.
            flops = f / 3.0
            nbytes = float(BYTES * (n_in + params + n_out))
        else:
            flops, nbytes = layer_counts(layer, batch, seen_params)
        layers.append(
            {"layer": type(layer).__name__, "flops": flops, "bytes": nbytes}
        )
        total_flops += flops
        total_bytes += nbytes
        if layer.trainable_weights:
            seen_params = True
    if mode == "train":
        n_out = _elements(tuple(model.layers[-1].output.shape), batch)
        params = sum(math.prod(w.shape) for w in model.trainable_weights)
        total_flops += 4 * n_out + 2 * params
        total_bytes += BYTES * (3 * n_out + 3 * params)
    return total_flops, total_bytes, layers


# --------------------------------------------------------------------------
# The machine's limits, measured with the backend the layers run on
# --------------------------------------------------------------------------


def _loop(body, x, xla):
    """`run(n)`: n iterations of `x = body(x)` in one compiled loop."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        loop = jax.jit(lambda x, n: jax.lax.fori_loop(0, n, body, x))
        x = jax.device_put(x)

        def run(n):
            jax.block_until_ready(loop(x, np.int32(n)))

        return run
    import tensorflow as tf

    xs = tf.constant(x)

    @tf.function(jit_compile=xla)
    def loop(n):
        y = xs
        i = tf.constant(0)
        while i < n:
            y = body(i, y)
            i += 1
        return y

    def run(n):
        loop(tf.constant(n, tf.int32)).numpy()

    return run


def _calibrate(run, min_seconds):
    """Iterations per call for calls of at least `min_seconds`."""
    run(1)
    n = 1
    while True:
        start = time.perf_counter()
        run(n)
        if time.perf_counter() - start >= min_seconds or n >= 1 << 20:
            return n
        n *= 2


def _rate(run, work, min_seconds=0.2, rounds=5):
    """Work per second of the fastest of `rounds` calls lasting at least
    `min_seconds` (the best rate is the limit the machine reached)."""
    n = _calibrate(run, min_seconds)
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        run(n)
        best = min(best, (time.perf_counter() - start) / n)
    return work / best


def flops_per_second(xla=True, size=2048):
    from keras import ops

    a = np.random.default_rng(0).normal(size=(size, size)).astype("float32")
    a /= np.sqrt(size)  # keeps repeated products bounded

    def body(i, x):
        return ops.matmul(x, x) * 0.5

    return _rate(_loop(body, a, xla), 2.0 * size**3)


def bytes_per_second(elements, xla=True):
    """Elementwise x·a + b over `elements` float32 numbers: one read and
    one write of each per pass."""
    x = np.ones(int(elements), "float32")

    def body(i, x):
        return x * 0.999 + 0.001

    return _rate(_loop(body, x, xla), 2.0 * BYTES * int(elements))


class Limits:
    """This process's measured limits, bandwidth cached per tensor size."""

    def __init__(self, xla=True, flops_per_s=None, bytes_per_s=None):
        """Measures the limits; given `flops_per_s` and `bytes_per_s`,
        takes them as they are instead (one bandwidth for every size)."""
        self.xla = xla
        self._fixed_bandwidth = bytes_per_s
        self.flops_per_s = flops_per_s or flops_per_second(xla)
        self._bandwidth = {}
        self.large_bytes_per_s = self.bytes_per_s(32 * 2**20)  # 128 MiB

    def bytes_per_s(self, elements):
        elements = int(elements)
        if self._fixed_bandwidth:
            return self._fixed_bandwidth
        if elements not in self._bandwidth:
            self._bandwidth[elements] = bytes_per_second(elements, self.xla)
        return self._bandwidth[elements]

    def floor(self, flops, nbytes, elements):
        """Seconds: the larger of the compute and the memory bound."""
        return max(
            flops / self.flops_per_s, nbytes / self.bytes_per_s(elements)
        )

    def summary(self):
        return {
            "flops_per_s": self.flops_per_s,
            "bytes_per_s_by_elements": {
                str(k): v for k, v in sorted(self._bandwidth.items())
            },
            "large_pass_bytes_per_s": self.large_bytes_per_s,
        }
