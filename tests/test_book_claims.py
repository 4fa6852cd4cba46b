"""The book's claim checks: a failing claim stops the chapter, unless the
survey switch asks for a record instead; seeds shift when asked to."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book"))

from normbook import claims  # noqa: E402


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("NORMBOOK_CLAIMS_SURVEY", raising=False)
    monkeypatch.delenv("NORMBOOK_SEED_OFFSET", raising=False)
    monkeypatch.setenv("NORMBOOK_CLAIMS_DIR", str(tmp_path / "claims"))
    return tmp_path


def test_a_failing_claim_raises_and_leaves_no_record(clean_env):
    with pytest.raises(claims.ClaimError, match="the numbers disagree"):
        claims.claim(False, "A beats B", "1 vs 2", key="a-beats-b")
    assert not (clean_env / "claims" / "a-beats-b.json").exists()
    claims.claim(True, "B beats A", "2 vs 1", key="b-beats-a")
    record = json.loads((clean_env / "claims" / "b-beats-a.json").read_text())
    assert record["statement"] == "B beats A"


def test_survey_mode_records_claims_without_raising(clean_env, monkeypatch):
    log = clean_env / "survey.jsonl"
    monkeypatch.setenv("NORMBOOK_CLAIMS_SURVEY", str(log))
    claims.claim(False, "A beats B", "1 vs 2", key="a-beats-b")
    claims.claim(True, "B beats A", "2 vs 1")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["statement"], r["holds"]) for r in records] == [
        ("A beats B", False),
        ("B beats A", True),
    ]
    # A survey never writes the records a later chapter quotes.
    assert not (clean_env / "claims").exists()


def test_seeds_shift_with_the_offset(clean_env, monkeypatch):
    assert claims.seeds(3) == (0, 1, 2)
    monkeypatch.setenv("NORMBOOK_SEED_OFFSET", "6")
    assert claims.seeds(3) == (6, 7, 8)
