"""tools/claims_lint.py: a claim whose words promise more than its check
is reported; the matching verdict or a stated reason silences it."""

import pytest

from .tools import load_tool

pytestmark = pytest.mark.backend_independent


@pytest.fixture(scope="module")
def lint():
    return load_tool("claims_lint").problems_in


@pytest.mark.parametrize(
    "cell, why",
    [
        (
            'nb.claim(abs(a.mean() - b.mean()) < 0.02, "A and B cannot be '
            'ranked")',
            "cannot be ranked",
        ),
        (
            'nb.claim_verdict(a, b, "beats on average", names=("A", "B"), '
            'statement="A and B are indistinguishable")',
            "cannot be ranked",
        ),
        (
            'nb.claim(a.mean() - b.mean() > -0.02, "A trails B by < 2")',
            "trails",
        ),
        (
            'nb.claim(a.mean() <= b.mean(), "A does not trail B")',
            "does not trail",
        ),
        (
            'nb.claim_verdict(a, b, "does not beat", names=("A", "B"), '
            'statement="A does not trail B")',
            "does not trail",
        ),
        (
            'nb.claim(bn2 < bn32 + 0.01, "BN at batch 2 stays within a point")',
            "two-sided",
        ),
        ('nb.claim(x > 0.8, f"{name} is about {v}")', "two-sided"),
        ('nb.claim(acc.mean() > 0.9, "above 0.9 on every seed")', "every"),
        (
            'nb.claim_within(a, b, 0.01, names=("A", "B"), statement="A is '
            'within a point of B in every run")',
            "means only",
        ),
        (
            'nb.claim_verdict(a, b, "beats on average", names=("A", "B"), '
            'statement="A beats B on every seed")',
            "on every seed",
        ),
    ],
)
def test_words_stronger_than_the_check_are_reported(lint, cell, why):
    problems = lint(cell)
    assert len(problems) == 1 and why in problems[0][2], problems


@pytest.mark.parametrize(
    "cell",
    [
        'nb.claim_verdict(a, b, "cannot be ranked", names=("A", "B"))',
        'nb.claim_verdict(a, b, "trails on average", names=("A", "B"), '
        'statement="A trails B")',
        'nb.claim_verdict(a, b, "does not trail", names=("A", "B"), '
        'statement="A does not trail B")',
        'nb.claim(abs(bn2 - bn32) < 0.01, "BN at batch 2 stays within a '
        'point of batch 32")',
        'nb.claim(0.85 < m < 0.95 and s > 1, "about 0.9, and more")',
        'nb.claim(max(v) - min(v) < 0.02, "the three lie within 2 points")',
        'nb.claim(acc.min() > 0.9, "above 0.9 on every seed")',
        'nb.claim(all(x > 0.9 for x in acc), "every run above 0.9")',
        # A condition computed before the call is not judged.
        'nb.claim(ok, "A is within a point of B")',
        # Nor one whose agreement with the words is stated.
        "nb.claim(\n    drift.max() < 0.75,  # claims-lint: drift is |m - m0|\n"
        '    "the median stays within 0.75 of its start",\n)',
        # A statement built elsewhere is not seen.
        "nb.claim(x < 1, statement)",
        "%matplotlib inline\nnb.claim(x.min() > 0, 'every seed above 0')",
    ],
)
def test_checks_that_match_their_words_pass(lint, cell):
    assert lint(cell) == []
