"""Training loops, seeds, callbacks and autodiff helpers for the chapters."""

from __future__ import annotations

import time
from collections.abc import Callable

import keras
import numpy as np


class Progress:
    """One line per finished step: the book shows it, and so does Jupyter.

    Plain printing (no stderr, no widget), so the static build captures
    it as ordinary output.
    """

    def __init__(self, total: int, label: str = ""):
        self.total, self.label, self.done = total, label, 0
        self.start = time.perf_counter()

    def step(self, message: str = "") -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        print(
            f"[{self.done}/{self.total}] {self.label} {message} "
            f"({elapsed:.1f} s)",
            flush=True,
        )


def weight_gradients(model, x, y, loss=None, training=True):
    """Gradients of the mean loss w.r.t. the model's trainable weights, by
    the backend's automatic differentiation (for checks against NumPy)."""
    loss = loss or keras.losses.MeanSquaredError()
    x = keras.ops.convert_to_tensor(np.asarray(x, "float32"))
    y = keras.ops.convert_to_tensor(np.asarray(y, "float32"))
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=training))
        grads = tape.gradient(value, model.trainable_weights)
        return [g.numpy() for g in grads]
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def f(tv):
            out, _ = model.stateless_call(
                tv, non_trainable, x, training=training
            )
            return loss(y, out)

        return [np.asarray(g) for g in jax.grad(f)(trainable)]
    raise NotImplementedError(backend)


def vjp(fn, x, cotangent):
    """⟨cotangent, ∂fn/∂x⟩: the input gradient of sum(fn(x) · cotangent),
    by the backend's automatic differentiation."""
    x = keras.ops.convert_to_tensor(np.asarray(x, "float32"))
    cotangent = np.asarray(cotangent, "float32")
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            value = tf.reduce_sum(fn(x) * cotangent)
        return tape.gradient(value, x).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: (fn(v) * cotangent).sum())(x))
    raise NotImplementedError(backend)


def train(
    model: keras.Model,
    data,
    *,
    epochs: int = 5,
    batch_size: int = 64,
    learning_rate: float = 1e-2,
    optimizer: str = "sgd",
    seed: int = 0,
    callbacks=None,
    shuffle: bool = True,
    steps_per_execution: int = 1,
) -> dict[str, list[float]]:
    """Compiles with XLA and trains; returns the history with per-epoch
    train loss and test accuracy (evaluated in inference mode)."""
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    opt = (
        keras.optimizers.SGD(learning_rate, momentum=0.9)
        if optimizer == "sgd"
        else keras.optimizers.Adam(learning_rate)
    )
    model.compile(
        optimizer=opt,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=True,
        # Several steps per compiled call keep Python out of the timing of
        # small-batch runs.
        steps_per_execution=steps_per_execution,
    )
    history = model.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(x_test, y_test),
        verbose=0,
        callbacks=callbacks,
        shuffle=shuffle,
    )
    return {
        "loss": history.history["loss"],
        "accuracy": history.history["accuracy"],
        "test_accuracy": history.history["val_accuracy"],
    }


def train_seeds(
    build: Callable[[], keras.Model],
    data,
    seeds=(0, 1, 2),
    **train_kwargs,
) -> list[dict[str, list[float]]]:
    """Trains one fresh model per seed (the seed sets the initial weights,
    the shuffling and any noise) and returns one history per seed."""
    histories = []
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        histories.append(train(build(), data, seed=seed, **train_kwargs))
    return histories


def compare(
    builders: dict[str, Callable[[], keras.Model]],
    data,
    label: str = "training",
    seeds=(0, 1, 2),
    **train_kwargs,
) -> dict[str, list[dict[str, list[float]]]]:
    """Trains every builder's model once per seed with the same data and
    settings; returns, per builder, one history per seed. Prints a progress
    line per builder with the final test accuracy over the seeds."""
    progress = Progress(len(builders), label)
    results = {}
    for name, build in builders.items():
        results[name] = train_seeds(build, data, seeds, **train_kwargs)
        final = [h["test_accuracy"][-1] for h in results[name]]
        progress.step(
            f"{name}: test accuracy {np.mean(final):.3f} "
            f"[{min(final):.3f}–{max(final):.3f}] over {len(seeds)} seeds"
        )
    return results


