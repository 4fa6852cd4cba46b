"""Sliders: live ipywidgets in Jupyter, precomputed frames in the static site.

A figure with sliders is one display object carrying two MIME types: the
widget view (used by JupyterLab, recomputing through the kernel) and
``text/html`` (used by the book, whose ``_config.yml`` ranks the widget view
below it for the HTML builder): in the static site there is no kernel, so
the same call renders a frame for every slider position at build time and
emits an HTML range input that switches between them in the browser.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import os
import uuid
from collections.abc import Callable, Iterable, Sequence

import matplotlib.pyplot as plt


def figure_png(fig, dpi: int = 100) -> str:
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
