"""`make lab`: the Jupyter server of the project's environment serves the
chapters' .md files as notebooks (jupytext) and JupyterLab is configured to
open them as notebooks by default."""

from __future__ import annotations

import json
import secrets
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


@pytest.fixture(scope="module")
def server():
    port, token = _free_port(), secrets.token_hex(16)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "server",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={ROOT / 'book'}",
            "--allow-root",
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
            pytest.fail("the Jupyter server did not start")
        yield base, token
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_chapters_open_as_notebooks(server):
    base, token = server
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
