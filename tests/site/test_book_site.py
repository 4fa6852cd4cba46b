"""Checks on the built book in _build/html (`make book` runs first).

The build itself is the execution test: a failing cell or a warning fails
`make book`. These tests check what the build produced.
"""

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"


def _toc_documents() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    docs = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                docs.append(entry["file"])
            walk(entry.get("sections"))
            for part in entry.get("parts", []) or []:
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []) or []:
        walk(part.get("chapters"))
    return docs


class _ResourceCollector(HTMLParser):
    """Collects the URLs a browser would fetch when it opens the page."""

    def __init__(self):
        super().__init__()
        self.resources: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "audio", "video"):
            if attrs.get("src"):
                self.resources.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            rel = (attrs.get("rel") or "").lower()
            if any(r in rel for r in ("stylesheet", "preload", "icon")):
                self.resources.append(attrs["href"])


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    if not HTML.is_dir():
        pytest.fail("no _build/html: run `make book` before the site tests")
    return {
        doc: (HTML / f"{doc}.html").read_text(encoding="utf-8")
        for doc in _toc_documents()
    }


def test_the_landing_page_has_an_icon_to_find(pages):
    """The site's index.html is a redirect that links no icon, so a
    browser asks for /favicon.ico there: it must exist (an .ico)."""
    landing = _ResourceCollector()
    landing.feed((HTML / "index.html").read_text(encoding="utf-8"))
    assert not any("icon" in r for r in landing.resources)
    icon = HTML / "favicon.ico"
    assert icon.is_file() and icon.read_bytes()[:4] == b"\x00\x00\x01\x00"


def test_the_api_page_shows_no_raw_markdown(pages):
    """The docstrings' Markdown links and code spans reach the API page as
    links and code, not as brackets and backticks."""
    api = next(html for doc, html in pages.items() if doc.endswith("api"))
    main = api[api.index("<main") :]
    text = re.sub(r"<pre.*?</pre>", "", main, flags=re.S)
    text = re.sub(r"<[^>]+>", "", text)
    assert "](http" not in text
    assert "`" not in text, text[max(text.index("`") - 80, 0) :][:160]
    assert 'href="https://arxiv.org/' in api


def test_every_toc_document_was_built(pages):
    assert pages, "the TOC lists no documents"
    for doc, text in pages.items():
        assert "<html" in text, doc


def test_no_page_loads_anything_from_outside_the_site(pages):
    for doc, text in pages.items():
        collector = _ResourceCollector()
        collector.feed(text)
        external = [
            url
            for url in collector.resources
            if url.startswith(("http://", "https://", "//"))
        ]
        assert not external, f"{doc} loads external resources: {external}"


def test_intro_shows_the_output_of_its_executed_cell(pages):
    import keraslayers

    text = pages["book/intro"]
    assert f"keraslayers {keraslayers.__version__}" in text
    assert "backend" in text


def test_citations_resolve_to_the_bibliography(pages):
    references = (HTML / "book" / "references.html").read_text(encoding="utf-8")
    entries = set(re.findall(r'class="citation" id="([^"]+)"', references))
    assert entries, "the references page lists no entries"
    cited = 0
    for doc, text in pages.items():
        for target in re.findall(
            r'class="bibtex-citation"[^>]*>.*?href="([^"]+)"', text, re.S
        ):
            cited += 1
            page, _, anchor = target.partition("#")
            assert page.endswith("references.html"), (doc, target)
            assert anchor in entries, f"{doc}: unresolved citation {target}"
    assert cited > 0
    assert "batch normalization: accelerating deep network training" in (
        references.lower()
    )


# A statement that draws a figure at the top level of a cell: the figure
# must reach the page (a non-interactive backend would draw it silently).
_DRAWS = re.compile(
    r"^(?:\w[\w, ]*=\s*)?(?:plt\.(?:subplots|figure)|nb\.plot_\w+)\(", re.M
)


def _executed_notebooks():
    """The executed chapters, with their outputs, from the build's
    jupyter-cache (the newest record of each chapter in the TOC; the
    copies under _build/jupyter_execute lack the outputs of chapters that
    a later build took from the cache)."""
    from jupyter_cache import get_cache

    cache = get_cache(ROOT / "_build" / ".jupyter_cache")
    chapters = {f"{doc}.md" for doc in _toc_documents()}
    newest = {}
    for record in cache.list_cache_records():
        uri = Path(record.uri)
        name = str(uri.relative_to(ROOT)) if uri.is_absolute() else str(uri)
        if name in chapters and (
            name not in newest or record.created > newest[name].created
        ):
            newest[name] = record
    return {
        Path(name).stem: cache.get_cache_bundle(record.pk).nb
        for name, record in newest.items()
    }


def test_every_figure_a_chapter_draws_reaches_the_page():
    notebooks = _executed_notebooks()
    assert notebooks, "no executed chapters under _build/jupyter_execute"
    checked = 0
    for name, notebook in notebooks.items():
        for index, cell in enumerate(notebook["cells"]):
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            outputs = cell.get("outputs", [])
            for output in outputs:
                text = "".join(output.get("data", {}).get("text/plain", ""))
                assert not (
                    text.startswith("<Figure size")
                    and "image/png" not in output.get("data", {})
                ), f"{name} cell {index}: a figure printed as text"
            if _DRAWS.search(source):
                checked += 1
                images = [
                    o for o in outputs if "image/png" in o.get("data", {})
                ]
                assert images, f"{name} cell {index} draws a figure not shown"
    assert checked > 0


def test_no_chapter_output_shows_inf_or_nan():
    number = re.compile(r"(?<![\w.])-?(?:inf|nan)(?![\w])", re.I)
    for name, notebook in _executed_notebooks().items():
        for index, cell in enumerate(notebook["cells"]):
            for output in cell.get("outputs", []):
                text = "".join(output.get("text", "")) + "".join(
                    output.get("data", {}).get("text/plain", "")
                )
                assert not number.search(text), (
                    f"{name} cell {index} prints inf or nan: "
                    f"{number.search(text).group(0)!r} in {text[:200]!r}"
                )
