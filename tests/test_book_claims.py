"""The book's claim checks: a failing claim stops the chapter, unless the
survey switch asks for a record instead; seeds shift when asked to."""

import json

import pytest

from normbook import claims, verdicts

# normbook's claims are plain Python: one backend's suite checks them.
pytestmark = pytest.mark.backend_independent


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


# Per-seed values (larger is better) that support each ranking verdict of
# A against B, and only that one.
EVIDENCE = {
    "beats on every seed": ([0.95, 0.96, 0.97], [0.90, 0.91, 0.92]),
    "beats on average": ([0.92, 0.96, 0.97], [0.90, 0.91, 0.93]),
    "cannot be ranked": ([0.92, 0.94, 0.96], [0.91, 0.94, 0.95]),
    "trails on average": ([0.90, 0.91, 0.93], [0.92, 0.96, 0.97]),
    "trails on every seed": ([0.90, 0.91, 0.92], [0.95, 0.96, 0.97]),
}


@pytest.mark.parametrize("truth", list(EVIDENCE))
def test_each_ranking_has_its_evidence(truth):
    a, b = EVIDENCE[truth]
    assert verdicts.compare(a, b).ranking == truth
    # Smaller is better: the same numbers read as losses reverse it.
    mirrored = verdicts.RANKINGS[::-1][verdicts.RANKINGS.index(truth)]
    assert verdicts.compare(a, b, higher_is_better=False).ranking == mirrored


@pytest.mark.parametrize("stated", list(EVIDENCE))
@pytest.mark.parametrize("truth", list(EVIDENCE))
def test_a_verdict_fails_on_evidence_for_any_other(clean_env, stated, truth):
    a, b = EVIDENCE[truth]
    if stated == truth:
        claims.claim_verdict(a, b, stated, names=("A", "B"))
        return
    # The failure names the verdict the numbers support.
    words = claims._ranking_words(truth, "A", "B")
    with pytest.raises(claims.ClaimError, match=words):
        claims.claim_verdict(a, b, stated, names=("A", "B"))


@pytest.mark.parametrize("stated", ["beats", "trails"])
@pytest.mark.parametrize("truth", list(EVIDENCE))
def test_beats_and_trails_hold_on_average_or_on_every_seed(
    clean_env, stated, truth
):
    a, b = EVIDENCE[truth]
    if truth.startswith(stated):
        claims.claim_verdict(a, b, stated, names=("A", "B"))
        return
    words = claims._ranking_words(truth, "A", "B")
    with pytest.raises(claims.ClaimError, match=words):
        claims.claim_verdict(a, b, stated, names=("A", "B"))


@pytest.mark.parametrize("stated", ["does not beat", "does not trail"])
@pytest.mark.parametrize("truth", list(EVIDENCE))
def test_does_not_beat_rules_out_one_direction_only(clean_env, stated, truth):
    a, b = EVIDENCE[truth]
    excluded = "beats" if stated == "does not beat" else "trails"
    if not truth.startswith(excluded):
        claims.claim_verdict(a, b, stated, names=("A", "B"))
        return
    words = claims._ranking_words(truth, "A", "B")
    with pytest.raises(claims.ClaimError, match=words):
        claims.claim_verdict(a, b, stated, names=("A", "B"))


def test_a_margin_must_be_exceeded():
    a, b = EVIDENCE["beats on average"]  # means differ by 0.037
    claims.claim_verdict(a, b, "beats on average", names=("A", "B"), by=0.03)
    with pytest.raises(claims.ClaimError, match="by more than 0.05"):
        claims.claim_verdict(
            a, b, "beats on average", names=("A", "B"), by=0.05
        )
    with pytest.raises(ValueError, match="A margin goes with"):
        claims.claim_verdict(
            a, b, "beats on every seed", names=("A", "B"), by=0.01
        )


def test_within_and_about_are_two_sided():
    assert verdicts.within([1.0, 1.2], [1.5, 1.5], 0.5)
    assert verdicts.within([1.5, 1.5], [1.0, 1.2], 0.5)
    assert not verdicts.within([1.0, 1.2], [1.8, 1.8], 0.5)
    assert not verdicts.within([1.8, 1.8], [1.0, 1.2], 0.5)
    assert verdicts.about(1.54, 1.5, 0.1)
    assert not verdicts.about(1.7, 1.5, 0.1)
    assert not verdicts.about(1.3, 1.5, 0.1)
    assert not verdicts.about(float("nan"), 1.5, 0.1)
    with pytest.raises(claims.ClaimError, match="within 0.5"):
        claims.claim_within([1.0, 1.2], [1.8, 1.8], 0.5, names=("A", "B"))
    with pytest.raises(claims.ClaimError, match="about 1.5"):
        claims.claim_about(1.7, 1.5, 0.1, what="κ")


def test_a_comparison_needs_two_finite_runs_each():
    with pytest.raises(ValueError, match="at least two runs"):
        verdicts.compare([0.9], [0.8, 0.7])
    with pytest.raises(ValueError, match="finite"):
        verdicts.compare([0.9, float("nan")], [0.8, 0.7])
    with pytest.raises(ValueError, match="verdict must be one of"):
        claims.claim_verdict([1, 2], [1, 2], "wins", names=("A", "B"))
