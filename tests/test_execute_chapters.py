"""tools/execute_chapters.py: which chapters it runs, in which order, and
what makes their cached outputs stale."""

import shutil
from pathlib import Path

import pytest

from .tools import load_tool

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.backend_independent


@pytest.fixture(scope="module")
def tool():
    return load_tool("execute_chapters")


def test_every_notebook_chapter_of_the_toc_is_run(tool):
    names = [p.name for p in tool.toc_chapters()]
    assert names[0] == "intro.md"
    assert "ch01_optimization.md" in names and "ch16_cost.md" in names
    # The API and references pages are not notebooks: nothing to run.
    assert "api.md" not in names and "references.md" not in names
    # The chapter that quotes the others' claims is among them.
    readers = [
        p.name for p in tool.toc_chapters() if "nb.checked(" in p.read_text()
    ]
    assert readers == ["ch15_choosing.md"]


def test_a_chapters_pages_run_too(tool):
    """A chapter split into pages lists them as sections in _toc.yml: every
    chapter file of book/ is run, whether chapter or page."""
    names = {p.name for p in tool.toc_chapters()}
    pages = {p.name for p in (tool.ROOT / "book").glob("ch*.md")}
    assert pages <= names


def test_the_key_follows_the_backend_and_the_seed_offset(tool, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.delenv("NORMBOOK_SEED_OFFSET", raising=False)
    jax = tool.inputs_key()
    assert tool.inputs_key() == jax
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert tool.inputs_key() != jax
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setenv("NORMBOOK_SEED_OFFSET", "3")
    assert tool.inputs_key() != jax


def test_the_key_follows_the_library_normbook_and_data(tool, tmp_path):
    for folder in ("keraslayers", "book/normbook"):
        shutil.copytree(
            ROOT / folder,
            tmp_path / folder,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    for data in (ROOT / "book").glob("*.yaml"):
        shutil.copy(data, tmp_path / "book" / data.name)
    before = tool.inputs_key(tmp_path)
    assert before == tool.inputs_key(ROOT)
    for source in (
        "keraslayers/__init__.py",
        "book/normbook/__init__.py",
        "book/ch15_choices.yaml",
    ):
        path = tmp_path / source
        original = path.read_text()
        path.write_text(original + "\n# changed\n")
        assert tool.inputs_key(tmp_path) != before
        path.write_text(original)
    assert tool.inputs_key(tmp_path) == before
