"""DeepConf and self-certainty scores of ``tts_eval.search.confidence`` on hand-computed values,
and the scripted log-probabilities of the fake engines that strategies will be tested with."""

from __future__ import annotations

import math
import random

import pytest
from fakes import FakeAnswerSpec, ScriptedEngine, TaggedLogprobs, encode

from tts_eval.search.confidence import (
    TraceScore,
    bottom_group_confidence,
    confidence_filtered_vote,
    first_low_confidence,
    group_confidences,
    lowest_group_confidence,
    online_threshold,
    percentile,
    self_certainty,
    tail_confidence,
    token_confidence,
    token_confidences,
    token_self_certainty,
    trace_score,
)
from tts_eval.search.voting import AnswerGrouper, majority_vote
from tts_eval.types import Candidate, FinishReason, GenerationRequest, SamplingParams, TokenLogprobs


def entry(*top: float, logprob: float | None = None) -> TokenLogprobs:
    return TokenLogprobs(top[0] if logprob is None else logprob, tuple(range(len(top))), top)


def test_token_confidence_is_minus_the_mean_top_k_logprob():
    assert token_confidence(entry(-0.1, -2.0, -3.0)) == pytest.approx(1.7)
    # the generated token's own log-probability does not enter (outside the top k here)
    assert token_confidence(entry(-0.5, -1.5, logprob=-9.0)) == pytest.approx(1.0)
    assert token_confidences([entry(-1.0), entry(-2.0, -4.0)]) == pytest.approx([1.0, 3.0])
    with pytest.raises(ValueError, match="request logprobs >= 1, got 0"):
        token_confidence(TokenLogprobs(-0.3))


def test_group_lowest_bottom_and_tail_confidence():
    confs = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert group_confidences(confs, 2) == pytest.approx([1.5, 2.5, 3.5, 4.5])
    assert group_confidences(confs, 5) == pytest.approx([3.0])
    assert group_confidences(confs, 10) == pytest.approx([3.0])  # shorter than a window: its mean
    assert group_confidences([], 3) == []
    assert lowest_group_confidence(confs, 2) == pytest.approx(1.5)
    assert lowest_group_confidence([4.0, 0.5, 4.0, 4.0, 0.5, 0.5], 2) == pytest.approx(0.5)
    assert lowest_group_confidence([], 2) == 0.0
    assert tail_confidence(confs, 2) == pytest.approx(4.5)
    assert tail_confidence(confs, 10) == pytest.approx(3.0)
    assert tail_confidence([], 10) == 0.0
    spiky = [5.0, 1.0, 5.0, 1.0] + [5.0] * 7  # 11 groups of one token
    assert bottom_group_confidence(spiky, 1, 0.1) == pytest.approx(1.0)  # max(1, int(1.1)) = 1
    assert bottom_group_confidence(spiky, 1, 0.25) == pytest.approx(1.0)  # int(2.75) = 2
    assert bottom_group_confidence(spiky, 1, 0.5) == pytest.approx(3.4)  # (1 + 1 + 5 + 5 + 5) / 5


def test_self_certainty_is_the_kl_from_uniform_of_the_renormalised_top_k():
    half_quarters = entry(math.log(0.5), math.log(0.25), math.log(0.25))
    want = math.log(32 / 27) / 3  # (1/3) [log((1/3)/0.5) + 2 log((1/3)/0.25)]
    assert token_self_certainty(half_quarters) == pytest.approx(want)
    # the same shape with 0.6 of the mass outside the top 3: renormalised, the same value
    assert token_self_certainty(entry(math.log(0.2), math.log(0.1), math.log(0.1))) == (
        pytest.approx(want)
    )
    assert token_self_certainty(entry(-2.0, -2.0, -2.0, -2.0)) == pytest.approx(0.0)
    # the whole vocabulary: the exact KL(U || p) = -log V - mean log p
    probs = [0.4, 0.3, 0.2, 0.05, 0.05]
    full = entry(*(math.log(p) for p in probs))
    exact = -math.log(5) - sum(math.log(p) for p in probs) / 5
    assert token_self_certainty(full) == pytest.approx(exact)
    assert self_certainty([half_quarters, full]) == pytest.approx((want + exact) / 2)
    assert self_certainty([]) == 0.0
    with pytest.raises(ValueError, match="request logprobs >= 2, got 1"):
        token_self_certainty(entry(-0.1))


