"""Float64 NumPy transcriptions of the papers' equations, used as oracles.

Written from the equations (see each function's reference), independently
of the keras.ops code under test. Inputs are channels-last arrays.
"""

from __future__ import annotations

import numpy as np


def _flat(x):
    return np.asarray(x, np.float64).reshape(-1, x.shape[-1])


def batch_norm(x, epsilon):
    """BN in training, no affine (Ioffe & Szegedy 2015, Alg. 1)."""
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axes)
    var = x.var(axes)
    return (x - mean) / np.sqrt(var + epsilon)


class BatchRenorm:
    """Batch Renormalization, Ioffe 2017, Algorithm 1 (μ, σ moving)."""

    def __init__(self, channels, momentum, epsilon, gamma=None, beta=None):
        self.mean = np.zeros(channels)
        self.stddev = np.ones(channels)
        self.alpha = 1.0 - momentum
        self.epsilon = epsilon
        self.gamma = np.ones(channels) if gamma is None else gamma
        self.beta = np.zeros(channels) if beta is None else beta

    def train_step(self, x, r_max, d_max, r_min=None):
        x = np.asarray(x, np.float64)
        axes = tuple(range(x.ndim - 1))
        mu_b = x.mean(axes)
        sigma_b = np.sqrt(x.var(axes) + self.epsilon)
        r_min = 1.0 / r_max if r_min is None else r_min
        r = np.clip(sigma_b / self.stddev, r_min, r_max)
        d = np.clip((mu_b - self.mean) / self.stddev, -d_max, d_max)
        x_hat = (x - mu_b) / sigma_b * r + d
        self.mean = self.mean + self.alpha * (mu_b - self.mean)
        self.stddev = self.stddev + self.alpha * (sigma_b - self.stddev)
        return self.gamma * x_hat + self.beta

    def infer(self, x):
        return self.gamma * (x - self.mean) / self.stddev + self.beta


def linear_ramp(step, start_value, end_value, start_step, end_step):
    if step <= start_step:
        return start_value
    if step >= end_step:
        return end_value
    t = (step - start_step) / (end_step - start_step)
    return start_value + t * (end_value - start_value)


def filter_response_norm(x, epsilon, gamma=1.0, beta=0.0):
    """FRN (Singh & Krishnan 2020, Eq. 1-2): ν² over spatial axes."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(1, x.ndim - 1))
    nu2 = (x**2).mean(axes, keepdims=True) if axes else x**2
    return gamma * x / np.sqrt(nu2 + abs(epsilon)) + beta


def _groups(x, group_size):
    flat = _flat(x)
    c = flat.shape[1]
    size = min(group_size, c)
    return flat, size, c // size


def group_covariances(x, group_size, epsilon):
    """Per-group centered data (g, m, n), means (c,) and Σ (g, m, m)."""
    flat, size, groups = _groups(x, group_size)
    mean = flat.mean(0)
    xc = (flat - mean).reshape(-1, groups, size).transpose(1, 2, 0)
    n = xc.shape[-1]
    sigma = xc @ xc.transpose(0, 2, 1) / n + epsilon * np.eye(size)
    return xc, mean, sigma


def zca(sigma):
    """Σ^{-1/2} = U Λ^{-1/2} Uᵀ (Huang et al. 2018, Eq. 8)."""
    lam, u = np.linalg.eigh(sigma)
    return (u / np.sqrt(lam)[..., None, :]) @ np.swapaxes(u, -1, -2)


def iternorm_matrix(sigma, num_iterations, dtype=np.float64):
    """IterNorm's Φ (Huang et al. 2019, Alg. 1), the paper's own uncoupled
    iteration P ← 1.5P − 0.5P³Σ_N, in `dtype`."""
    sigma = sigma.astype(dtype)
    trace = np.trace(sigma, axis1=-2, axis2=-1)[:, None, None]
    sigma_n = sigma / trace
    p = np.broadcast_to(np.eye(sigma.shape[-1], dtype=dtype), sigma.shape)
    with np.errstate(all="ignore"):
        for _ in range(num_iterations):
            p = 1.5 * p - 0.5 * p @ p @ p @ sigma_n
    return p / np.sqrt(trace)


def whiten(x, group_size, epsilon, matrix_fn):
    """Training-mode whitening of x with Φ = matrix_fn(Σ); returns (y, mean,
    Φ) with y in x's shape."""
    xc, mean, sigma = group_covariances(x, group_size, epsilon)
    phi = matrix_fn(sigma)
    y = phi @ xc  # (g, m, n)
    y = y.transpose(2, 0, 1).reshape(x.shape)
    return y, mean, phi


def whiten_inference(x, group_size, mean, phi):
    flat, size, groups = _groups(x, group_size)
    xc = (flat - mean).reshape(-1, groups, size).transpose(1, 2, 0)
    return (phi @ xc).transpose(2, 0, 1).reshape(x.shape)


class BatchKalman:
    """The official BKN code's combination (kalman_norm.py), with the prior
    taken from the running statistics as the keraslayers layer does."""

    def __init__(self, channels, momentum, epsilon, p, gate_ratio=100.0):
        self.mean = np.zeros(channels)
        self.var = np.ones(channels)
        self.momentum, self.epsilon, self.p = momentum, epsilon, p
        self.gate_ratio = gate_ratio

    def train_step(self, x):
        x = np.asarray(x, np.float64)
        axes = tuple(range(x.ndim - 1))
        mu_b, var_b = x.mean(axes), x.var(axes)
        p = self.p
        mu = p * self.mean + (1 - p) * mu_b
        var = (
            p * self.var
            + (1 - p) * var_b
            + p * (1 - p) * (mu_b - self.mean) ** 2
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            gate = np.mean(self.var / var_b) < self.gate_ratio
        if not (p > 0 and gate):
            mu, var = mu_b, var_b
        m = self.momentum
        self.mean = m * self.mean + (1 - m) * mu
        self.var = m * self.var + (1 - m) * var
        return (x - mu) / np.sqrt(var + self.epsilon)

    def infer(self, x):
        return (x - self.mean) / np.sqrt(self.var + self.epsilon)
