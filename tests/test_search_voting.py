"""Pure voting rules: aggregation, equivalence grouping and its cache, tie rules, pass@k."""

from __future__ import annotations

import math
import random

import pytest
from fakes import FakeAnswerSpec

from tts_eval.search import voting
from tts_eval.types import Candidate, FinishReason


def cand(answer, *scores, finished=True):
    return Candidate(
        steps=tuple(f"s{i}" for i in range(len(scores))) or ("x",),
        step_scores=tuple(scores),
        finish_reason=FinishReason.EOS if finished else FinishReason.LENGTH,
        finished=finished,
        answer=answer,
    )


@pytest.fixture
def grouper():
    return voting.AnswerGrouper(FakeAnswerSpec())


@pytest.mark.parametrize(
    "scores, agg, expected",
    [
        ((0.2, 0.9, 0.5), "last", 0.5),
        ((0.2, 0.9, 0.5), "min", 0.2),
        ((0.2, 0.9, 0.5), "prod", 0.09),
        ((0.2, 0.9, 0.5), "mean", 1.6 / 3),
        ((), "last", 0.0),
        ((), "prod", 0.0),
        ((0.7,), "mean", 0.7),
    ],
)
def test_aggregate(scores, agg, expected):
    assert voting.aggregate(scores, agg) == pytest.approx(expected)


def test_aggregate_rejects_unknown():
    with pytest.raises(ValueError, match="agg must be one of last, min, prod, mean; got 'max'"):
        voting.aggregate((0.1,), "max")


@pytest.mark.parametrize(
    "answers, expected",
    [
        (["1/2", "0.5", "\\frac{1}{2}", "3", "0.50"], [0, 0, 0, 1, 0]),
        (["3", None, "3 ", " 3", "4"], [0, None, 0, 0, 1]),
        (["x", "y", "x"], [0, 1, 0]),
        ([], []),
        ([None, None], [None, None]),
    ],
)
def test_grouping_by_equivalence(answers, expected):
    assert voting.group_answers(answers, FakeAnswerSpec()) == expected


def test_grouping_is_cached_and_cheap():
    spec = FakeAnswerSpec()
    grouper = voting.AnswerGrouper(spec)
    values = ["1/2", "0.5", "3", "4", "7", "2/4", "x", "y"]
    answers = [random.Random(i).choice(values) for i in range(256)]
    first = grouper.group(answers)
    # one canonical call per distinct string, at most one equivalence check per pair of keys
    assert spec.canonical_calls == len(set(answers))
    assert spec.equivalent_calls <= len(values) * (len(values) - 1) // 2
    calls = (spec.canonical_calls, spec.equivalent_calls)
    assert grouper.group(list(reversed(answers)))  # regrouping (any order/subset) is free
    assert grouper.group(answers) == first
    assert (spec.canonical_calls, spec.equivalent_calls) == calls
    assert len(set(first)) == 6  # 1/2 ~ 0.5 ~ 2/4


CASES = [
    # weighted picks the group with the largest score sum, naive the single best, majority the
    # most frequent; the unfinished candidate (score 0.99, answer 9) never takes part.
    (
        [cand("1", 0.9), cand("2", 0.6), cand("2", 0.5), cand("9", 0.99, finished=False)],
        {"naive": 0, "weighted": 1, "majority": 1},
    ),
    # equivalence: 1/2 and 0.5 together outweigh 3
    (
        [cand("3", 0.8), cand("1/2", 0.5), cand("0.5", 0.45)],
        {"naive": 0, "weighted": 1, "majority": 1},
    ),
    # majority tie (1 vs 1 after equivalence grouping 2 vs 2): group appearing first wins
    (
        [cand("4", 0.1), cand("0.5", 0.2), cand("4", 0.3), cand("1/2", 0.4)],
        {"naive": 3, "weighted": 3, "majority": 0},
    ),
    # naive tie: lowest index; weighted tie on sum: the larger group wins
    (
        [cand("1", 0.5), cand("2", 0.25), cand("2", 0.25), cand("3", 0.5)],
        {"naive": 0, "weighted": 1, "majority": 1},
    ),
    # weighted tie on sum and size: the group appearing first wins
    ([cand("1", 0.5), cand("2", 0.5)], {"naive": 0, "weighted": 0, "majority": 0}),
    # finished without an answer is not eligible
    ([cand(None, 0.9), cand("5", 0.1)], {"naive": 1, "weighted": 1, "majority": 1}),
    # nothing eligible
    (
        [cand("1", 0.9, finished=False), cand(None, 0.8)],
        {"naive": None, "weighted": None, "majority": None},
    ),
    ([], {"naive": None, "weighted": None, "majority": None}),
]


@pytest.mark.parametrize("candidates, expected", CASES)
@pytest.mark.parametrize("selection", ["naive", "weighted", "majority"])
def test_selection_rules(candidates, expected, selection, grouper):
    assert voting.select(candidates, selection, grouper, "last") == expected[selection]


def test_weighted_uses_aggregation():
    # last: A=0.9 vs B=0.4+0.4; min: A=0.1 vs B=0.4+0.4
    candidates = [cand("A", 0.1, 0.9), cand("B", 0.5, 0.4), cand("B", 0.6, 0.4)]
    grouper = voting.AnswerGrouper(FakeAnswerSpec())
    assert voting.weighted_vote(candidates, grouper, "last") == 0
    assert voting.weighted_vote(candidates, grouper, "mean") == 2
    assert voting.naive_best(candidates, "min") == 1
    assert voting.naive_best(candidates, "prod") == 2


def test_select_rejects_unknown_rule(grouper):
    with pytest.raises(ValueError, match="selection must be one of naive, weighted, majority"):
        voting.select([], "best", grouper)


@pytest.mark.parametrize(
    "n, c, k, expected",
    [(4, 0, 1, 0.0), (4, 4, 2, 1.0), (4, 1, 1, 0.25), (4, 2, 2, 1 - 1 / 6), (10, 3, 8, 1.0)],
)
def test_pass_at_k(n, c, k, expected):
    assert math.isclose(voting.pass_at_k(n, c, k), expected)


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, 1, 0), (4, 1, 5), (4, -1, 1)])
def test_pass_at_k_rejects_bad_counts(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k needs"):
        voting.pass_at_k(n, c, k)


def test_pass_at_n_and_count_correct():
    candidates = [cand("1", 0.1), cand("2", 0.2, finished=False), cand("0.5", 0.3)]
    spec = FakeAnswerSpec()

    def correct_half(answer):
        return spec.equivalent(answer, "1/2")

    assert voting.pass_at_n(candidates, correct_half)
    assert voting.count_correct(candidates, correct_half) == 1
    assert not voting.pass_at_n(candidates, lambda answer: answer == "2")  # unfinished