def test_trace_score_kinds():
    trace = [entry(-1.0, -1.0), entry(-3.0, -5.0), entry(-2.0, -2.0), entry(-0.5, -1.5)]
    # token confidences 1, 4, 2, 1
    assert trace_score(trace, TraceScore("lowest_group", window=2)) == pytest.approx(1.5)
    assert trace_score(trace, TraceScore("bottom_group", window=2, bottom=0.7)) == (
        pytest.approx(2.0)  # groups 2.5, 3, 1.5: the lowest int(2.1) = 2 -> (1.5 + 2.5) / 2
    )
    assert trace_score(trace, TraceScore("tail", tail=3)) == pytest.approx(7 / 3)
    assert trace_score(trace, TraceScore("mean")) == pytest.approx(2.0)
    assert trace_score(trace, TraceScore("self_certainty")) == pytest.approx(
        sum(token_self_certainty(e) for e in trace) / 4
    )


def test_percentile_is_numpys_linear_interpolation():
    np = pytest.importorskip("numpy")
    rng = random.Random(3)
    for n in (1, 2, 5, 16, 33):
        values = [rng.uniform(0, 10) for _ in range(n)]
        for q in (0, 10, 37.5, 50, 90, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == pytest.approx(9.1)


def candidate(answer: str | None, finished: bool = True) -> Candidate:
    return Candidate(("s",), (0.5,), FinishReason.EOS, finished, answer=answer)


def test_confidence_filtered_vote_table():
    grouper = AnswerGrouper(FakeAnswerSpec())
    cands = [candidate("7")] * 6 + [candidate("3")] * 4
    scores = [1.5] * 6 + [1.0, 1.0, 1.0, 5.0]
    assert majority_vote(cands, grouper) == 0
    # keep 100% / 90%: the 10th percentile is 1.0, all stay: 7 weighs 9.0, 3 weighs 8.0
    assert confidence_filtered_vote(cands, grouper, scores, keep_percent=100) == 0
    assert confidence_filtered_vote(cands, grouper, scores, keep_percent=90) == 0
    # keep 10%: the 90th percentile is 1.5 + 0.1 x 3.5 = 1.85: only the 5.0 trace votes
    assert confidence_filtered_vote(cands, grouper, scores, keep_percent=10) == 9
    # keep 70%: the 30th percentile is 1.35: the three 1.0 traces go, 7 (9.0) beats 3 (5.0)
    assert confidence_filtered_vote(cands, grouper, scores, keep_percent=70) == 0


def test_confidence_filtered_vote_ignores_ineligible_traces_and_keeps_the_tie_rules():
    grouper = AnswerGrouper(FakeAnswerSpec())
    cands = [candidate("1/2", finished=False), candidate(None), candidate("2"), candidate("0.5")]
    # the unfinished and unanswered traces score highest but never vote or set the threshold
    assert confidence_filtered_vote(cands, grouper, [9.0, 9.0, 1.0, 3.0], 50) == 3
    assert confidence_filtered_vote(cands[:2], grouper, [1.0, 2.0], 50) is None
    # equal weights: the larger group, then the group appearing first; within it the top score
    tie = [candidate("2"), candidate("1/2"), candidate("0.5"), candidate("3")]
    assert confidence_filtered_vote(tie, grouper, [2.0, 1.0, 1.0, 2.0], 100) == 1
    assert confidence_filtered_vote(tie[:1] + tie[3:], grouper, [2.0, 2.0], 100) == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda g: confidence_filtered_vote([candidate("1")], g, [1.0], 0), "keep_percent must be"),
        (lambda g: confidence_filtered_vote([candidate("1")], g, [1.0, 2.0]), "2 scores for 1"),
        (lambda g: confidence_filtered_vote([candidate("1")], g, [math.nan]), "must be finite"),
        (lambda g: online_threshold([], 10), "at least one trace"),
        (lambda g: online_threshold([1.0], 101), "keep_percent must be in (0, 100], got 101"),
        (lambda g: TraceScore("entropy"), "kind must be one of lowest_group, bottom_group"),
        (lambda g: TraceScore(window=0), "window must be an integer >= 1, got 0"),
        (lambda g: TraceScore(bottom=0.0), "bottom must be in (0, 1], got 0.0"),
        (lambda g: group_confidences([1.0], 1.5), "window must be an integer >= 1, got 1.5"),
    ],
)
def test_bad_arguments_are_one_line_errors(call, message):
    with pytest.raises(ValueError) as info:
        call(AnswerGrouper(FakeAnswerSpec()))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_online_threshold_and_stop():
    assert online_threshold([float(s) for s in range(1, 11)], 10) == pytest.approx(9.1)
    assert online_threshold([float(s) for s in range(1, 11)], 90) == pytest.approx(1.9)
    confs = [5.0, 5.0, 5.0, 1.0, 1.0, 5.0, 5.0]  # window 2 means: 5, 5, 3, 1, 3, 5 at ends 2..7
    assert first_low_confidence(confs, 2, 3.0) == 5  # 3 is not below 3
    assert first_low_confidence(confs, 2, 3.5) == 4
    assert first_low_confidence(confs, 2, 1.0) is None
    assert first_low_confidence(confs, 8, 100.0) is None  # shorter than a window: never stops


