"""The policy's own confidence as the scorer of PRM-guided searches (``self_score``, ``prm=self``).

Log-probabilities come from :class:`fakes.TaggedLogprobs`: every token's DeepConf confidence is the
number of the last complete ``(c=X)`` tag before it (1.0 before any), so a step's mean confidence
is read off its text. Token counts are character counts (+1 for EOS).
"""

from __future__ import annotations

import math

import pytest
from fakes import FakeAnswerSpec, FakePRM, ScriptedEngine, TaggedLogprobs, problem

from tts_eval.errors import SettingError
from tts_eval.model_args import parse_model_args
from tts_eval.search import SearchConfig, derive_seed, get_spec, run_search
from tts_eval.search._common import Node, extend, prm_request
from tts_eval.search.confidence import SelfScorer
from tts_eval.types import Completion, FinishReason, PRMRequest, TokenLogprobs

SCRIPT = {
    # "a (c=2)x\n\n": 7 tokens at 1.0, then 3 at 2.0: mean 1.3; "b (c=5)y\n\n": (7 + 15) / 10 = 2.2
    "": ["a (c=2)x\n\n", "b (c=5)y\n\n"],
    # after b: 10 tokens at 5.0 (prefix mean (22 + 50) / 20 = 3.6), or 5 tokens at 5.0 then 10 at
    # 1.0 (the "(c=1)" tag is complete only after its ")": (22 + 25 + 10) / 25 = 2.28)
    "b (c=5)y\n\n": ["\\boxed{2}<eos>", "(c=1)\\boxed{3}<eos>"],
}


def test_dvts_scored_by_mean_confidence():
    engine = ScriptedEngine(SCRIPT, logprobs=TaggedLogprobs())
    config = SearchConfig(
        strategy="dvts",
        n=2,
        beam_width=2,
        num_iterations=2,
        max_tokens=60,
        self_score="mean_confidence",
    )
    (result,) = run_search(config, [problem("P")], engine, None, FakeAnswerSpec())
    # every request asks for the top-20 log-probabilities
    assert {r.params.logprobs for call in engine.calls for r in call} == {20}
    # b (2.2) beats a (1.3) and is continued; each step scores its prefix
    assert [c.step_scores for c in result.candidates] == [
        pytest.approx((2.2, 3.6)),
        pytest.approx((2.2, 2.28)),
    ]
    assert result.candidates[result.selected].answer == "2"
    assert result.cost.prm_tokens == 0  # no PRM ran


def peaked(before: str, token: int, k: int) -> TokenLogprobs:
    """Every token 0.9 / 0.1 over two tokens, or 0.5 / 0.5 after a "~" in the text."""
    p = 0.5 if "~" in before.partition("|")[2] else 0.9
    return TokenLogprobs(math.log(p), (1, 2), (math.log(p), math.log(1 - p)))


def test_best_of_n_by_self_certainty_scores_each_sample_whole():
    script = {"": ["s1\n\n\\boxed{1}<eos>", "~s2\n\n\\boxed{2}<eos>"]}
    engine = ScriptedEngine(script, logprobs=peaked)
    config = SearchConfig(
        strategy="best_of_n", n=2, max_tokens=60, self_score="self_certainty", confidence_topk=2
    )
    (result,) = run_search(config, [problem("P")], engine, None, FakeAnswerSpec())
    # KL(U_2 || (0.9, 0.1)) = -log 2 - (log 0.9 + log 0.1) / 2 per token; 0 for (0.5, 0.5)
    kl = -math.log(2) - (math.log(0.9) + math.log(0.1)) / 2
    first, second = result.candidates
    # one request drew each sample whole: both of its steps score the whole sample
    assert first.step_scores == pytest.approx((kl, kl))
    # "~" is the first token: it is scored before the "~" is in the text (1 of 15 tokens)
    assert second.step_scores == pytest.approx((kl / 15, kl / 15))
    assert result.candidates[result.selected].answer == "1"


def test_step_prefixes_end_where_the_completion_that_closed_them_ends():
    config = SearchConfig(strategy="beam_search", n=2, beam_width=2, self_score="tail_confidence")
    spec = FakeAnswerSpec()

    def completion(text, reason, value):
        ids = tuple(map(ord, text))
        return Completion(
            text, ids, reason, tuple(TokenLogprobs(-value, (1,), (-value,)) for _ in ids)
        )

    node = extend(Node(lineage=()), completion("ab\n\n", FinishReason.STEP, 1.0), index=0,
                  config=config, answers=spec)  # fmt: skip
    node = extend(node, completion("cd\n\nef", FinishReason.EOS, 3.0), index=0, config=config,
                  answers=spec)  # fmt: skip
    request = prm_request(problem("P"), node, config)
    assert request.steps == ("ab", "cd", "ef")
    assert request.step_token_ends == (4, 10, 10)
    assert request.token_values == (1.0,) * 4 + (3.0,) * 6
    # a request is its problem and steps: the confidence fields take no part in equality
    assert request == PRMRequest("problem P", ("ab", "cd", "ef"))
    scores = SelfScorer("tail_confidence", window=3).score([request])[0]
    assert scores.step_scores == (1.0, 3.0, 3.0) and scores.tokens_processed == 0
    # a PRM model gets no token values
    plain = SearchConfig(strategy="beam_search", n=2, beam_width=2)
    assert prm_request(problem("P"), node, plain).token_values is None


