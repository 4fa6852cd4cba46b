"""Private linear algebra shared by the whitening (and orthogonal) layers.

All functions take batches of symmetric positive-definite matrices with
shape (..., m, m).
"""

from __future__ import annotations

import warnings

import keras
from keras import ops

# From this size on, TensorFlow's XLA eigendecomposition is much slower
# than TensorFlow's own kernel, and the gap grows with the size: XLA
# lowers `eigh` to a Jacobi iteration whose sweeps are sequential loops
# over the matrix; JAX calls LAPACK instead and is not affected. Measured
# by the benchmark (`make bench`, benchmarks/results/results.md): the
# orth_eigh rows of weight_dense_{small,medium,large} (one group of 64,
# 256, 512 units) and the dbn rows of whitening, TensorFlow + XLA against
# TensorFlow without XLA; see also the book's cost chapter.
SLOW_XLA_EIGH_SIZE = 128


def _in_tensorflow_xla() -> bool:
    """Whether we are being traced into an XLA-compiled TensorFlow function
    (`tf.function(jit_compile=True)`, as Keras uses for
    `compile(jit_compile=True)`)."""
    if keras.backend.backend() != "tensorflow":
        return False
    try:  # private TensorFlow API: an unknown version just skips the check
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util

        graph = tf.compat.v1.get_default_graph()
        return bool(control_flow_util.GraphOrParentsInXlaContext(graph))
    except Exception:
        return False


def warn_if_slow_eigh(layer, size: int, advice: str) -> None:
    """Warns once per layer when an eigendecomposition of `size`×`size`
    matrices is compiled by XLA on TensorFlow (see SLOW_XLA_EIGH_SIZE)."""
    if size < SLOW_XLA_EIGH_SIZE or getattr(layer, "_warned_xla_eigh", False):
        return
    if _in_tensorflow_xla():
        layer._warned_xla_eigh = True
        warnings.warn(
            f"{type(layer).__name__} '{layer.name}': TensorFlow's XLA "
            f"compiles the eigendecomposition of {size}×{size} matrices "
            "into a Jacobi iteration, much slower than without XLA at this "
            "size. "
            f"{advice} Or compile without XLA (`jit_compile=False`, the "
            "Keras default for TensorFlow on a CPU), or use the JAX "
            "backend.",
            stacklevel=3,
        )


def _transpose(a):
    return ops.swapaxes(a, -1, -2)


def _eye_like(a):
    m = a.shape[-1]
    return ops.eye(m, dtype=a.dtype)


def inverse_sqrt_eigh(sigma, floor=None):
    """Σ^{-1/2} through an eigendecomposition, with a backward pass that is
    finite for repeated eigenvalues.

    The textbook eigh backward divides by λ_i − λ_j and returns NaN/inf when
    two eigenvalues coincide (Σ ≈ c·I, typical at initialization). Here the
    gradient is the Daleckii–Krein formula for f(λ) = λ^{-1/2},

        ∂L/∂Σ = U (K ∘ Uᵀ Ḡ U) Uᵀ,  Ḡ = (G + Gᵀ)/2,
        K_ij = (f(λ_i) − f(λ_j)) / (λ_i − λ_j) = −1 / (s_i s_j (s_i + s_j)),

    with s = √λ. The closed form of the divided difference has no λ_i − λ_j
    in a denominator, so equal eigenvalues give f'(λ) = −λ^{-3/2}/2 exactly
    and the result does not depend on the basis chosen inside an eigenspace.
    Eigenvalues are floored at `floor` (default: a tiny positive value, for
    a Σ that already includes εI, where anything smaller is rounding).
    """
    if floor is None:
        floor = 1e-12 if sigma.dtype == "float64" else 1e-8

    @ops.custom_gradient
    def _inverse_sqrt(sigma):
        phi, backward = inverse_sqrt_eigh_vjp(sigma, floor)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return backward(upstream)

        return phi, grad

    return _inverse_sqrt(sigma)


def inverse_sqrt_eigh_vjp(sigma, floor=None):
    """`(phi, backward)`: Σ^{-1/2} as in `inverse_sqrt_eigh`, and the map
    from ∂L/∂Φ to ∂L/∂Σ (the Daleckii–Krein formula), for layers that
    write their own backward pass around Φ."""
    if floor is None:
        floor = 1e-12 if sigma.dtype == "float64" else 1e-8
    eigenvalues, u = ops.eigh(sigma)
    s = ops.sqrt(ops.maximum(eigenvalues, floor))
    phi = ops.matmul(u / ops.expand_dims(s, -2), _transpose(u))

    def backward(upstream):
        g = 0.5 * (upstream + _transpose(upstream))
        g_rot = ops.matmul(_transpose(u), ops.matmul(g, u))
        si = ops.expand_dims(s, -1)
        sj = ops.expand_dims(s, -2)
        kernel = -1.0 / (si * sj * (si + sj))
        return ops.matmul(u, ops.matmul(kernel * g_rot, _transpose(u)))

    return phi, backward


