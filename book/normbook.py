"""Helpers shared by the chapters: data, training loops, plotting, sliders.

One module so the chapters stay short. Import it in a chapter's first
(hidden) cell: ``import normbook as nb``.

The slider helper is what makes the figures interactive in two places:

* in Jupyter with a kernel, :func:`slider_figure` shows ipywidgets sliders
  and recomputes the figure when one moves;
* in the static site there is no kernel, so the same call also renders a
  frame for every slider position at build time and emits an HTML range
  input that switches between the frames in the browser.

Both come from one display object carrying two MIME types: the widget view
(used by JupyterLab) and ``text/html`` (used by the book, whose
``_config.yml`` ranks the widget view below it for the HTML builder).
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# --------------------------------------------------------------------------
# Set-up and style
# --------------------------------------------------------------------------

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def setup(seed: int = 0) -> None:
    """Seeds every generator and sets the figure style used in the book."""
    keras.utils.set_random_seed(seed)
    plt.rcParams.update(
        {
            "figure.figsize": (6.4, 3.6),
            "figure.dpi": 100,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "font.size": 10,
            "axes.prop_cycle": matplotlib.cycler(color=COLORS),
        }
    )


def figure_png(fig, dpi: int = 80) -> str:
    """The figure as a base64 PNG data URI; closes the figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"data:image/png;base64,{encoded}"