class Trainer:
    """One compiled model, re-initialized for every run.

    XLA compilation costs more than training the chapters' small networks,
    so a configuration is compiled once and every seed starts from fresh
    weights drawn from that seed (``build()`` again, non-trainable
    statistics and step counters included), zeroed optimizer state and the
    run's learning rate. ``run`` returns Keras's history dict; the test set
    is evaluated once, after the last epoch, unless ``validation_freq``
    says otherwise. Runs are reproducible in their order, not one by one:
    Keras's one-time build inside the first ``fit`` draws a shuffle, so the
    first run of a Trainer shuffles differently from a later run with the
    same seed.

    Example:

    ```python
    trainer = nb.Trainer(lambda: mlp("BN"), steps_per_execution=10)
    history = trainer.run(data, seed=0, learning_rate=0.1, epochs=5,
                          batch_size=64)
    history["val_accuracy"][-1]
    ```
    """

    def __init__(
        self,
        build: Callable[[], keras.Model],
        *,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        steps_per_execution: int = 1,
        loss=None,
        metrics=("accuracy",),
    ):
        self.build = build
        self.model = build()
        if optimizer == "sgd":
            opt = keras.optimizers.SGD(0.1, momentum=momentum)
        elif optimizer == "adam":
            opt = keras.optimizers.Adam(1e-3)
        else:
            raise ValueError(
                f"Trainer: optimizer must be 'sgd' or 'adam'; "
                f"received optimizer={optimizer!r}"
            )
        self.model.compile(
            optimizer=opt,
            loss=loss
            or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=list(metrics),
            jit_compile=True,
            steps_per_execution=steps_per_execution,
        )

    def reset(self, seed: int, learning_rate: float) -> None:
        """Fresh weights from ``seed``, zero optimizer state, new rate."""
        keras.utils.set_random_seed(seed)
        self.model.set_weights(self.build().get_weights())
        for variable in self.model.optimizer.variables:
            variable.assign(np.zeros(variable.shape, variable.dtype))
        self.model.optimizer.learning_rate.assign(learning_rate)

    def run(
        self,
        data,
        seed: int,
        *,
        learning_rate: float,
        epochs: int,
        batch_size: int = 64,
        shuffle: bool = True,
        callbacks=(),
        validation_freq: int | None = None,
    ) -> dict[str, list[float]]:
        self.reset(seed, learning_rate)
        x, y, x_test, y_test = data
        history = self.model.fit(
            x,
            y,
            batch_size=batch_size,
            epochs=epochs,
            shuffle=shuffle,
            validation_data=(x_test, y_test),
            validation_freq=validation_freq or epochs,
            callbacks=list(callbacks),
            verbose=0,
        )
        return history.history


@keras.saving.register_keras_serializable(package="normbook")
class NoisyShift(keras.layers.Layer):
    """Santurkar et al.'s "noisy BN" noise, to put after a BN layer.

    In training, every activation of every example gets its own noise,
    i.i.d. given the step: ``y = m * x + a`` with
    ``a ~ N(mu_j, s^2)`` and ``m ~ N(nu_j, (s/2)^2)``, where for each unit
    ``j`` the means ``mu_j ~ U(-s, s)`` and ``nu_j ~ U(1, 1 + s)`` are drawn
    anew at every step (``s`` is ``strength``). The next layer therefore
    sees inputs with a non-zero mean and a non-unit variance that change
    at every step: a deliberate covariate shift. Identity in inference.
    """

    def __init__(self, strength: float = 0.5, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.strength = strength
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.strength == 0:
            return inputs
        s = self.strength
        shape = keras.ops.shape(inputs)
        # This step's distribution, one per unit: the means of the shift
        # (in [-s, s]) and of the scale (in [1, 1 + s]) ...
        means = keras.random.uniform(
            (2,) + tuple(shape[-1:]), seed=self.generator
        )
        mu, nu = s * (2 * means[0] - 1), 1 + s * means[1]
        # ... and one draw from it per activation of every example.
        noise = keras.random.normal((2,) + tuple(shape), seed=self.generator)
        a = mu + s * noise[0]
        m = nu + 0.5 * s * noise[1]
        return m * inputs + a

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "strength": self.strength,
            "seed": self.seed,
        }