def test_a_trace_stops_online_exactly_when_its_lowest_group_is_below_the_threshold():
    rng = random.Random(0)
    for _ in range(200):
        confs = [rng.uniform(0.1, 3.0) for _ in range(rng.randint(4, 40))]
        window = rng.randint(1, 4)
        lowest = lowest_group_confidence(confs, window)
        assert first_low_confidence(confs, window, lowest) is None
        stop = first_low_confidence(confs, window, math.nextafter(lowest, math.inf))
        assert stop is not None
        means = group_confidences(confs, window)
        assert stop == window + means.index(lowest)


# ------------------------------------------------------------------------------------------------
# The fakes script log-probabilities
# ------------------------------------------------------------------------------------------------


def test_scripted_engine_returns_tagged_confidences():
    engine = ScriptedEngine(
        {"": ["ab (c=2.5)\n\n", "x<eos>"], "ab (c=2.5)\n\n": ["cd\\boxed{1}<eos>"]},
        logprobs=TaggedLogprobs(default=0.5),
    )
    prompt = encode("P|")
    params = SamplingParams(n=2, max_tokens=50, seed=0, logprobs=3)
    first, second = engine.generate([GenerationRequest(prompt, params)])[0].completions
    assert len(first.logprobs) == len(first.token_ids)
    confs = token_confidences(first.logprobs)
    tag_end = first.text.index(")") + 1  # tokens up to the tag's end read the default
    assert confs[:tag_end] == pytest.approx([0.5] * tag_end)
    assert confs[tag_end:] == pytest.approx([2.5] * (len(confs) - tag_end))
    assert first.finish_reason is FinishReason.EOS and first.token_ids[-1] == 0
    assert all(len(e.top_logprobs) == 3 for e in first.logprobs)
    assert token_confidences(second.logprobs) == pytest.approx([0.5] * len(second.token_ids))
    # not asked: none, as before
    plain = engine.generate([GenerationRequest(prompt, SamplingParams(max_tokens=50))])[0]
    assert plain.completions[0].logprobs is None


def test_a_fake_without_a_script_refuses_logprobs_in_one_line():
    engine = ScriptedEngine({"": ["a<eos>"]})
    with pytest.raises(ValueError) as info:
        engine.generate([GenerationRequest(encode("P|"), SamplingParams(logprobs=2))])
    assert str(info.value) == (
        "logprobs=2 asked of a fake engine without a logprobs script; accepted: logprobs=None"
    )
