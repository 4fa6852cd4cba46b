"""The chapters' helper module: the slider helper's two faces."""

import re
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "book"))
import normbook  # noqa: E402


def _figure(a, b):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [a, b])
    return fig


def test_static_html_has_one_frame_per_combination():
    sf = normbook.slider_figure(_figure, title="t", a=[1, 2, 3], b=[0, 5])
    html = sf.to_html()
    assert html.count('type="range"') == 2
    frames = re.search(r'class="sf-frames">(\{.*?\})</script>', html, re.S)
    keys = set(re.findall(r'"(\d+-\d+)"', frames.group(1)))
    assert keys == {f"{i}-{j}" for i in range(3) for j in range(2)}
    assert len(set(re.findall(r"data:image/png;base64,[^\"]+", html))) == 6


def test_live_widget_recomputes_when_a_slider_moves():
    sf = normbook.slider_figure(_figure, title="t", a=[1, 2, 3], b=[0, 5])
    box = sf.widget()
    sliders = [w for w in box.children if hasattr(w, "options")]
    image = box.children[-1]
    before = image.value
    sliders[0].value = 3 if sliders[0].value != 3 else 1
    assert image.value != before and "data:image/png" in image.value


def test_bundle_offers_the_widget_view_live_and_html_for_the_book(monkeypatch):
    sf = normbook.slider_figure(_figure, title="t", a=[1, 2], b=[3, 4])
    monkeypatch.delenv("NORMBOOK_STATIC", raising=False)
    live = sf._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in live
    assert "text/html" in live
    monkeypatch.setenv("NORMBOOK_STATIC", "1")
    static = sf._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" not in static


def test_rejects_a_slider_with_one_value():
    with pytest.raises(ValueError, match=r"a=\[1\]"):
        normbook.slider_figure(_figure, a=[1], b=[1, 2])
