"""Many small training runs in one compiled call (JAX backend).

Chapter 14 compares optimizers, initial scales and conditioning schemes
over several seeds and learning rates. Its networks are so small that
``model.fit``'s fixed cost per call (data adapters, callbacks, validation)
is larger than the training itself; here every run of one configuration
is trained at once: ``jax.lax.scan`` over the steps, ``jax.vmap`` over the
runs, one ``jax.jit`` compilation per model and optimizer. The model and
its optimizer are ordinary Keras objects, called statelessly
(``stateless_call``, ``stateless_apply``), so any Keras optimizer subclass
(e.g. one that rewrites ``update_step``) trains the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np


class ManyRuns:
    """One Keras model and optimizer, trained from many starts at once.

    A run is a (seed, learning rate) pair: the seed draws the initial
    weights (``build()`` under ``keras.utils.set_random_seed(seed)``) and
    the order of the mini-batches (a fresh permutation per epoch, the
    remainder dropped); the learning rate is the optimizer's. Every run
    starts with zero optimizer state. Statistics in non-trainable
    variables (BN's moving averages) are updated as in ``fit``.

    Args:
        build: returns a fresh, built model.
        optimizer: a Keras optimizer; its ``learning_rate`` must be a
            float (it is set per run).
        loss: a Keras loss, called as ``loss(y_true, y_pred)``.

    Example:

    ```python
    runs = ManyRuns(lambda: mlp(), keras.optimizers.SGD(0.1, momentum=0.9),
                    keras.losses.SparseCategoricalCrossentropy(True))
    losses = runs.run(x, y, [(0, 0.01), (1, 0.01)], epochs=5,
                      batch_size=64)          # (2 runs, 5 epochs)
    logits = runs.predict(x_test)             # (2 runs, n, 10)
    ```
    """

    def __init__(
        self,
        build: Callable[[], keras.Model],
        optimizer: keras.optimizers.Optimizer,
        loss,
    ):
        if keras.backend.backend() != "jax":
            raise NotImplementedError(
                "ManyRuns compiles with jax.jit and jax.vmap; run the "
                "chapter with KERAS_BACKEND=jax. Received: backend="
                f"{keras.backend.backend()!r}"
            )
        import jax

        self.build, self.optimizer = build, optimizer
        self.model = model = build()
        optimizer.build(model.trainable_variables)
        paths = [v.path for v in optimizer.variables]
        self._lr_index = paths.index(optimizer.learning_rate.path)
        self._initial: dict[int, tuple] = {}

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

        self._train = jax.jit(
            jax.vmap(one_run, in_axes=(0, 0, 0, None, None, 0))
        )

        def forward(trainable, non_trainable, x):
            out, _ = model.stateless_call(
                trainable, non_trainable, x, training=False
            )
            return out

        self._forward = jax.jit(jax.vmap(forward, in_axes=(0, 0, None)))
        self.trainable = self.non_trainable = None

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

    def run(
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
            ov = [np.zeros(v.shape, v.dtype) for v in self.optimizer.variables]
            ov[self._lr_index] = np.asarray(
                learning_rate, ov[self._lr_index].dtype
            )
            opt_vars.append(ov)
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

        def stack(states):
            return [np.stack(a) for a in zip(*states, strict=True)]

        self.trainable, self.non_trainable, losses = self._train(
            stack(trainable),
            stack(non_trainable),
            stack(opt_vars),
            x,
            y,
            np.stack(orders),
        )
        losses = np.asarray(losses, dtype=np.float64)
        return losses.reshape(len(runs), epochs, steps).mean(-1)

    def predict(self, x) -> np.ndarray:
        """Every trained run's output in inference mode: (runs, n, ...)."""
        return np.asarray(self._forward(self.trainable, self.non_trainable, x))

    def load(self, index: int) -> keras.Model:
        """``self.model`` holding run ``index``'s trained weights."""
        for variable, value in zip(
            self.model.trainable_variables, self.trainable, strict=True
        ):
            variable.assign(value[index])
        for variable, value in zip(
            self.model.non_trainable_variables, self.non_trainable, strict=True
        ):
            variable.assign(value[index])
        return self.model
