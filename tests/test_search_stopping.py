"""The pure stopping rules of ``tts_eval.search.stopping`` on hand-computed tables.

Beta tails are checked against their closed form for integer parameters (a binomial sum written out
by hand), and against scipy when it is installed; the Dirichlet quadrature against an exact
rational computation done here independently (the Gamma representation expanded symbolically).
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from fakes import FakeAnswerSpec

from tts_eval.search.stopping import (
    AdaptiveConsistency,
    EarlyStoppingConsistency,
    answer_counts,
    beta_majority_probability,
    decide,
    dirichlet_majority_probability,
    majority_probability,
)
from tts_eval.search.voting import AnswerGrouper

# (c1, c2) -> P(p > 1/2), p ~ Beta(c1 + 1, c2 + 1), as a fraction worked out by hand:
# sum_{j <= c1} C(c1 + c2 + 1, j) / 2**(c1 + c2 + 1).
BETA_TABLE = {
    (0, 0): Fraction(1, 2),
    (1, 0): Fraction(3, 4),  # (1 + 2) / 4
    (3, 0): Fraction(15, 16),
    (4, 0): Fraction(31, 32),
    (5, 0): Fraction(63, 64),
    (3, 1): Fraction(26, 32),  # (1 + 5 + 10 + 10) / 32
    (5, 1): Fraction(120, 128),  # (128 - 7 - 1) / 128
    (6, 1): Fraction(247, 256),  # (256 - 8 - 1) / 256
    (3, 3): Fraction(1, 2),
    (1, 3): Fraction(6, 32),  # (1 + 5) / 32
}


@pytest.mark.parametrize(("counts", "expected"), sorted(BETA_TABLE.items()))
def test_beta_majority_probability_table(counts, expected):
    assert beta_majority_probability(*counts) == pytest.approx(float(expected), abs=1e-15)


def test_beta_tail_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for c1 in range(0, 30, 3):
        for c2 in range(0, c1 + 1, 2):
            want = stats.beta.sf(0.5, c1 + 1, c2 + 1)
            assert beta_majority_probability(c1, c2) == pytest.approx(want, abs=1e-12)


# groups in sample order -> (stop at 0.95, P) under the Beta rule
ADAPTIVE_TABLE = [
    ([0, 0, 0], False, 15 / 16),
    ([0, 0, 0, 0], True, 31 / 32),  # 4 agreeing samples are enough at 0.95
    ([0, 0, 0, 0, 0], True, 63 / 64),
    ([0, 1, 0, 0], False, 26 / 32),
    ([1, 0, 0, 0, 0, 0, 0], True, 247 / 256),  # (6, 1): the leader is group 0
    ([0, 1, 0, 1, 0, 1], False, 0.5),  # a tie: never settled
    ([None, None, 0, None, 0, 0, 0], True, 31 / 32),  # None answers never vote
    ([None, None], False, None),
    ([], False, None),
]


@pytest.mark.parametrize(("groups", "stop", "probability"), ADAPTIVE_TABLE)
def test_adaptive_consistency_table(groups, stop, probability):
    decision = decide(groups, AdaptiveConsistency())
    assert decision.stop is stop
    assert decision.at == (len(groups) if stop else None)
    if probability is None:
        assert decision.probability is None and decision.leader is None
    else:
        assert decision.probability == pytest.approx(probability, abs=1e-15)
    assert "\n" not in decision.reason


def test_adaptive_threshold_is_inclusive_and_the_tie_leader_appears_first():
    assert decide([0, 0, 0, 0], AdaptiveConsistency(threshold=31 / 32)).stop
    assert not decide([0, 0, 0, 0], AdaptiveConsistency(threshold=31 / 32 + 1e-9)).stop
    assert decide([2, 1, 1, 2], AdaptiveConsistency()).leader == 2  # 2 appears first
    assert answer_counts([2, 1, None, 1, 2, 3]) == [(2, 2), (1, 2), (3, 1)]


def test_adaptive_reads_groups_from_the_answer_grouper():
    grouper = AnswerGrouper(FakeAnswerSpec())
    groups = grouper.group(["1/2", "0.5", None, "\\frac{1}{2}", "3", "0.50"])
    assert groups == [0, 0, None, 0, 1, 0]
    decision = decide(groups, AdaptiveConsistency(threshold=0.85))
    # counts (4, 1): sum_{j<=4} C(6, j) / 64 = 57 / 64
    assert decision.probability == pytest.approx(57 / 64)
    assert decision.stop and decision.leader == 0


# ------------------------------------------------------------------------------------------------
# Dirichlet
# ------------------------------------------------------------------------------------------------


def exact_dirichlet(counts) -> Fraction:
    """P(G_0 > max_j G_j), G_j ~ Gamma(counts[j] + 1) independent, as an exact fraction.

    prod_j F_j(x) with F_b(x) = 1 - e^-x sum_{i<b} x^i / i! expands into sum_s e^{-s x} Q_s(x);
    int_0^inf x^(a-1) e^-x / (a-1)! * x^m e^{-s x} dx = (a - 1 + m)! / ((a - 1)! (1 + s)^(a + m)).
    """
    a = counts[0] + 1
    poly: dict[int, dict[int, Fraction]] = {0: {0: Fraction(1)}}  # s -> {m: coefficient}
    for c in counts[1:]:
        tail = {i: Fraction(1, math.factorial(i)) for i in range(c + 1)}
        new: dict[int, dict[int, Fraction]] = {}
        for s, terms in poly.items():
            for m, coef in terms.items():
                new.setdefault(s, {})
                new[s][m] = new[s].get(m, 0) + coef
                for i, t in tail.items():
                    new.setdefault(s + 1, {})
                    new[s + 1][m + i] = new[s + 1].get(m + i, 0) - coef * t
        poly = new
    total = Fraction(0)
    for s, terms in poly.items():
        for m, coef in terms.items():
            total += coef * Fraction(
                math.factorial(a - 1 + m), math.factorial(a - 1) * (1 + s) ** (a + m)
            )
    return total


@pytest.mark.parametrize(
    "counts", [(3, 1), (3, 1, 1), (2, 2, 1), (4, 2, 1, 1), (10, 3, 3, 2, 1, 1), (0, 0, 0), (7,)]
)
def test_dirichlet_quadrature_equals_the_exact_value(counts):
    want = float(exact_dirichlet(counts))
    assert dirichlet_majority_probability(counts) == pytest.approx(want, abs=1e-12)


def test_dirichlet_with_two_groups_is_the_beta_rule_and_symmetric_ties_split_evenly():
    for c1, c2 in [(3, 1), (5, 0), (8, 5)]:
        assert dirichlet_majority_probability([c1, c2]) == pytest.approx(
            beta_majority_probability(c1, c2), abs=1e-12
        )
    assert dirichlet_majority_probability([3, 3, 3]) == pytest.approx(1 / 3, abs=1e-12)
    assert dirichlet_majority_probability([2, 2, 2, 2]) == pytest.approx(1 / 4, abs=1e-12)


def test_dirichlet_rule_is_stricter_with_more_rivals_and_deterministic():
    groups = [0, 0, 0, 0, 0, 0, 1, 2]  # counts (6, 1, 1)
    beta = majority_probability(groups, "beta")
    dirichlet = majority_probability(groups, "dirichlet")
    assert beta == pytest.approx(247 / 256)  # runner-up only
    assert dirichlet == pytest.approx(float(exact_dirichlet((6, 1, 1))), abs=1e-12)
    assert dirichlet < beta
    assert decide(groups, AdaptiveConsistency(prior="dirichlet")) == decide(
        groups, AdaptiveConsistency(prior="dirichlet")
    )
    # fewer than 3 groups: the Beta rule (an unseen runner-up of count 0 for one group)
    assert majority_probability([0, 0, 0, 0], "dirichlet") == pytest.approx(31 / 32)


def test_dirichlet_is_quick_for_a_large_budget():
    counts = [40] + [1] * 200 + [2] * 5  # 256 samples, 206 groups
    assert 0.99 < dirichlet_majority_probability(counts) <= 1.0


# ------------------------------------------------------------------------------------------------
# ESC
# ------------------------------------------------------------------------------------------------

# groups, window -> (stop, at)
ESC_TABLE = [
    ([0, 0, 0, 0], 5, False, None),  # no complete window yet
    ([0, 0, 0, 0, 0], 5, True, 5),
    ([1, 0, 0, 0, 0, 0], 5, False, None),  # sliding windows do not count: [1..5] is not aligned
    ([1, 0, 0, 0, 0, 0, 0, 0, 0, 0], 5, True, 10),
    ([0, 1, 0, 0, 0, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0], 5, True, 10),  # first unanimous window
    ([0, 0, None, 0, 0], 5, False, None),  # a None breaks a window
    ([None, None, None, None], 2, False, None),  # windows of no answers never stop
    ([3, 3], 2, True, 2),
]


@pytest.mark.parametrize(("groups", "window", "stop", "at"), ESC_TABLE)
def test_esc_table(groups, window, stop, at):
    decision = decide(groups, EarlyStoppingConsistency(window=window))
    assert (decision.stop, decision.at) == (stop, at)
    assert decision.probability is None
    assert "\n" not in decision.reason


def test_esc_fires_at_the_same_sample_whatever_the_wave_size():
    groups = [0, 1, 0, 0, 0, 2, 2, 2, 2, 2, 1, 1]
    rule = EarlyStoppingConsistency(window=5)
    for wave in (1, 2, 5, 12):
        decision = next(
            d
            for end in range(wave, len(groups) + wave, wave)
            if (d := decide(groups[:end], rule)).stop
        )
        assert decision.at == 10 and decision.leader == 2


# ------------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: AdaptiveConsistency(threshold=1.0), "threshold must be in (0, 1), got 1.0"),
        (lambda: AdaptiveConsistency(threshold=0), "threshold must be in (0, 1), got 0"),
        (lambda: AdaptiveConsistency(prior="gauss"), "prior must be one of beta, dirichlet"),
        (lambda: EarlyStoppingConsistency(window=1), "window must be an integer >= 2, got 1"),
        (lambda: EarlyStoppingConsistency(window=2.5), "window must be an integer >= 2, got 2.5"),
        (lambda: decide([0], "adaptive"), "rule must be an AdaptiveConsistency"),
        (lambda: beta_majority_probability(-1, 0), "counts must be >= 0"),
        (lambda: dirichlet_majority_probability([]), "counts must name at least one"),
    ],
)
def test_bad_settings_are_one_line_errors(make, message):
    with pytest.raises((ValueError, TypeError)) as info:
        make()
    assert message in str(info.value)
    assert "\n" not in str(info.value)