# --------------------------------------------------------------------------
# Sliders: live in Jupyter, precomputed frames in the static site
# --------------------------------------------------------------------------


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class SliderFigure:
    """A figure driven by sliders; see :func:`slider_figure`."""

    def __init__(
        self,
        compute: Callable[..., object],
        params: dict[str, Sequence],
        initial: dict[str, object] | None,
        title: str,
    ):
        if not params:
            raise ValueError("slider_figure: give at least one parameter.")
        for name, values in params.items():
            if len(values) < 2:
                raise ValueError(
                    "slider_figure: every parameter needs >= 2 values. "
                    f"Received: {name}={list(values)!r}"
                )
        self.compute = compute
        self.params = {k: list(v) for k, v in params.items()}
        self.initial = {
            k: (initial or {}).get(k, v[len(v) // 2])
            for k, v in self.params.items()
        }
        self.title = title
        self.id = f"sf-{uuid.uuid4().hex[:10]}"
        self._frames: dict[tuple, str] = {}

    def frame(self, **kwargs) -> str:
        """The PNG data URI for one combination of values (memoized)."""
        key = tuple(kwargs[k] for k in self.params)
        if key not in self._frames:
            fig = self.compute(**kwargs)
            self._frames[key] = figure_png(fig)
        return self._frames[key]

    # -- static: every frame, switched by an inline script -----------------
    def to_html(self) -> str:
        names = list(self.params)
        index_lists = [range(len(self.params[n])) for n in names]
        frames = {}
        for indices in itertools.product(*index_lists):
            kwargs = {
                n: self.params[n][i]
                for n, i in zip(names, indices, strict=True)
            }
            frames["-".join(map(str, indices))] = self.frame(**kwargs)
        controls = []
        for name in names:
            values = self.params[name]
            start = values.index(self.initial[name])
            labels = json.dumps([_format(v) for v in values])
            controls.append(
                '<label class="sf-control" style="display:inline-block;'
                f'margin-right:1.5em">{html.escape(name)} '
                f'<input type="range" min="0" max="{len(values) - 1}" '
                f'step="1" value="{start}" data-param="{html.escape(name)}" '
                f"data-labels='{html.escape(labels)}'> "
                f"<output>{html.escape(_format(values[start]))}</output>"
                "</label>"
            )
        first = "-".join(
            str(self.params[n].index(self.initial[n])) for n in names
        )
        payload = json.dumps(frames)
        return f"""
<div class="slider-figure" id="{self.id}">
<div class="sf-title" style="font-weight:bold">{html.escape(self.title)}</div>
<div class="sf-controls">{"".join(controls)}</div>
<img class="sf-frame" src="{frames[first]}" alt="{html.escape(self.title)}"
     style="max-width:100%">
<script type="application/json" class="sf-frames">{payload}</script>
<script>
(function () {{
  var root = document.getElementById("{self.id}");
  var frames = JSON.parse(root.querySelector(".sf-frames").textContent);
  var inputs = root.querySelectorAll("input[type=range]");
  var image = root.querySelector(".sf-frame");
  function update() {{
    var key = [];
    inputs.forEach(function (input) {{
      var labels = JSON.parse(input.dataset.labels);
      input.nextElementSibling.textContent = labels[input.value];
      key.push(input.value);
    }});
    image.src = frames[key.join("-")];
  }}
  inputs.forEach(function (input) {{
    input.addEventListener("input", update);
  }});
}})();
</script>
</div>"""

    # -- live: ipywidgets recomputing through the kernel --------------------
    def widget(self):
        import ipywidgets as widgets

        sliders = {
            name: widgets.SelectionSlider(
                options=[(_format(v), v) for v in values],
                value=self.initial[name],
                description=name,
                continuous_update=False,
                style={"description_width": "initial"},
            )
            for name, values in self.params.items()
        }
        image = widgets.HTML()

        def refresh(*_):
            kwargs = {n: s.value for n, s in sliders.items()}
            image.value = (
                f'<img src="{self.frame(**kwargs)}" style="max-width:100%">'
            )

        for slider in sliders.values():
            slider.observe(refresh, names="value")
        refresh()
        title = widgets.HTML(f"<b>{html.escape(self.title)}</b>")
        return widgets.VBox([title, *sliders.values(), image])

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = {"text/plain": f"<SliderFigure {self.title!r}>"}
        bundle["text/html"] = self.to_html()
        if os.environ.get("NORMBOOK_STATIC"):
            return bundle  # the book build: no kernel will ever serve it
        try:
            live = self.widget()._repr_mimebundle_()
        except ImportError:  # no ipywidgets: static only
            live = {}
        if isinstance(live, tuple):
            live = live[0]
        for mime, data in live.items():
            if mime != "text/plain":
                bundle[mime] = data
        return bundle


def slider_figure(
    compute: Callable[..., object],
    title: str = "",
    initial: dict[str, object] | None = None,
    **params: Iterable,
) -> SliderFigure:
    """A figure with one slider per keyword argument.

    Args:
        compute: called with one value per parameter, returns a matplotlib
            Figure. Called once per combination of values when the book is
            built (keep the grid small), and on demand in Jupyter.
        title: a caption shown above the sliders.
        initial: starting values (default: the middle of each list).
        **params: the parameter name and the list of values its slider
            steps through.

    Example:

    >>> slider_figure(lambda lr: plot_run(lr), title="Learning rate",
    ...               lr=[0.01, 0.1, 1.0])
    """
    return SliderFigure(
        compute, {k: list(v) for k, v in params.items()}, initial, title
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


# --------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def mnist1d(num_samples: int = 4000, seed: int = 0):
    """MNIST-1D generated locally (never downloaded): returns
    (x_train, y_train, x_test, y_test) with x of shape (n, 40, 1)."""
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset reseeds the global generators; keep the caller's state.
    py_state = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 (mnist1d uses it)
    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    data = make_dataset(args)
    random.setstate(py_state)
    np.random.set_state(np_state)  # noqa: NPY002
    x_train = data["x"].astype("float32")[..., None]
    x_test = data["x_test"].astype("float32")[..., None]
    return x_train, data["y"], x_test, data["y_test"]


def digits(seed: int = 0, test_fraction: float = 0.25):
    """scikit-learn's 8×8 digits (shipped with the package), flattened and
    scaled to [0, 1]: (x_train, y_train, x_test, y_test)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    cut = int(len(x) * (1 - test_fraction))
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


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


def compare(
    builders: dict[str, Callable[[], keras.Model]],
    data,
    label: str = "training",
    **train_kwargs,
) -> dict[str, dict[str, list[float]]]:
    """Trains one model per builder with the same data and settings, with
    a progress line per model."""
    progress = Progress(len(builders), label)
    results = {}
    for name, build in builders.items():
        results[name] = train(build(), data, **train_kwargs)
        progress.step(
            f"{name}: test accuracy {results[name]['test_accuracy'][-1]:.3f}"
        )
    return results


def plot_curves(results, key: str = "loss", ax=None, title: str = ""):
    """One curve per run of `compare`'s results."""
    if ax is None:
        fig, ax = plt.subplots()
    else:
        fig = ax.figure
    for name, history in results.items():
        ax.plot(np.arange(1, len(history[key]) + 1), history[key], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(key.replace("_", " "))
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    return fig


# --------------------------------------------------------------------------
# Internal covariate shift experiments
# --------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="normbook")
class NoisyShift(keras.layers.Layer):
    """Santurkar et al.'s "noisy BN": in training, every unit's activation
    is scaled by 1 + s·a and shifted by s·b with a, b ~ N(0, 1) drawn anew
    at every step, so the layer's output distribution keeps moving (a
    deliberate covariate shift). Identity in inference."""

    def __init__(self, strength: float = 0.5, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.strength = strength
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.strength == 0:
            return inputs
        units = inputs.shape[-1]
        a = keras.random.normal((units,), seed=self.generator)
        b = keras.random.normal((units,), seed=self.generator)
        return inputs * (1 + self.strength * a) + self.strength * b

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "strength": self.strength,
            "seed": self.seed,
        }


class PreactivationTracker(keras.callbacks.Callback):
    """Records percentiles of one layer's *input* on a fixed batch every
    `every` training steps, evaluated as in training (batch statistics)
    without updating any moving statistics."""

    def __init__(
        self, layer_name, x, unit=0, every=5, percentiles=(15, 50, 85)
    ):
        super().__init__()
        self.layer_name, self.x, self.unit = layer_name, x, unit
        self.every, self.percentiles = every, percentiles
        self.steps, self.values = [], []
        self._step = 0

    def on_train_begin(self, logs=None):
        target = self.model.get_layer(self.layer_name).input
        self.probe = keras.Model(self.model.inputs[0], target)
        self._record()

    def _record(self):
        probe = self.probe
        out, _ = probe.stateless_call(
            [v.value for v in probe.trainable_variables],
            [v.value for v in probe.non_trainable_variables],
            self.x,
            training=True,
        )
        column = keras.ops.convert_to_numpy(out)[:, self.unit]
        self.steps.append(self._step)
        self.values.append(np.percentile(column, self.percentiles))

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.every == 0:
            self._record()


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


class BatchStatisticsAccuracy(keras.callbacks.Callback):
    """Per epoch, the test accuracy when normalization layers use the
    statistics of each test batch (training-mode forward, no updates), to
    set beside Keras's own validation accuracy, which uses the moving
    averages."""

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

    def _evaluate(self):
        model = self.model
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        correct = 0
        for start in range(
            0, len(self.x) - self.batch_size + 1, self.batch_size
        ):
            xb = self.x[start : start + self.batch_size]
            logits, _ = model.stateless_call(
                trainable, non_trainable, xb, training=True
            )
            predicted = keras.ops.convert_to_numpy(logits).argmax(-1)
            correct += (
                predicted == self.y[start : start + self.batch_size]
            ).sum()
        used = (len(self.x) // self.batch_size) * self.batch_size
        self.accuracy.append(correct / used)
