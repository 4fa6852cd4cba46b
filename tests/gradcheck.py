"""Float64 finite-difference gradient checks through a layer's public API.

The loss is L(x, w) = Σ layer(x; w) · c for a fixed random cotangent c,
evaluated with `layer.stateless_call` so that repeated evaluations do not
update moving statistics. Autodiff gradients (TensorFlow's GradientTape or
`jax.grad`, per backend) are compared with central differences along random
directions, for the input and every trainable weight.
"""

from __future__ import annotations

import keras
import numpy as np


def _loss_fn(layer, cotangent, training):
    non_trainable = [
        keras.ops.convert_to_numpy(v.value)
        for v in layer.non_trainable_variables
    ]

    def loss(x, trainable):
        y, _ = layer.stateless_call(
            trainable, non_trainable, x, training=training
        )
        return keras.ops.sum(y * cotangent)

    return loss


def autodiff_gradients(layer, x, cotangent, training=True):
    """Returns (dL/dx, [dL/dw]) as float64 NumPy arrays."""
    loss = _loss_fn(layer, cotangent, training)
    trainable = [
        keras.ops.convert_to_numpy(v.value) for v in layer.trainable_variables
    ]
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tx = tf.constant(x)
        tw = [tf.constant(w) for w in trainable]
        with tf.GradientTape() as tape:
            tape.watch([tx, *tw])
            value = loss(tx, tw)
        gx, *gw = tape.gradient(value, [tx, *tw])
        return gx.numpy(), [g.numpy() for g in gw]
    if backend == "jax":
        import jax

        gx, gw = jax.grad(loss, argnums=(0, 1))(x, trainable)
        return np.asarray(gx), [np.asarray(g) for g in gw]
    raise NotImplementedError(backend)


def check_gradients(
    layer,
    x,
    *,
    training=True,
    num_directions=4,
    step=1e-6,
    rtol=1e-5,
    atol=1e-7,
    seed=0,
):
    """Asserts that autodiff and central differences agree in float64."""
    assert layer.compute_dtype == "float64", "build the layer with float64"
    x = np.asarray(x, np.float64)
    layer(x, training=False)  # build
    rng = np.random.default_rng(seed)
    out_shape = layer.compute_output_shape(x.shape)
    cotangent = rng.normal(size=out_shape)
    gx, gw = autodiff_gradients(layer, x, cotangent, training)
    assert np.all(np.isfinite(gx)) and all(np.all(np.isfinite(g)) for g in gw)
    loss = _loss_fn(layer, cotangent, training)
    trainable = [
        keras.ops.convert_to_numpy(v.value) for v in layer.trainable_variables
    ]

    def value(xv, wv):
        # Explicit float64 tensors: Keras converts a NumPy float64 array
        # passed to a layer with autocast=False to floatx (float32) on JAX.
        def f64(a):
            return keras.ops.convert_to_tensor(a, dtype="float64")

        out = loss(f64(xv), [f64(w) for w in wv])
        return float(keras.ops.convert_to_numpy(out))

    for _ in range(num_directions):
        vx = rng.normal(size=x.shape)
        vw = [rng.normal(size=w.shape) for w in trainable]
        plus = value(
            x + step * vx,
            [w + step * v for w, v in zip(trainable, vw, strict=True)],
        )
        minus = value(
            x - step * vx,
            [w - step * v for w, v in zip(trainable, vw, strict=True)],
        )
        numeric = (plus - minus) / (2 * step)
        analytic = float(np.sum(gx * vx)) + sum(
            float(np.sum(g * v)) for g, v in zip(gw, vw, strict=True)
        )
        np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol)