def inverse_sqrt_newton(sigma, num_iterations: int, norm: str = "trace"):
    """Approximates Σ^{-1/2} with `num_iterations` Newton steps on Σ/‖Σ‖.

    ‖Σ‖ is the trace (IterNorm) or the Frobenius norm (ONI); either bounds
    the eigenvalues of Σ_N = Σ/‖Σ‖ by 1, where the iteration converges.
    Returns `(phi, norm)` with phi ≈ Σ^{-1/2}. In exact arithmetic this is
    IterNorm's (and ONI's) iteration P_{k+1} = 1.5 P_k − 0.5 P_k³ Σ_N,
    P_0 = I, followed by P_T / √‖Σ‖. It is evaluated in the coupled
    (Newton–Schulz) form

        T_k = (3I − Z_k Y_k) / 2,  Y_{k+1} = Y_k T_k,  Z_{k+1} = T_k Z_k,
        Y_0 = Σ_N, Z_0 = I,  so that Z_k = P_k and Y_k = Σ_N P_k.

    The uncoupled form relies on P_k commuting with Σ_N; rounding breaks
    that and the error grows with every step, so on an ill-conditioned Σ
    it diverges for many iterations (NaN). The coupled form is stable for
    any number of steps (Higham, Functions of Matrices, 2008, §6.7).
    """
    if norm == "trace":
        trace = ops.trace(sigma, axis1=-2, axis2=-1)
    else:
        trace = ops.sqrt(ops.sum(ops.square(sigma), axis=(-2, -1)))
    sigma_n = sigma / ops.reshape(trace, (-1, 1, 1))
    identity = ops.broadcast_to(_eye_like(sigma), ops.shape(sigma))
    # Z_0 = I, so the first step needs no product to form T_0 or Z_1, and
    # the last Y is never used: T iterations cost 3T − 3 products (T ≥ 1)
    # instead of 3T.
    y, z = sigma_n, None
    for k in range(num_iterations):
        t = 1.5 * identity - 0.5 * (y if z is None else ops.matmul(z, y))
        if k < num_iterations - 1:
            y = ops.matmul(y, t)
        z = t if z is None else ops.matmul(t, z)
    if z is None:
        z = identity
    phi = z / ops.reshape(ops.sqrt(trace), (-1, 1, 1))
    return phi, trace


def inverse_sqrt_newton_vjp(sigma, num_iterations: int):
    """`(phi, backward)`: IterNorm's Φ ≈ Σ^{-1/2} exactly as
    `inverse_sqrt_newton(sigma, T, "trace")` computes it, and the map from
    ∂L/∂Φ to ∂L/∂Σ: reverse-mode differentiation of the coupled iteration
    written out by hand (the products' transposes, in reverse order), for
    layers that write their own backward pass around Φ."""
    trace = ops.trace(sigma, axis1=-2, axis2=-1)
    trace = ops.reshape(trace, (-1, 1, 1))
    root = ops.sqrt(trace)
    sigma_n = sigma / trace
    identity = ops.broadcast_to(_eye_like(sigma), ops.shape(sigma))
    ys, zs, ts = [sigma_n], [None], []
    for k in range(num_iterations):
        y, z = ys[k], zs[k]
        t = 1.5 * identity - 0.5 * (y if z is None else ops.matmul(z, y))
        ts.append(t)
        if k < num_iterations - 1:
            ys.append(ops.matmul(y, t))
        zs.append(t if z is None else ops.matmul(t, z))
    z_last = identity if zs[-1] is None else zs[-1]
    phi = z_last / root

    def backward(d_phi):
        d_trace = -0.5 * ops.sum(d_phi * z_last, axis=(-2, -1), keepdims=True)
        d_trace = d_trace / (trace * root)
        d_z = d_phi / root
        d_y = None
        for k in reversed(range(num_iterations)):
            y, z, t = ys[k], zs[k], ts[k]
            # Z_{k+1} = T_k Z_k (Z_0 = I)
            if z is None:
                d_t, d_z_k = d_z, None
            else:
                d_t = ops.matmul(d_z, _transpose(z))
                d_z_k = ops.matmul(_transpose(t), d_z)
            # Y_{k+1} = Y_k T_k (not formed after the last step)
            if d_y is not None:
                d_t = d_t + ops.matmul(_transpose(y), d_y)
                d_y_k = ops.matmul(d_y, _transpose(t))
            else:
                d_y_k = None
            # T_k = 1.5 I − 0.5 Z_k Y_k (Y_0 alone when Z_0 = I)
            if z is None:
                step = -0.5 * d_t
            else:
                d_z_k = d_z_k - 0.5 * ops.matmul(d_t, _transpose(y))
                step = -0.5 * ops.matmul(_transpose(z), d_t)
            d_y = step if d_y_k is None else d_y_k + step
            d_z = d_z_k
        d_sigma_n = d_y if d_y is not None else ops.zeros_like(sigma)
        # Σ_N = Σ / tr Σ
        d_trace = d_trace - ops.sum(
            d_sigma_n * sigma, axis=(-2, -1), keepdims=True
        ) / (trace * trace)
        return d_sigma_n / trace + d_trace * identity

    return phi, backward
