"""The built book in headless Chromium (Debian's, driven by Playwright).

Every page of the TOC must load with no console error and no request
outside the site; in every chapter a kernel-free slider, when moved, must
change the figure it drives; math must be typeset, search and the dark mode
must work offline. `make test` installs Chromium when it is missing; a
missing browser fails these tests, it never skips them.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from ..tools import load_tool
from .test_book_site import HTML, ROOT, _toc_documents

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "Chromium is not installed: `make test` installs Debian's "
            "chromium package; these tests do not skip without it."
        )
    return path


@pytest.fixture(scope="module")
def site():
    if not HTML.is_dir():
        pytest.fail("no _build/html: run `make book` first")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=_chromium(), args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


class _Visit:
    """Opens a page, recording console errors and outside requests."""

    def __init__(self, browser, site, path):
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.page = browser.new_page()
        self.page.on(
            "console",
            lambda msg: msg.type == "error" and self.errors.append(msg.text),
        )
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

        def on_request(request):
            url = request.url
            if not url.startswith((site, "data:", "blob:", "about:")):
                self.outside.append(url)

        self.page.on("request", on_request)
        self.page.on(
            "requestfailed",
            lambda r: self.errors.append(f"failed: {r.url}"),
        )
        self.page.goto(f"{site}/{path}", wait_until="networkidle")

    def close(self):
        self.page.close()


def _chapters() -> list[str]:
    return [doc for doc in _toc_documents() if Path(doc).name.startswith("ch")]


@pytest.mark.parametrize("doc", _toc_documents())
def test_page_loads_cleanly_and_stays_inside_the_site(browser, site, doc):
    visit = _Visit(browser, site, f"{doc}.html")
    try:
        assert visit.outside == [], f"{doc}: outside requests {visit.outside}"
        assert visit.errors == [], f"{doc}: console errors {visit.errors}"
        assert visit.page.title()
    finally:
        visit.close()


@pytest.mark.parametrize("doc", _chapters())
def test_every_chapter_has_a_kernel_free_slider_that_moves_its_figure(
    browser, site, doc
):
    visit = _Visit(browser, site, f"{doc}.html")
    try:
        figures = visit.page.locator(".slider-figure")
        assert figures.count() >= 1, f"{doc}: no slider figure"
        for i in range(figures.count()):
            figure = figures.nth(i)
            slider = figure.locator("input[type=range]").first
            image = figure.locator("img.sf-frame")
            before = image.get_attribute("src")
            current = int(slider.input_value())
            maximum = int(slider.get_attribute("max"))
            target = 0 if current != 0 else maximum
            slider.evaluate(
                "(el, v) => { el.value = v;"
                " el.dispatchEvent(new Event('input')); }",
                target,
            )
            after = image.get_attribute("src")
            assert after != before, f"{doc}: slider {i} did not move its figure"
            assert after.startswith("data:image/png;base64,")
        assert visit.errors == []
    finally:
        visit.close()


def test_math_is_typeset_offline(browser, site):
    doc = next(
        d
        for d in _toc_documents()
        if "$" in (HTML.parent.parent / f"{d}.md").read_text(encoding="utf-8")
    )
    visit = _Visit(browser, site, f"{doc}.html")
    try:
        visit.page.wait_for_selector("mjx-container", timeout=15000)
        assert visit.page.locator("mjx-container").count() > 0
        assert visit.outside == [] and visit.errors == []
    finally:
        visit.close()


def test_search_works_offline(browser, site):
    visit = _Visit(browser, site, "search.html?q=normalization")
    try:
        visit.page.wait_for_selector(
            "#search-results li, ul.search li", timeout=15000
        )
        assert visit.page.locator("ul.search li").count() > 0
        assert visit.outside == []
    finally:
        visit.close()


def test_dark_mode_works_offline(browser, site):
    visit = _Visit(browser, site, f"{_toc_documents()[0]}.html")
    try:
        page = visit.page

        def theme():
            return page.evaluate("() => document.documentElement.dataset.theme")

        def background():
            color = page.evaluate(
                "() => getComputedStyle(document.body).backgroundColor"
            )
            return sum(
                int(c) for c in color[color.index("(") + 1 : -1].split(",")[:3]
            )

        light = background()
        button = page.locator(".theme-switch-button").first
        for _ in range(3):  # the button cycles light -> dark -> auto
            if theme() == "dark":
                break
            button.click()
        assert theme() == "dark"
        assert background() < light and background() < 3 * 100
        assert visit.errors == [] and visit.outside == []
    finally:
        visit.close()


# What a reader sees at 1280 × 900 (issue 29): nothing wider than the page,
# math typeset without errors, no raw TeX or Markdown left in the text, at
# most 25 screens, and visible code within the page_metrics targets.
READING_CHECKS = """() => {
  const article = document.querySelector("article") || document.body;
  const wide = [];
  for (const el of article.querySelectorAll("*")) {
    if (el.offsetParent === null) continue;  // collapsed or hidden
    const style = getComputedStyle(el);
    const scrolls = ["auto", "scroll"].includes(style.overflowX);
    if (scrolls && el.scrollWidth > el.clientWidth + 1) {
      wide.push(el.tagName + "." + el.className + ": " +
                el.textContent.trim().slice(0, 60));
    }
  }
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  const raw = [];
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const parent = node.parentElement;
    if (parent.closest("pre, code, mjx-container, script, style, .cell_input"))
      continue;
    const text = node.textContent;
    if (/\\\\[a-zA-Z]+|\\$\\$|\\]\\(https?:/.test(text))
      raw.push(text.trim().slice(0, 80));
  }
  return {
    pageWide: document.documentElement.scrollWidth > window.innerWidth,
    wide: wide,
    raw: raw,
    mathErrors: document.querySelectorAll("mjx-merror").length,
    screens: document.documentElement.scrollHeight / window.innerHeight,
  };
}"""


MAX_SCREENS = 25


@pytest.mark.parametrize("doc", _chapters())
def test_a_chapter_reads_at_1280_pixels(browser, site, doc):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(f"{site}/{doc}.html", wait_until="networkidle")
        page.wait_for_function(
            "() => !window.MathJax || !MathJax.startup ||"
            " MathJax.startup.promise.then(() => true)"
        )
        page.wait_for_timeout(500)
        seen = page.evaluate(READING_CHECKS)
        assert not seen["pageWide"], f"{doc}: the page scrolls sideways"
        assert seen["wide"] == [], (
            f"{doc}: blocks scroll sideways {seen['wide']}"
        )
        assert seen["raw"] == [], f"{doc}: raw TeX or Markdown {seen['raw']}"
        assert seen["mathErrors"] == 0, f"{doc}: MathJax errors"
        # A page a reader takes in one sitting; a longer chapter continues
        # on its own pages (_toc.yml sections).
        assert seen["screens"] <= MAX_SCREENS, (
            f"{doc}: {seen['screens']:.1f} screens at 1280x900 "
            f"(at most {MAX_SCREENS})"
        )
        metrics = load_tool("page_metrics")
        missed = metrics.misses(metrics.chapter_metrics(ROOT / f"{doc}.md"))
        assert missed == [], f"{doc}: {missed}"
    finally:
        page.close()
