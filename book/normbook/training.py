"""Training loops, seeds, callbacks and autodiff helpers for the chapters."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np

from normbook.claims import spread


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


class Runs:
    """The histories of one configuration, one per seed (Keras's
    ``history.history`` dicts), with their spread."""

    def __init__(self, histories: Sequence[Mapping[str, Sequence[float]]]):
        if not histories:
            raise ValueError("Runs: needs at least one history")
        self.histories = list(histories)

    def __len__(self) -> int:
        return len(self.histories)

    def curves(self, metric: str) -> np.ndarray:
        """Shape (seeds, records): the metric at every record."""
        return np.array([h[metric] for h in self.histories], dtype=float)

    def final(self, metric: str) -> np.ndarray:
        """The metric's last value, one per seed."""
        return self.curves(metric)[:, -1]

    def spread(self, metric: str, digits: int = 3) -> str:
        """The last value's mean and range over the seeds, as text."""
        return spread(self.final(metric), digits)


class Trainer:
    """The book's one way to train: a compiled model, re-initialized per run.

    XLA compilation costs more than training the chapters' small networks,
    so a configuration is compiled once and every run starts from fresh
    weights drawn from its seed (``build()`` again, non-trainable
    statistics and step counters included), zeroed optimizer state and the
    run's learning rate. Two engines share that contract:

    * :meth:`run` / :meth:`runs` — Keras's ``fit`` (callbacks, metrics,
      validation), one run at a time. The test set is evaluated once, after
      the last epoch, unless ``validation_freq`` says otherwise. Runs are
      reproducible in their order, not one by one: Keras's one-time build
      inside the first ``fit`` draws a shuffle, so the first run of a
      Trainer shuffles differently from a later run with the same seed.
    * :meth:`many` — many (seed, learning rate) runs in one compiled call,
      for networks so small that ``fit``'s fixed cost per call is larger
      than the training: ``jax.vmap`` over the runs and ``jax.lax.scan``
      over the steps on JAX; on TensorFlow one XLA-compiled loop over the
      steps, run after run. The model and optimizer are called statelessly
      (``stateless_call``, ``stateless_apply``), so any Keras optimizer
      subclass trains the same way. :meth:`predict_many` and :meth:`load`
      read the trained runs.

    Args:
        build: returns a fresh, built model.
        optimizer: ``"sgd"`` (with ``momentum``), ``"adam"``, or a Keras
            optimizer whose ``learning_rate`` is a float (set per run).
        momentum: SGD's.
        steps_per_execution: ``fit``'s (several steps per compiled call
            keep Python out of small-batch runs).
        loss: default: cross-entropy on logits with integer labels.
        metrics: ``fit``'s.

    Example:

    ```python
    trainer = nb.Trainer(lambda: nb.mlp("BN", inputs=40),
                         steps_per_execution=10)
    history = trainer.run(data, seed=0, learning_rate=0.1, epochs=5,
                          batch_size=64)
    history["val_accuracy"][-1]
    results = trainer.runs(data, seeds=(0, 1, 2), learning_rate=0.1,
                           epochs=5, batch_size=64)
    results.spread("val_accuracy")
    losses = trainer.many(x, y, [(0, 0.01), (1, 0.1)], epochs=5,
                          batch_size=64)          # (2 runs, 5 epochs)
    ```
    """

    def __init__(
        self,
        build: Callable[[], keras.Model],
        *,
        optimizer: str | keras.optimizers.Optimizer = "sgd",
        momentum: float = 0.9,
        steps_per_execution: int = 1,
        loss=None,
        metrics=("accuracy",),
    ):
        self.build = build
        self.model = build()
        if isinstance(optimizer, keras.optimizers.Optimizer):
            opt = optimizer
        elif optimizer == "sgd":
            opt = keras.optimizers.SGD(0.1, momentum=momentum)
        elif optimizer == "adam":
            opt = keras.optimizers.Adam(1e-3)
        else:
            raise ValueError(
                "Trainer: optimizer must be 'sgd', 'adam' or a Keras "
                f"optimizer; received optimizer={optimizer!r}"
            )
        self.optimizer = opt
        self.loss = loss or keras.losses.SparseCategoricalCrossentropy(
            from_logits=True
        )
        self.model.compile(
            optimizer=opt,
            loss=self.loss,
            metrics=list(metrics),
            jit_compile=True,
            steps_per_execution=steps_per_execution,
        )
        self._initial: dict[int, tuple] = {}
        self._engine = None
        self.trainable = self.non_trainable = None

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
        """One run with ``fit``; returns Keras's history dict."""
        self.reset(seed, learning_rate)
        x, y, x_test, y_test = data
        inputs = dict(x=x, y=y, batch_size=batch_size, shuffle=shuffle)
        if shuffle and keras.backend.backend() == "tensorflow":
            # With a global seed set, Keras's TensorFlow array adapter
            # replays one permutation in every epoch (its shuffle is a
            # tf.random op inside the dataset; tensorflow#35682), so the
            # batches would repeat: BN then fits their noise. A fresh
            # permutation per epoch, drawn from the run's seed, as the JAX
            # backend shuffles.
            inputs = dict(x=_Reshuffled(x, y, batch_size, seed), shuffle=False)
        history = self.model.fit(
            **inputs,
            epochs=epochs,
            validation_data=(x_test, y_test),
            validation_freq=validation_freq or epochs,
            callbacks=list(callbacks),
            verbose=0,
        )
        return history.history

    def runs(self, data, seeds, **options) -> Runs:
        """:meth:`run` once per seed, with the same options."""
        return Runs([self.run(data, seed, **options) for seed in seeds])

    # Many runs in one compiled call.

    def initial(self, seed: int) -> tuple[list, list]:
        """The fresh weights of ``seed`` (built once, then cached)."""
        if seed not in self._initial:
            keras.utils.set_random_seed(seed)
            fresh = self.build()
            self._initial[seed] = (
                [np.asarray(v.value) for v in fresh.trainable_variables],
                [np.asarray(v.value) for v in fresh.non_trainable_variables],
            )
        return self._initial[seed]

    def many(
        self,
        x,
        y,
        runs: Sequence[tuple[int, float]],
        *,
        epochs: int,
        batch_size: int,
        transform: Callable[[list], list]
        | Sequence[Callable[[list], list]]
        | None = None,
    ) -> np.ndarray:
        """Trains one copy per (seed, learning rate) in ``runs``.

        The seed draws the initial weights and the order of the
        mini-batches (a fresh permutation per epoch, the remainder
        dropped); statistics in non-trainable variables (BN's moving
        averages) are updated as in ``fit``.

        Args:
            x: the inputs, an array or a tuple of arrays (several inputs).
            y: the targets.
            runs: (seed, learning_rate) pairs.
            epochs, batch_size: as in ``fit``.
            transform: applied to each run's initial trainable weights (a
                list of arrays, in ``model.trainable_variables`` order);
                one function for all runs or one per run.

        Returns:
            The mean training loss per epoch, shape (runs, epochs). The
            trained weights stay in ``self.trainable`` and
            ``self.non_trainable`` (stacked over runs).
        """
        if self._engine is None:
            self._engine = _Engine(self.model, self.optimizer, self.loss)
        n = len(y)
        steps = n // batch_size
        trainable, non_trainable, opt_vars, orders = [], [], [], []
        if transform is None or callable(transform):
            transform = [transform] * len(runs)
        for (seed, learning_rate), change in zip(runs, transform, strict=True):
            tv, ntv = self.initial(seed)
            if change is not None:  # keep each variable's dtype
                tv = [
                    np.asarray(a, b.dtype)
                    for a, b in zip(change(tv), tv, strict=True)
                ]
            trainable.append(tv)
            non_trainable.append(ntv)
            opt_vars.append(self._engine.fresh_state(learning_rate))
            rng = np.random.default_rng(seed)
            orders.append(
                np.concatenate(
                    [
                        rng.permutation(n)[: steps * batch_size].reshape(
                            steps, batch_size
                        )
                        for _ in range(epochs)
                    ]
                )
            )
        self.trainable, self.non_trainable, losses = self._engine.train(
            trainable, non_trainable, opt_vars, x, y, np.stack(orders)
        )
        losses = np.asarray(losses, dtype=np.float64)
        return losses.reshape(len(runs), epochs, steps).mean(-1)

    def predict_many(self, x) -> np.ndarray:
        """Every run of :meth:`many` in inference mode: (runs, n, ...)."""
        return self._engine.predict(self.trainable, self.non_trainable, x)

    def load(self, index: int) -> keras.Model:
        """``self.model`` holding run ``index``'s trained weights (of the
        last :meth:`many`)."""
        for variable, value in zip(
            self.model.trainable_variables, self.trainable, strict=True
        ):
            variable.assign(value[index])
        for variable, value in zip(
            self.model.non_trainable_variables, self.non_trainable, strict=True
        ):
            variable.assign(value[index])
        return self.model