class PreactivationTracker(keras.callbacks.Callback):
    """Records one unit of the *input* of one or more layers on a fixed
    batch every ``every`` training steps, evaluated as in training (batch
    statistics) without updating any moving statistics.

    ``columns[name]`` holds, per record, the unit's values on the batch;
    ``values[name]`` their percentiles; ``steps`` the training step of
    each record (0 = before training). ``layer_name`` is one name or a
    list of names; with one name, ``values`` is also that layer's array
    of percentiles (``tracker.values`` keeps working as before).
    """

    def __init__(
        self, layer_name, x, unit=0, every=5, percentiles=(15, 50, 85)
    ):
        super().__init__()
        self.names = (
            [layer_name] if isinstance(layer_name, str) else list(layer_name)
        )
        self.single = isinstance(layer_name, str)
        self.x, self.unit = x, unit
        self.every, self.percentiles = every, percentiles
        self.steps = []
        self.columns = {name: [] for name in self.names}
        self._step = 0

    @property
    def values(self):
        table = {
            name: np.array(
                [np.percentile(c, self.percentiles) for c in columns]
            )
            for name, columns in self.columns.items()
        }
        return table[self.names[0]] if self.single else table

    def on_train_begin(self, logs=None):
        targets = [self.model.get_layer(n).input for n in self.names]
        self.probe = keras.Model(self.model.inputs[0], targets)
        self._epoch_start = 0
        self._record()

    def _record(self):
        # The JAX trainer keeps the current weights outside the model
        # during fit; bring them back before reading them.
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()
        probe = self.probe
        outputs, _ = probe.stateless_call(
            [v.value for v in probe.trainable_variables],
            [v.value for v in probe.non_trainable_variables],
            self.x,
            training=True,
        )
        if len(self.names) == 1:
            outputs = [outputs]
        for name, out in zip(self.names, outputs, strict=True):
            column = keras.ops.convert_to_numpy(out)[:, self.unit]
            self.columns[name].append(column)
        self.steps.append(self._step)

    def on_epoch_end(self, epoch, logs=None):
        self._epoch_start = self._step

    def on_train_batch_end(self, batch, logs=None):
        # With several steps per execution, ``batch`` is the index of the
        # last step run in the epoch.
        before = self._step
        self._step = self._epoch_start + batch + 1
        if self._step // self.every > before // self.every:
            self._record()


class BatchStatisticsAccuracy(keras.callbacks.Callback):
    """Per epoch, the test accuracy when normalization layers use the
    statistics of each test batch (training-mode forward, no updates), to
    set beside Keras's own validation accuracy, which uses the moving
    averages.

    The test set is cut into batches of ``batch_size`` (the remainder is
    dropped), so every batch has the same shape and the forward pass is
    compiled once per model and batch size (JAX: ``jax.jit``; TensorFlow:
    one ``tf.function`` trace), and reused when the same model is trained
    again, e.g. over several seeds.
    """

    _compiled: dict = {}

    def __init__(self, x, y, batch_size, every_epoch=True):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.every_epoch = every_epoch
        self.accuracy = []

    def on_epoch_end(self, epoch, logs=None):
        if self.every_epoch:
            self._evaluate()

    def on_train_end(self, logs=None):
        if not self.every_epoch:
            self._evaluate()

    def _forward(self):
        """The model's training-mode forward pass, compiled once."""
        model = self.model
        key = (id(model), self.batch_size)
        if key in self._compiled and self._compiled[key][0] is model:
            return self._compiled[key][1]

        def forward(trainable, non_trainable, xb):
            logits, _ = model.stateless_call(
                trainable, non_trainable, xb, training=True
            )
            return logits

        backend = keras.backend.backend()
        if backend == "jax":
            import jax

            forward = jax.jit(forward)
        elif backend == "tensorflow":
            import tensorflow as tf

            forward = tf.function(forward, reduce_retracing=True)
        self._compiled[key] = (model, forward)
        return forward

    def _evaluate(self):
        model = self.model
        sync = getattr(model, "jax_state_sync", None)
        if sync is not None:
            sync()
        forward = self._forward()
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        n = (len(self.x) // self.batch_size) * self.batch_size
        batches = np.asarray(self.x[:n], "float32").reshape(
            (-1, self.batch_size) + tuple(np.shape(self.x)[1:])
        )
        correct = 0
        for i, xb in enumerate(batches):
            logits = forward(trainable, non_trainable, xb)
            predicted = keras.ops.convert_to_numpy(logits).argmax(-1)
            labels = self.y[i * self.batch_size : (i + 1) * self.batch_size]
            correct += int((predicted == labels).sum())
        self.accuracy.append(correct / n)