def test_the_self_scorer_needs_token_values():
    with pytest.raises(ValueError, match="needs each request's token values"):
        SelfScorer("mean_confidence", 8).score([PRMRequest("p", ("a",))])


def test_self_score_in_place_of_a_prm_only():
    config = SearchConfig(strategy="best_of_n", n=2, self_score="mean_confidence")
    engine = ScriptedEngine(SCRIPT, logprobs=TaggedLogprobs())
    with pytest.raises(SettingError, match="but a PRM was given too"):
        run_search(config, [problem("P")], engine, FakePRM(), FakeAnswerSpec())
    # majority reads no PRM: self_score asks it for nothing (a sweep's shared prm=self)
    majority = SearchConfig(strategy="majority", n=2, self_score="mean_confidence")
    assert majority.logprobs_k is None


@pytest.mark.parametrize(
    "args, message",
    [
        (
            "prm=self,strategy=particle_filtering",
            "model_args prm=self is invalid; accepted: a PRM path or hub id with strategy="
            "particle_filtering",
        ),
        ("prm=self,strategy=dvts,agg=prod", "agg=prod is invalid; accepted: last, min or mean"),
        ("prm=self,prm_type=rlhflow", "prm_type=rlhflow is invalid with prm=self"),
        ("prm=org/prm,self_score=tail_confidence", "accepted: only with prm=self"),
        ("prm=self,self_score=best", "accepted: lowest_group_confidence, bottom_group_"),
        ("prm=self,backend=vllm,confidence_topk=21", "accepted: an integer in 1..20 with backend"),
        ("prm=self,self_score=self_certainty,confidence_topk=1", "an integer >= 2 for self_cert"),
        ("strategy=majority,confidence_window=64", "confidence_window=64 is invalid; accepted:"),
        ("strategy=best_of_n,prune_steps=2", "prune_steps=2 is invalid without a PRM"),
        ("prune_steps=2", "prune_steps=2 is invalid without a PRM"),
    ],
)
def test_confidence_settings_are_checked_before_models_load(args, message):
    with pytest.raises(SettingError) as info:
        parse_model_args(f"pretrained=org/policy,{args}")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_prm_self_loads_no_prm():
    config = parse_model_args("pretrained=org/policy,prm=self,strategy=beam_search,n=4")
    assert config.prm is None
    assert config.search.self_score == "lowest_group_confidence"
    assert config.search.logprobs_k == 20
    assert config.engine.gpu_memory_utilization == 0.9  # no PRM shares the GPU
    tail = parse_model_args("pretrained=org/policy,prm=self,self_score=tail_confidence,n=4")
    assert (tail.search.strategy, tail.search.self_score) == ("best_of_n", "tail_confidence")


# --------------------------------------------------------------------------------------------
# DeepConf: confidence-filtered voting, and its online variant
# --------------------------------------------------------------------------------------------

DEEPCONF_SCRIPT = {
    # mean confidences: (5 x 1.0 + 10 x 9) / 15, (5 + 20) / 15 twice, (5 + 10) / 15
    "": [
        "(c=9)\\boxed{1}<eos>",
        "(c=2)\\boxed{2}<eos>",
        "(c=2)\\boxed{2}<eos>",
        "(c=1)\\boxed{3}<eos>",
    ],
}