class _Reshuffled(keras.utils.PyDataset):
    """(x, y) in mini-batches, in a new random order every epoch."""

    def __init__(self, x, y, batch_size: int, seed: int):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(y))

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __getitem__(self, i):
        index = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        if isinstance(self.x, (tuple, list)):
            return tuple(a[index] for a in self.x), self.y[index]
        return self.x[index], self.y[index]

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.y))


def _stack(states):
    return [np.stack(a) for a in zip(*states, strict=True)]


class _Engine:
    """:meth:`Trainer.many`'s compiled training and prediction, per backend.

    JAX: ``jax.vmap`` over the runs of a ``jax.lax.scan`` over the steps,
    one ``jax.jit``. TensorFlow's vectorized map does not cover a Keras
    model's stateless call, so there the runs go one after another through
    one ``tf.function(jit_compile=True)`` holding a ``tf.while_loop`` over
    the steps: the same arithmetic, without the batching over runs.
    """

    def __init__(self, model, optimizer, loss):
        self.model, self.optimizer = model, optimizer
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        paths = [v.path for v in optimizer.variables]
        self._lr_index = paths.index(optimizer.learning_rate.path)
        backend = keras.backend.backend()
        if backend == "jax":
            self._build_jax(loss)
        elif backend == "tensorflow":
            self._build_tensorflow(loss)
        else:
            raise NotImplementedError(
                f"Trainer.many: no engine for backend {backend!r}"
            )

    def fresh_state(self, learning_rate: float) -> list:
        state = [np.zeros(v.shape, v.dtype) for v in self.optimizer.variables]
        state[self._lr_index] = np.asarray(
            learning_rate, state[self._lr_index].dtype
        )
        return state

    def _build_jax(self, loss):
        import jax

        model, optimizer = self.model, self.optimizer

        def loss_value(trainable, non_trainable, x, y):
            out, non_trainable = model.stateless_call(
                trainable, non_trainable, x, training=True
            )
            return loss(y, out), non_trainable

        value_and_grad = jax.value_and_grad(loss_value, has_aux=True)

        def one_run(trainable, non_trainable, opt_vars, x, y, order):
            def step(state, batch):
                trainable, non_trainable, opt_vars = state
                xb = jax.tree_util.tree_map(lambda a: a[batch], x)
                (value, non_trainable), grads = value_and_grad(
                    trainable, non_trainable, xb, y[batch]
                )
                trainable, opt_vars = optimizer.stateless_apply(
                    opt_vars, grads, trainable
                )
                return (trainable, non_trainable, opt_vars), value

            state, losses = jax.lax.scan(
                step, (trainable, non_trainable, opt_vars), order
            )
            return state[0], state[1], losses

        train = jax.jit(jax.vmap(one_run, in_axes=(0, 0, 0, None, None, 0)))

        def forward(trainable, non_trainable, x):
            out, _ = model.stateless_call(
                trainable, non_trainable, x, training=False
            )
            return out

        predict = jax.jit(jax.vmap(forward, in_axes=(0, 0, None)))

        def train_all(trainable, non_trainable, opt_vars, x, y, orders):
            return train(
                _stack(trainable),
                _stack(non_trainable),
                _stack(opt_vars),
                x,
                y,
                orders,
            )

        self.train = train_all
        self.predict = lambda tv, ntv, x: np.asarray(predict(tv, ntv, x))

    def _build_tensorflow(self, loss):
        import tensorflow as tf

        # Keras's TensorFlow optimizers have no stateless_apply (it would
        # not combine with tf.distribute), so each run is loaded into the
        # model's and optimizer's own variables and trained in place.
        model, optimizer = self.model, self.optimizer
        variables = (
            model.trainable_variables,
            model.non_trainable_variables,
            optimizer.variables,
        )

        @tf.function(jit_compile=True, reduce_retracing=True)
        def loop(x, y, order):
            def body(i, losses):
                batch = order[i]
                xb = tf.nest.map_structure(lambda a: tf.gather(a, batch), x)
                with tf.GradientTape() as tape:
                    out = model(xb, training=True)
                    value = loss(tf.gather(y, batch), out)
                grads = tape.gradient(value, model.trainable_variables)
                optimizer.apply(grads, model.trainable_variables)
                return i + 1, losses.write(i, value)

            steps = order.shape[0]
            losses = tf.TensorArray(tf.float32, size=steps)
            _, losses = tf.while_loop(lambda i, _: i < steps, body, (0, losses))
            return losses.stack()

        def load(*states):
            for group, values in zip(
                variables[: len(states)], states, strict=True
            ):
                for variable, value in zip(group, values, strict=True):
                    variable.assign(value)

        def read(group):
            return [np.asarray(v.numpy()) for v in group]

        def train_all(trainable, non_trainable, opt_vars, x, y, orders):
            x = tf.nest.map_structure(tf.convert_to_tensor, x)
            y = tf.convert_to_tensor(y)
            trained, statistics, losses = [], [], []
            for run in zip(
                trainable, non_trainable, opt_vars, orders, strict=True
            ):
                load(*run[:3])
                losses.append(loop(x, y, tf.constant(run[3])).numpy())
                trained.append(read(variables[0]))
                statistics.append(read(variables[1]))
            return _stack(trained), _stack(statistics), np.stack(losses)

        @tf.function(jit_compile=True, reduce_retracing=True)
        def forward(x):
            return model(x, training=False)

        def predict(trainable, non_trainable, x):
            x = tf.nest.map_structure(tf.convert_to_tensor, x)
            outputs = []
            for i in range(len(trainable[0])):
                load([a[i] for a in trainable], [a[i] for a in non_trainable])
                outputs.append(forward(x).numpy())
            return np.stack(outputs)

        self.train = train_all
        self.predict = predict


def sync_weights(model: keras.Model) -> None:
    """Brings a model's current weights back into its variables in the
    middle of ``fit`` (the JAX trainer keeps them outside the model while
    it trains; TensorFlow's are always in place), for a callback that
    reads them."""
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


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
        sync_weights(self.model)
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
        sync_weights(model)
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
