"""The per-step token cap ``max_step_tokens`` of the tree and particle strategies, on scripted
engines (one token per character, so a cap of 12 keeps a step's first 12 characters).

A step that hits the cap with solution budget left ends as a step (a *cut*), is scored on its own
and is continued; one that runs out of the whole solution's ``max_tokens`` is still truncated.
"""

from __future__ import annotations

import pytest
from fakes import FakeAnswerSpec, FakePRM, ScriptedEngine, problem

from tts_eval.errors import SettingError
from tts_eval.search import SearchConfig, run_search, segment_steps
from tts_eval.search._common import Node, capped_steps, extend
from tts_eval.types import Completion, FinishReason

SCRIPT = {
    # a step of 19 characters, cut at 12 as "ab [0.9] and" (score 0.9), and a short one
    "": ["ab [0.9] and more\n\n", "s [0.2]\n\n"],
    "ab [0.9] and": ["\\boxed{1}<eos>", "\\boxed{2}<eos>"],  # 10 tokens each, within the cap
    "s [0.2]\n\n": ["\\boxed{3}<eos>"],
}


def run(strategy, *, script=SCRIPT, prm=None, **kwargs):
    engine, prm = ScriptedEngine(script), prm or FakePRM()
    config = SearchConfig(strategy=strategy, **{"max_tokens": 100, **kwargs})
    (result,) = run_search(config, [problem("P")], engine, prm, FakeAnswerSpec())
    return result, engine, prm


def test_a_step_that_hits_the_cap_ends_as_a_step():
    result, engine, prm = run("dvts", n=2, beam_width=2, num_iterations=2, max_step_tokens=12)
    # every request, the last iteration's (no stop string) included, asks for at most 12 tokens
    assert [[r.params.max_tokens for r in call] for call in engine.calls] == [[12], [12]]
    assert [r.params.stop for r in engine.calls[1]] == [()]
    # the cut step is scored as a step of its own and wins (0.9 > 0.2), then it is continued
    assert [r.steps for r in prm.calls[0]] == [("ab [0.9] and",), ("s [0.2]",)]
    assert engine.calls[1][0].prompt_ids[-12:] == tuple(map(ord, "ab [0.9] and"))
    assert [c.steps for c in result.candidates] == [
        ("ab [0.9] and", "\\boxed{1}"),
        ("ab [0.9] and", "\\boxed{2}"),
    ]
    assert [c.step_scores for c in result.candidates] == [(0.9, 0.5), (0.9, 0.5)]
    assert all(c.finished for c in result.candidates)
    # the trace says which steps ended at the cap
    assert result.settings["capped_steps"] == [[0], [0]]
    assert result.settings["ended"] == ["eos", "eos"]
    assert result.candidates[result.selected].answer == "1"


def test_without_a_cap_the_step_runs_to_its_delimiter():
    script = {**SCRIPT, "ab [0.9] and more\n\n": ["\\boxed{1}<eos>"]}
    result, engine, _ = run("dvts", script=script, n=2, beam_width=2, num_iterations=2)
    assert [[r.params.max_tokens for r in call] for call in engine.calls] == [[100], [81]]
    assert result.candidates[0].steps == ("ab [0.9] and more\n\n", "\\boxed{1}")
    assert "capped_steps" not in result.settings


def test_the_solution_budget_still_truncates():
    # 12 tokens of step, then min(20 - 12, 12) = 8 tokens for a 10-token answer: cut off
    result, engine, _ = run(
        "dvts", n=2, beam_width=2, num_iterations=3, max_step_tokens=12, max_tokens=20
    )
    assert [[r.params.max_tokens for r in call] for call in engine.calls] == [[12], [8]]
    assert result.settings["subtree_ends"] == ["all_truncated"]
    assert all(c.finish_reason is FinishReason.LENGTH for c in result.candidates)
    assert not any(c.finished for c in result.candidates)


@pytest.mark.parametrize("strategy", ["beam_search", "particle_filtering", "particle_gibbs"])
def test_every_step_strategy_caps_its_steps(strategy):
    extra = {"beam_width": 2} if strategy == "beam_search" else {}
    result, engine, _ = run(strategy, n=2, num_iterations=3, max_step_tokens=12, **extra)
    assert {r.params.max_tokens for call in engine.calls for r in call} == {12}
    assert len(result.settings["capped_steps"]) == len(result.candidates)
    for candidate, capped in zip(result.candidates, result.settings["capped_steps"], strict=True):
        assert capped == ([0] if candidate.steps[0] == "ab [0.9] and" else [])


def test_segmentation_splits_at_cuts():
    text = "abc  def\n\nghi"
    assert segment_steps(text, "\n\n", cuts=(3,)) == (
        ("abc", "  def\n\n", "ghi"),
        ("abc", "def", "ghi"),
    )
    # whitespace after a cut glues onto the cut step; the text is always the steps joined
    assert segment_steps("abc\n\n  ", "\n\n", cuts=(3,)) == (("abc\n\n  ",), ("abc",))
    raws, views = segment_steps("x\n\nab cd\n\ne", "\n\n", open_tail=True, cuts=(5, 7))
    assert raws == ("x\n\n", "ab", " c", "d\n\ne") and views == ("x", "ab", "c", "d")
    assert "".join(raws) == "x\n\nab cd\n\ne"


def test_extend_records_a_cut_only_with_budget_left():
    config = SearchConfig(strategy="dvts", n=2, beam_width=2, max_tokens=20, max_step_tokens=4)
    spec = FakeAnswerSpec()
    cut = Completion("abcd", tuple(map(ord, "abcd")), FinishReason.LENGTH)
    node = extend(Node(lineage=()), cut, index=0, config=config, answers=spec)
    assert (node.finish_reason, node.active, node.cuts) == (FinishReason.STEP, True, (4,))
    assert capped_steps(node, config) == [0]
    node = extend(node, Completion("e\n\n", (101, 10, 10), FinishReason.STEP), index=0,
                  config=config, answers=spec)  # fmt: skip
    assert node.views("\n\n") == ("abcd", "e") and capped_steps(node, config) == [0]
    # a cut-off shorter than the cap is the solution budget's (the request asked for less)
    short = Completion("ab", (97, 98), FinishReason.LENGTH)
    assert extend(Node(lineage=()), short, index=0, config=config, answers=spec).truncated


@pytest.mark.parametrize("value", [0, -3, 1.5, "many"])
def test_the_cap_is_checked(value):
    with pytest.raises(SettingError, match=r"^model_args max_step_tokens=.* is invalid; accepted"):
        SearchConfig(strategy="beam_search", n=4, max_step_tokens=value)
    with pytest.raises(SettingError, match="only with strategy=beam_search, dvts"):
        SearchConfig(strategy="best_of_n", n=4, max_step_tokens=8)
