"""The chapters' helper module: the slider helper's two faces, the claims."""

import json
import re

import matplotlib.pyplot as plt
import pytest

import normbook


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


# The registry of checked claims (normbook.claims): chapters record keyed
# claims, chapter 15 quotes them.


def _chapter(book, name, text):
    book.mkdir(exist_ok=True)
    (book / f"{name}.md").write_text(text)


def test_a_keyed_claim_records_what_was_checked(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("NORMBOOK_CLAIMS_DIR", str(tmp_path))
    normbook.claim(2 > 1, "two beats one", "2 vs 1", key="two-beats-one")
    record = json.loads((tmp_path / "two-beats-one.json").read_text())
    assert record == {
        "key": "two-beats-one",
        "statement": "two beats one",
        "evidence": "2 vs 1",
    }
    assert capsys.readouterr().out == "checked: two beats one (2 vs 1)\n"
    normbook.claim(True, "no key, no record")
    assert [p.name for p in tmp_path.iterdir()] == ["two-beats-one.json"]


def test_a_failing_claim_writes_no_record_and_removes_an_old_one(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("NORMBOOK_CLAIMS_DIR", str(tmp_path))
    with pytest.raises(normbook.ClaimError, match="the numbers disagree"):
        normbook.claim(1 > 2, "one beats two", key="one-beats-two")
    assert not list(tmp_path.iterdir())
    normbook.claim(True, "held once", key="held-once")
    with pytest.raises(normbook.ClaimError):
        normbook.claim(False, "holds no more", key="held-once")
    assert not list(tmp_path.iterdir())


def test_a_key_must_be_a_slug(monkeypatch, tmp_path):
    monkeypatch.setenv("NORMBOOK_CLAIMS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=r"key='BRN small'"):
        normbook.claim(True, "s", key="BRN small")


def test_checked_returns_the_record(monkeypatch, tmp_path):
    monkeypatch.setenv("NORMBOOK_CLAIMS_DIR", str(tmp_path / "claims"))
    book = tmp_path / "book"
    _chapter(book, "ch01_a", 'nb.claim(ok, "a holds", "1.0", key="a-holds")\n')
    normbook.claim(True, "a holds", "1.0", key="a-holds")
    record = normbook.checked("a-holds", "ch01_a", book_dir=book)
    assert record == {
        "key": "a-holds",
        "statement": "a holds",
        "evidence": "1.0",
    }


def test_checked_without_a_record_says_which_chapter_must_run(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("NORMBOOK_CLAIMS_DIR", str(tmp_path / "claims"))
    book = tmp_path / "book"
    _chapter(book, "ch01_a", 'nb.claim(ok, "a holds", key="a-holds")\n')
    with pytest.raises(normbook.ClaimError, match="ch01_a must run first"):
        normbook.checked("a-holds", "ch01_a", book_dir=book)


def test_checked_rejects_the_stale_record_of_a_removed_claim(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("NORMBOOK_CLAIMS_DIR", str(tmp_path / "claims"))
    book = tmp_path / "book"
    normbook.claim(True, "a holds", key="a-holds")  # the record stays behind
    _chapter(book, "ch01_a", 'nb.claim(ok, "a holds")\n')  # key removed
    with pytest.raises(normbook.ClaimError, match="stale"):
        normbook.checked("a-holds", "ch01_a", book_dir=book)


def test_checked_rejects_a_key_used_in_two_chapters(monkeypatch, tmp_path):
    monkeypatch.setenv("NORMBOOK_CLAIMS_DIR", str(tmp_path / "claims"))
    book = tmp_path / "book"
    normbook.claim(True, "a holds", key="a-holds")
    _chapter(book, "ch01_a", 'nb.claim(ok, "a holds", key="a-holds")\n')
    _chapter(book, "ch02_b", "nb.claim(ok, 'copy', key='a-holds')\n")
    with pytest.raises(normbook.ClaimError, match="once in the book"):
        normbook.checked("a-holds", "ch01_a", book_dir=book)


def test_a_chapter_run_outside_the_build_records_nothing(monkeypatch, tmp_path):
    # JupyterLab, a survey or a run on the other backend: the claim is
    # checked and shown, but the build's records are left as they are.
    monkeypatch.delenv("NORMBOOK_CLAIMS_DIR", raising=False)
    monkeypatch.setattr(normbook.claims, "REPO_ROOT", tmp_path)
    normbook.claim(True, "a holds", "1.0", key="a-holds")
    with pytest.raises(normbook.ClaimError):
        normbook.claim(False, "b holds", key="b-holds")
    assert not list(tmp_path.rglob("*"))
    assert normbook.claims.claims_dir() == tmp_path / "_build" / "claims"


def test_in_a_kernel_a_checked_claim_is_shown_as_a_result(monkeypatch):
    import IPython
    import IPython.display

    class Kernel:
        kernel = object()

    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: Kernel())
    monkeypatch.setattr(
        IPython.display, "display", lambda data, raw: shown.append(data)
    )
    normbook.claim(True, "a < b", "1 vs 2")
    (bundle,) = shown
    assert bundle["text/plain"] == "checked: a < b (1 vs 2)"
    assert 'class="normbook-checked"' in bundle["text/html"]
    assert "a &lt; b (1 vs 2)" in bundle["text/html"]
