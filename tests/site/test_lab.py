"""`make lab`: the Jupyter server of the project's environment serves the
chapters' .md files as notebooks (jupytext) and JupyterLab is configured to
open them as notebooks by default."""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _jupyter(app: str, base_dir: Path, *options: str):
    """A Jupyter `app` ("server" or "lab") on a copy of book/ (a save that
    rewrote a chapter could not touch the working tree); yields its base
    URL, token and root."""
    root = base_dir / "book"
    shutil.copytree(
        ROOT / "book", root, ignore=shutil.ignore_patterns("_build", ".*")
    )
    port, token = _free_port(), secrets.token_hex(16)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            app,
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--allow-root",
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}")
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"jupyter {app} did not start")
        yield base, token, root
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with _jupyter("server", tmp_path_factory.mktemp("lab")) as running:
        yield running


def test_chapters_open_as_notebooks(server):
    base, token, _ = server
    url = (
        f"{base}/api/contents/ch01_optimization.md"
        f"?type=notebook&content=1&token={token}"
    )
    model = json.load(urllib.request.urlopen(url))
    assert model["type"] == "notebook"
    cells = model["content"]["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert len(code) >= 3
    assert any("normbook" in c["source"] for c in code)


def test_jupyterlab_opens_markdown_with_jupytext_by_default():
    overrides = Path(sys.prefix) / "share/jupyter/lab/settings/overrides.json"
    settings = json.loads(overrides.read_text())
    viewers = settings["@jupyterlab/docmanager-extension:plugin"][
        "defaultViewers"
    ]
    assert viewers["markdown"] == "Jupytext Notebook"


def _request(url, method="GET", body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    return json.load(urllib.request.urlopen(request))


def _chapters():
    return sorted(
        p.name
        for p in (ROOT / "book").glob("*.md")
        if p.read_text().startswith("---\njupytext:")
    )


@pytest.mark.parametrize("chapter", _chapters())
def test_opening_and_saving_a_chapter_leaves_it_byte_identical(server, chapter):
    """What JupyterLab does: open the chapter as a notebook, start the
    kernel (which writes the kernel's kernelspec and language_info into the
    notebook's metadata), save. The file must not change."""
    from ipykernel.ipkernel import IPythonKernel

    base, token, root = server
    before = (root / chapter).read_bytes()
    url = f"{base}/api/contents/{chapter}?token={token}"
    model = _request(url + "&type=notebook&content=1")
    specs = _request(f"{base}/api/kernelspecs?token={token}")
    spec = specs["kernelspecs"]["python3"]["spec"]
    metadata = model["content"]["metadata"]
    metadata["kernelspec"] = {
        "display_name": spec["display_name"],
        "language": spec["language"],
        "name": "python3",
    }
    metadata["language_info"] = dict(IPythonKernel.language_info)
    _request(
        url,
        method="PUT",
        body={
            "type": "notebook",
            "format": "json",
            "content": model["content"],
        },
    )
    after = (root / chapter).read_bytes()
    assert after == before, (
        f"{chapter} changes when JupyterLab saves it; "
        "run `python tools/canonical_chapters.py`"
    )


def test_make_lab_runs_the_books_backend_and_records_no_claims():
    commands = subprocess.run(
        ["make", "-n", "--no-print-directory", "lab"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "KERAS_BACKEND=jax" in commands
    assert "-u NORMBOOK_CLAIMS_DIR" in commands
    assert "kernels run Keras on jax" in commands
    assert "jupyter lab --notebook-dir=book" in commands
    overrides = json.loads(
        (ROOT / "book/jupyterlab_overrides.json").read_text()
    )
    news = overrides["@jupyterlab/apputils-extension:notification"]
    assert news == {"fetchNews": "false", "checkForUpdates": False}


# A chapter as a student meets it in `make lab`: opened from the file
# browser in JupyterLab (Debian's Chromium, as the site's browser tests),
# its kernel started. Chapters chosen for what they hold: ch05 citations and
# MyST labels, ch02 {doc} links and glued numbers.
LAB_CHAPTERS = ["ch05_batch_normalization.md", "ch02_activations_init.md"]
# Markup MyST renders and plain Markdown leaves as text: a role such as
# {cite} or {doc}, a Markdown link, a label line "(name)=".
RAW_MYST = r"\{[a-z]+(:[a-z]+)?\}`|\]\(|^\([\w-]+\)=$"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    from .test_browser import CHROMIUM_ARGS, _chromium

    base_dir = tmp_path_factory.mktemp("jupyterlab")
    # JupyterLab renders only the cells in view by default; render them all
    # so that every Markdown cell is read. A fresh workspace: nothing
    # restored from another session.
    settings = base_dir / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text(
        '{"windowingMode": "none"}'
    )
    with (
        _jupyter(
            "lab",
            base_dir,
            f"--LabApp.user_settings_dir={base_dir / 'settings'}",
            f"--LabApp.workspaces_dir={base_dir / 'workspaces'}",
        ) as (base, token, root),
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(
            executable_path=_chromium(), args=CHROMIUM_ARGS
        )
        yield browser, base, token, root
        browser.close()


@pytest.mark.parametrize("chapter", LAB_CHAPTERS)
def test_a_chapter_in_jupyterlab_renders_myst_and_opens_saved(lab, chapter):
    import re

    browser, base, token, root = lab
    # A workspace of its own: no tab left open by another test.
    url = f"{base}/lab/workspaces/{chapter[:4]}?token={token}"
    before = (root / chapter).read_bytes()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(url)
        page.wait_for_selector(".jp-DirListing-item", timeout=60_000)
        page.locator(
            ".jp-DirListing-item", has_text=chapter[:12]
        ).first.dblclick()
        page.wait_for_selector(".jp-Notebook .jp-MarkdownCell", timeout=60_000)
        # The kernel has started and reported its language: the moment
        # JupyterLab updates the notebook's metadata.
        page.wait_for_selector(
            ".jp-StatusBar-TextItem:has-text('Idle')", timeout=120_000
        )
        page.wait_for_timeout(2000)
        tab = page.locator(".lm-TabBar-tab", has_text=chapter[:12])
        assert "jp-mod-dirty" not in (tab.get_attribute("class") or ""), (
            f"{chapter} shows as unsaved right after opening"
        )
        markdown = page.locator(".jp-Notebook .jp-MarkdownCell")
        rendered = page.locator(".jp-Notebook .jp-MarkdownCell .myst")
        assert markdown.count() >= 5
        assert rendered.count() == markdown.count(), (
            "jupyterlab-myst did not render every Markdown cell"
        )
        raw = [
            match.group(0)
            for text in rendered.all_inner_texts()
            for match in re.finditer(RAW_MYST, text, re.M)
        ]
        assert raw == [], f"{chapter}: MyST markup left as text {raw[:5]}"
        # Lab's news and update pop-ups are off (overrides.json).
        assert page.locator(".Toastify__toast").count() == 0
    finally:
        page.close()
    assert (root / chapter).read_bytes() == before