@pytest.mark.parametrize(
    "keep, kept, answer",
    [
        # the 50th percentile of (1.0, 5/3, 5/3, 19/3) is 5/3: three vote, 19/3 > 2 x 5/3
        (50, [0, 1, 2], "1"),
        # the 90th: 5/3 + 0.7 x (19/3 - 5/3) = 4.93: only the most confident votes
        (10, [0], "1"),
    ],
)
def test_deepconf_filtered_vote(keep, kept, answer):
    engine = ScriptedEngine(DEEPCONF_SCRIPT, logprobs=TaggedLogprobs())
    config = SearchConfig(
        strategy="deepconf", n=4, max_tokens=60, keep_percent=keep, self_score="mean_confidence"
    )
    (result,) = run_search(config, [problem("P")], engine, None, FakeAnswerSpec())
    (request,) = engine.calls[0]  # majority's one request, with log-probabilities
    assert (request.params.n, request.params.logprobs) == (4, 20)
    assert request.params.seed == derive_seed(0, "P", "sample")
    assert result.settings["confidence"] == pytest.approx([19 / 3, 5 / 3, 5 / 3, 1.0])
    assert result.settings["kept"] == kept
    assert result.candidates[result.selected].answer == answer
    # majority voting over the same samples picks the twice-given answer
    majority = SearchConfig(strategy="majority", n=4, max_tokens=60)
    (plain,) = run_search(majority, [problem("P")], ScriptedEngine(DEEPCONF_SCRIPT), None,
                          FakeAnswerSpec())  # fmt: skip
    assert plain.candidates == result.candidates
    assert plain.candidates[plain.selected].answer == "2"
    (curve,) = get_spec("deepconf").curves_of(4, result.settings)
    name = "deepconf" if keep == 10 else f"deepconf (keep_percent={keep})"  # 10: the default
    assert curve.name == name and not curve.prm


ONLINE_SCRIPT = {
    # warm-up: lowest group confidences (window 4) 5.0 and 4.5 (the EOS after "(c=3)"): the
    # threshold is their 50th percentile, 4.75
    "": [
        "\\boxed{1}<eos>",
        "\\boxed{2}(c=3)<eos>",
        "\\boxed{1}<eos>",  # chunks "\box", "ed{1", "}" + EOS: always 5.0
        "(c=1)zzz\\boxed{2}<eos>",  # ")" at 5.0, then 1.0: the window ending at token 6 is 4.0
    ],
    "\\box": ["ed{1}<eos>"],
    "\\boxed{1": ["}<eos>"],
    "(c=1": [")zzz\\boxed{2}<eos>"],
}


def test_deepconf_online_stops_low_confidence_samples_at_their_chunk():
    engine = ScriptedEngine(ONLINE_SCRIPT, logprobs=TaggedLogprobs(default=5.0), seeded=True)
    config = SearchConfig(
        strategy="deepconf",
        n=4,
        max_tokens=60,
        keep_percent=50,
        deepconf_online=True,
        wave=2,
        online_chunk=4,
        confidence_window=4,
    )
    (result,) = run_search(config, [problem("P")], engine, None, FakeAnswerSpec())
    assert result.settings["threshold"] == pytest.approx(4.75)
    assert result.settings["warmup"] == 2
    assert result.settings["stopped_at"] == [None, None, None, 6]
    # the warm-up drawn whole, then chunks of 4: both samples, then each alone, then sample 2
    assert [[(r.params.n, r.params.max_tokens) for r in call] for call in engine.calls] == [
        [(2, 60)],
        [(2, 4)],
        [(1, 4), (1, 4)],
        [(1, 4)],
    ]
    assert engine.calls[1][0].params.seed == derive_seed(0, "P", "sample") + 2
    stopped = result.candidates[3]
    assert (stopped.text, stopped.finished, stopped.finish_reason) == (
        "(c=1)zzz",
        False,
        FinishReason.LENGTH,
    )
    assert result.candidates[2].text == "\\boxed{1}" and result.candidates[2].finished
    assert result.cost.policy_tokens == 10 + 15 + 10 + 8
    # the samples that were not stopped vote, weighted by their lowest group confidence
    assert result.settings["confidence"] == pytest.approx([5.0, 4.5, 5.0, 2.0])
    assert result.candidates[result.selected].answer == "1"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(keep_percent=0), "keep_percent=0 is invalid; accepted: a number in (0, 100]"),
        (dict(wave=2), "wave=2 is invalid; accepted: only with deepconf_online=true"),
        (dict(deepconf_online=True, wave=5), "wave=5 is invalid; accepted: an integer in 1..n=4"),
        (
            dict(deepconf_online=True, self_score="tail_confidence"),
            "self_score=tail_confidence is invalid; accepted: lowest_group_confidence with",
        ),
        (dict(online_chunk=8), "online_chunk=8 is invalid; accepted: only with deepconf_online"),
    ],
)
def test_deepconf_settings_are_checked(kwargs, message):
    with pytest.raises(SettingError) as info:
        SearchConfig(strategy="deepconf", n=4, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_engine_that_returns_no_logprobs_is_an_error():
    config = SearchConfig(strategy="dvts", n=2, beam_width=2, self_score="mean_confidence")
    bare = Completion("ab\n\n", tuple(map(ord, "ab\n\n")), FinishReason.STEP)
    with pytest.raises(ValueError, match="returned no log-probabilities for a request with logp"):
        extend(Node(lineage=()), bare, index=0, config=config, answers=FakeAnswerSpec())
