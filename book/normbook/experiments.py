"""The chapters' experiments: models by name, runs over seeds, their spread.

A chapter states its experiment as configuration — which normalizer, which
network, which learning rates, how many seeds — and reads the result:

```python
build = lambda: nb.mlp("BRN", inputs=64, units=128, depth=3,
                       total_steps=STEPS)
results = nb.grid({"BN": lambda: nb.mlp("BN", inputs=64),
                   "BRN": build}, data, seeds=SEEDS,
                  learning_rate=0.05, epochs=5, batch_size=8)
results["BRN"].final("val_accuracy")          # one value per seed
results["BRN"].spread("val_accuracy")         # "0.912 [0.905–0.920]"
```

Everything here is plain Keras: :func:`normalizer` returns the layer the
chapter names, :func:`mlp` and :func:`convnet` stack them, and
:func:`grid` trains one compiled :class:`~normbook.training.Trainer` per
configuration, re-initialized for every seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import keras

import keraslayers
from normbook.training import Progress, Runs, Trainer

# The normalizers the chapters compare, by the names the text uses. Every
# entry takes the same keyword options and ignores those it has no use for,
# so that one grid can list "BN", "GN" and "FRN" side by side.
KINDS = (
    "BN",
    "BRN",
    "BRN, paper schedule",
    "BKN",
    "BKN, no gate",
    "LN",
    "IN",
    "GN",
    "FRN",
    "FRN, learned epsilon",
    "none",
)


def _brn_compressed(momentum, total_steps, eps):
    """The paper's milestones (plain BN for the first 5k of 40k steps,
    d_max at 5 by 25k, r_max at 3 by 40k) compressed into ``total_steps``."""
    if not total_steps or total_steps < 8:
        raise ValueError(
            "normalizer('BRN'): the schedule is compressed into the run, "
            f"so total_steps must be at least 8; received {total_steps!r}"
        )
    hold = total_steps // 8
    return keraslayers.BatchRenormalization(
        momentum=momentum,
        **eps,
        r_max=keraslayers.LinearRamp(1.0, 3.0, hold, total_steps),
        d_max=keraslayers.LinearRamp(0.0, 5.0, hold, total_steps * 5 // 8),
    )


def normalizer(
    kind: str,
    *,
    momentum: float = 0.99,
    epsilon: float | None = None,
    groups: int = 8,
    total_steps: int | None = None,
) -> keras.layers.Layer | None:
    """The normalization layer called ``kind`` (one of :data:`KINDS`).

    Args:
        kind: ``"BN"`` (Keras's ``BatchNormalization``), ``"BRN"`` (with the
            paper's schedule compressed into ``total_steps``), ``"BRN,
            paper schedule"`` (its 5k/25k/40k steps as they are), ``"BKN"``,
            ``"BKN, no gate"`` (the Kalman gain without its gate), ``"LN"``,
            ``"IN"``, ``"GN"`` (``groups`` groups), ``"FRN"`` (ε fixed),
            ``"FRN, learned epsilon"``, ``"none"`` (returns None).
        momentum: of the moving statistics (BN, BRN, BKN).
        epsilon: added to the variance; by default each layer's own
            (1e-3 for Keras's layers and BRN, 1e-5 for BKN). FRN's is its
            own.
        groups: GN's number of groups.
        total_steps: the run's length, for BRN's compressed schedule.
    """
    # Only the options given: each layer keeps its own defaults otherwise.
    eps = {} if epsilon is None else {"epsilon": epsilon}
    if kind == "BN":
        return keras.layers.BatchNormalization(momentum=momentum, **eps)
    if kind == "BRN":
        return _brn_compressed(momentum, total_steps, eps)
    if kind == "BRN, paper schedule":
        return keraslayers.BatchRenormalization(
            momentum=momentum, **eps, **keraslayers.renorm_schedule()
        )
    if kind == "BKN":
        return keraslayers.BatchKalmanNormalization(momentum=momentum, **eps)
    if kind == "BKN, no gate":
        # A gate ratio this large keeps the gate open at every step.
        return keraslayers.BatchKalmanNormalization(
            momentum=momentum, **eps, gate_ratio=1e30
        )
    if kind == "LN":
        return keras.layers.LayerNormalization(**eps)
    if kind == "IN":
        return keras.layers.GroupNormalization(groups=-1, **eps)
    if kind == "GN":
        return keras.layers.GroupNormalization(groups=groups, **eps)
    if kind == "FRN":
        return keraslayers.FilterResponseNormalization()
    if kind == "FRN, learned epsilon":
        return keraslayers.FilterResponseNormalization(learned_epsilon=True)
    if kind == "none":
        return None
    raise ValueError(
        f"normalizer: kind must be one of {', '.join(KINDS)}; "
        f"received kind={kind!r}"
    )


def activation(kind: str) -> keras.layers.Layer:
    """``"relu"``, ``"tlu"`` (FRN's thresholded unit), ``"sigmoid"``,
    ``"tanh"`` or ``"linear"``, as a layer."""
    if kind == "relu":
        return keras.layers.ReLU()
    if kind == "tlu":
        return keraslayers.TLU()
    if kind in ("sigmoid", "tanh", "linear"):
        return keras.layers.Activation(kind)
    raise ValueError(
        "activation: kind must be 'relu', 'tlu', 'sigmoid', 'tanh' or "
        f"'linear'; received kind={kind!r}"
    )


Norm = str | Callable[[], keras.layers.Layer | None] | None


def _norm_layer(norm: Norm, options: Mapping) -> keras.layers.Layer | None:
    if norm is None:
        return None
    if isinstance(norm, str):
        return normalizer(norm, **options)
    return norm()


def _block(
    weights: keras.layers.Layer,
    norm: Norm,
    act: str,
    placement: str,
    options,
) -> list:
    layer = _norm_layer(norm, options)
    if layer is None:
        return [weights, activation(act)]
    if placement == "before":
        return [weights, layer, activation(act)]
    if placement == "after":
        return [weights, activation(act), layer]
    raise ValueError(
        "mlp/convnet: placement must be 'before' or 'after' (the "
        f"activation); received placement={placement!r}"
    )


def mlp(
    norm: Norm = "BN",
    *,
    inputs: int,
    units: int = 128,
    depth: int = 3,
    classes: int = 10,
    activation: str = "relu",
    placement: str = "before",
    dense: Callable[[int], keras.layers.Layer] | None = None,
    use_bias: bool | None = None,
    **options,
) -> keras.Sequential:
    """``depth`` blocks of Dense → normalizer → activation, then a Dense
    head with ``classes`` logits.

    Args:
        norm: a :func:`normalizer` kind, a function returning a fresh
            layer, or None (no normalization).
        inputs: the input's length.
        units, depth: width and number of hidden blocks.
        activation: see :func:`activation`.
        placement: the normalizer ``"before"`` or ``"after"`` the
            activation.
        dense: returns the hidden layer for a width (default: Keras's
            ``Dense``); pass e.g. ``keraslayers.WeightNormDense``.
        use_bias: of the default hidden ``Dense`` layers; by default a
            bias only where no normalizer follows (``norm`` None or
            ``"none"``), since a normalizer's centering removes it.
        **options: passed to :func:`normalizer` (momentum, epsilon, groups,
            total_steps).
    """
    if use_bias is None:
        use_bias = norm is None or norm == "none"
    if dense is None:

        def dense(width):
            return keras.layers.Dense(width, use_bias=use_bias)

    layers = [keras.Input((inputs,))]
    for _ in range(depth):
        layers += _block(dense(units), norm, activation, placement, options)
    return keras.Sequential(layers + [keras.layers.Dense(classes)])


def convnet(
    norm: Norm = "BN",
    *,
    input_shape: Sequence[int] = (8, 8, 1),
    channels: int = 16,
    depth: int = 3,
    strides: Sequence[int] | None = None,
    classes: int = 10,
    activation: str = "relu",
    head: str = "pool",
    **options,
) -> keras.Sequential:
    """``depth`` blocks of a 3×3 Conv2D (no bias) → normalizer →
    activation, then global average pooling (``head="pool"``) or
    flattening (``head="flatten"``) and a Dense head.

    ``strides`` gives each convolution's stride (default 1 everywhere);
    the other arguments are :func:`mlp`'s.
    """
    strides = tuple(strides) if strides is not None else (1,) * depth
    if len(strides) != depth:
        raise ValueError(
            f"convnet: strides needs one entry per convolution ({depth}); "
            f"received strides={strides!r}"
        )
    if head not in ("pool", "flatten"):
        raise ValueError(
            f"convnet: head must be 'pool' or 'flatten'; received {head!r}"
        )
    layers = [keras.Input(tuple(input_shape))]
    for stride in strides:
        conv = keras.layers.Conv2D(
            channels, 3, strides=stride, padding="same", use_bias=False
        )
        layers += _block(conv, norm, activation, "before", options)
    pool = (
        keras.layers.GlobalAveragePooling2D()
        if head == "pool"
        else keras.layers.Flatten()
    )
    return keras.Sequential(layers + [pool, keras.layers.Dense(classes)])


def grid(
    configurations: Mapping[object, Callable[[], keras.Model] | Trainer],
    data,
    *,
    seeds: Sequence[int],
    label: str = "",
    show: str = "val_accuracy",
    trainer_options: Mapping | None = None,
    **run_options,
) -> dict[object, Runs]:
    """Trains every configuration once per seed, with equal budgets.

    Args:
        configurations: name → a function returning a fresh model (one
            :class:`Trainer` is compiled for it) or a ready ``Trainer``.
        data: ``(x_train, y_train, x_test, y_test)``.
        seeds: every configuration runs on each of them.
        label: for the progress lines.
        show: the metric each progress line reports (its spread).
        trainer_options: for the Trainers this function compiles
            (optimizer, momentum, steps_per_execution, loss, metrics).
        **run_options: :meth:`Trainer.run`'s (learning_rate, epochs,
            batch_size, validation_freq, ...), the same for all.

    Returns:
        name → :class:`Runs`, in the order given.
    """
    progress = Progress(len(configurations), label)
    results = {}
    for name, config in configurations.items():
        trainer = (
            config
            if isinstance(config, Trainer)
            else Trainer(config, **(trainer_options or {}))
        )
        results[name] = trainer.runs(data, seeds, **run_options)
        if show in results[name].histories[0]:
            progress.step(f"{name}: {show} {results[name].spread(show)}")
        else:
            progress.step(str(name))
    return results
