"""Exact semantics of each strategy on scripted engines (fakes keyed by the token-id prefix).

Scores live in the scripted step text (``[0.9]``), so every ranking below can be checked by eye.
"""

from __future__ import annotations

import pytest
from fakes import FakeAnswerSpec, FakePRM, RandomEngine, ScriptedEngine, problem

from tts_eval.search import SearchConfig, run_search
from tts_eval.search.beam_search import expansion_counts
from tts_eval.types import FinishReason

DELIM = ("\n\n",)


class StrictFinalSpec(FakeAnswerSpec):
    """A step ends the solution only when it says "Final" (so a boxed STEP can stay unfinished)."""

    def is_final_step(self, step_text: str) -> bool:
        return "Final" in step_text


def run(strategy, script, *, spec=None, problems=None, **kwargs):
    engine, prm = ScriptedEngine(script), FakePRM()
    config = SearchConfig(strategy=strategy, **{"max_tokens": 200, **kwargs})
    problems = problems or [problem("P")]
    results = run_search(config, problems, engine, prm, spec or FakeAnswerSpec())
    return results, engine, prm


# --------------------------------------------------------------------------------------------
# beam search
# --------------------------------------------------------------------------------------------

BEAM_SCRIPT = {
    "": ["a [0.9]\n\n", "b [0.85]\n\n", "c [0.1]\n\n", "d [0.2]\n\n"],
    "a [0.9]\n\n": ["\\boxed{1} [0.3]<eos>", "e [0.5]\n\n"],
    "b [0.85]\n\n": ["\\boxed{2} [0.6]\n\n", "f [0.4]\n\n"],
    "a [0.9]\n\ne [0.5]\n\n": [
        "\\boxed{1} [0.95]<eos>",
        "g [0.2]\n\nh [0.3]\n\n\\boxed{3} [0.35]<eos>",
    ],
    "b [0.85]\n\nf [0.4]\n\n": ["\\boxed{2} [0.7]<eos>", "L" * 50 + "<eos>"],
}


@pytest.mark.parametrize("selection, answer", [("naive", "1"), ("weighted", "2")])
def test_beam_search_end_to_end(selection, answer):
    (result,), engine, prm = run(
        "beam_search",
        BEAM_SCRIPT,
        n=4,
        beam_width=2,
        num_iterations=3,
        max_tokens=60,
        selection=selection,
    )
    # iteration 0 keeps a and b, both children of beam 0: pruning is across parents
    assert result.settings["active_beams"] == [2, 2, 2]
    # why each solution ended: the boxed "2" step stopped at the delimiter is an answer step
    assert result.settings["ended"] == ["eos", "eos", "answer", "eos", "length"]
    assert result.settings["pruned"] == 2
    assert result.settings["iterations_run"] == 3
    assert [len(call) for call in engine.calls] == [2, 2, 2]
    assert all(r.params.n == 2 for call in engine.calls for r in call)
    assert [r.params.stop for r in engine.calls[0]] == [DELIM, DELIM]
    assert [r.params.stop for r in engine.calls[2]] == [(), ()]  # last iteration: to the end
    assert len(prm.calls) == 3
    # completed solutions ranked by score (not finish order), then the truncated one
    completed = [(c.answer, c.step_scores[-1]) for c in result.candidates if c.finished]
    # only the n=4 best of the 5 completed solutions are kept and vote
    assert completed == [("1", 0.95), ("2", 0.7), ("2", 0.6), ("3", 0.35)]
    assert result.settings["completed_dropped"] == 1
    truncated = result.candidates[-1]
    assert (truncated.finished, truncated.finish_reason) == (False, FinishReason.LENGTH)
    assert truncated.step_scores == (0.85, 0.4)  # never scored itself: keeps its parent's scores
    assert len(truncated.token_ids) == 60
    # a STEP that closes \boxed{} finishes the solution
    step_final = next(c for c in result.candidates if c.step_scores == (0.85, 0.6))
    assert (step_final.finish_reason, step_final.finished) == (FinishReason.STEP, True)
    # multi-step final generation is split into steps, each scored
    multi = next(c for c in result.candidates if c.answer == "3")
    assert multi.step_scores == (0.9, 0.5, 0.2, 0.3, 0.35)
    assert "".join(multi.steps) == multi.text
    assert {c.group for c in result.candidates} == {0}  # all descend from initial beam 0
    assert result.candidates[result.selected].answer == answer


def test_beam_search_expands_fewer_beams_into_more_candidates():
    script = {
        "": [
            "a [0.9]\n\n",
            "\\boxed{1} [0.5]<eos>",
            "\\boxed{1} [0.4]<eos>",
            "\\boxed{2} [0.3]<eos>",
        ],
        "a [0.9]\n\n": [
            "\\boxed{2} [0.8]<eos>",
            "\\boxed{2} [0.7]<eos>",
            "\\boxed{3} [0.9]<eos>",
            "x [0.1]\n\n",
        ],
        "a [0.9]\n\nx [0.1]\n\n": ["\\boxed{4} [0.2]<eos>"],
    }
    (result,), engine, _ = run("beam_search", script, n=4, beam_width=2, num_iterations=2)
    assert result.settings["active_beams"] == [2, 1]
    assert [[r.params.n for r in call] for call in engine.calls] == [[2, 2], [4]]
    # 7 completed, the 4 best kept: 0.9 (3), 0.8 (2), 0.7 (2), 0.5 (1)
    assert [c.answer for c in result.candidates] == ["3", "2", "2", "1"]
    assert result.candidates[result.selected].answer == "2"  # 0.8 + 0.7 beats 0.9


@pytest.mark.parametrize(
    "active, n, counts",
    [(4, 16, [4, 4, 4, 4]), (3, 16, [6, 5, 5]), (1, 8, [8]), (5, 8, [2, 2, 2, 1, 1])],
)
def test_expansion_counts_round_robin(active, n, counts):
    assert expansion_counts(active, n) == counts
    assert sum(counts) == n


def test_beam_search_stops_at_the_iteration_cap():
    engine, prm = RandomEngine(p_final=0.0, max_steps=20), FakePRM()
    config = SearchConfig(strategy="beam_search", n=4, beam_width=2, num_iterations=3)
    (result,) = run_search(config, [problem("P")], engine, prm, FakeAnswerSpec())
    assert result.settings["iterations_run"] == 3
    assert len(engine.calls) == 3
    assert [call[0].params.stop for call in engine.calls] == [DELIM, DELIM, ()]
    # the last iteration generated to the end: every leaf ended (EOS) but none has an answer
    assert result.candidates and all(c.finish_reason is FinishReason.EOS for c in result.candidates)
    assert result.selected is None


def test_beam_search_budget_is_per_solution():
    engine, prm = RandomEngine(p_final=0.0, max_steps=50), FakePRM()
    config = SearchConfig(
        strategy="beam_search", n=4, beam_width=2, num_iterations=40, max_tokens=30
    )
    (result,) = run_search(config, [problem("P")], engine, prm, FakeAnswerSpec())
    for call in engine.calls:
        for request in call:
            used = len(request.prompt_ids) - len("P|")
            assert request.params.max_tokens == 30 - used
    assert all(len(c.token_ids) <= 30 for c in result.candidates)
    assert all(not c.finished for c in result.candidates)
    assert result.settings["iterations_run"] < 40


# --------------------------------------------------------------------------------------------
# dvts
# --------------------------------------------------------------------------------------------

DVTS_SCRIPT = {
    "": ["a [0.2]\n\n", "b [0.1]\n\n", "c [0.9]\n\n", "d [0.8]\n\n"],
    "a [0.2]\n\n": ["\\boxed{1} Final [0.6]<eos>", "\\boxed{1} [0.5]\n\n"],
    "c [0.9]\n\n": ["e [0.7]\n\n", "\\boxed{2} Final [0.4]<eos>"],
    "c [0.9]\n\ne [0.7]\n\n": ["\\boxed{2} Final [0.45]<eos>", "\\boxed{2} Final [0.3]<eos>"],
}


@pytest.mark.parametrize("selection, answer", [("naive", "1"), ("weighted", "2")])
def test_dvts_subtrees_and_sibling_voting(selection, answer):
    (result,), engine, prm = run(
        "dvts",
        DVTS_SCRIPT,
        spec=StrictFinalSpec(),
        n=4,
        beam_width=2,
        num_iterations=3,
        selection=selection,
    )
    # subtree 0 keeps "a" (0.2) although subtree 1's steps score higher: no competition
    assert [len(call) for call in engine.calls] == [2, 2, 1]
    assert [c.group for c in result.candidates] == [0, 0, 1, 1]
    assert result.settings["subtree_depths"] == [2, 3]
    assert result.settings["subtree_ends"] == ["eos", "eos"]
    assert result.settings["ended"] == ["eos", "sibling", "eos", "eos"]
    summary = [(c.answer, c.finished, c.step_scores[-1]) for c in result.candidates]
    assert summary == [("1", True, 0.6), ("1", False, 0.5), ("2", True, 0.45), ("2", True, 0.3)]
    # the unfinished sibling (answer 1, score 0.5) must not vote: 0.6 < 0.45 + 0.3
    assert result.candidates[result.selected].answer == answer
    # the finished sibling dropped at depth 2 of subtree 1 (score 0.4) is not a leaf sibling
    assert 0.4 not in [c.step_scores[-1] for c in result.candidates]
    assert len(prm.calls) == 3


def test_dvts_all_children_truncated():
    script = {"": ["\\boxed{1} " + "x" * 40 + "<eos>"]}
    (result,), engine, prm = run("dvts", script, n=4, beam_width=2, max_tokens=20)
    assert len(result.candidates) == 4
    assert all(c.finish_reason is FinishReason.LENGTH for c in result.candidates)
    assert all(c.answer == "1" and not c.finished for c in result.candidates)
    assert result.selected is None
    assert prm.calls == []  # truncated candidates are never scored
    assert len(engine.calls) == 1
    assert result.settings["subtree_ends"] == ["all_truncated", "all_truncated"]
    assert result.settings["ended"] == ["length"] * 4


# --------------------------------------------------------------------------------------------
# lookahead
# --------------------------------------------------------------------------------------------

LOOKAHEAD_SCRIPT = {
    "": ["a [0.9]\n\n", "b [0.5]\n\n"],
    "a [0.9]\n\n": ["a2 [0.1]\n\n"],
    "a [0.9]\n\na2 [0.1]\n\n": ["\\boxed{1} [0.7]<eos>"],
    "b [0.5]\n\n": ["b2 [0.95]\n\n", "\\boxed{3} [0.8]<eos>"],
    "b [0.5]\n\nb2 [0.95]\n\n": ["\\boxed{3} [0.85]<eos>"],
}


@pytest.mark.parametrize("strategy", ["beam_search", "dvts"])
@pytest.mark.parametrize("lookahead, answer, engine_calls", [(0, "1", 2), (1, "3", 3), (2, "3", 4)])
def test_lookahead(strategy, lookahead, answer, engine_calls):
    (result,), engine, prm = run(
        strategy, LOOKAHEAD_SCRIPT, n=2, beam_width=2, num_iterations=2, lookahead=lookahead
    )
    assert result.candidates[result.selected].answer == answer
    assert len(engine.calls) == engine_calls
    assert len(prm.calls) == 2
    for call in engine.calls[1 : 1 + lookahead]:  # rollouts: greedy, one step at a time
        assert all(r.params.n == 1 and r.params.temperature == 0 for r in call)
        assert all(r.params.stop == DELIM for r in call)
    if lookahead:
        scored = prm.calls[0]
        assert scored[1].steps[:2] == ("b [0.5]", "b2 [0.95]")  # the rolled-out prefix is scored
    # rollouts are discarded: no candidate contains rollout text beyond its own steps
    assert all(c.text.startswith(("a [0.9]", "b [0.5]")) for c in result.candidates)
    kept = result.candidates[result.selected]
    assert kept.step_scores[0] == (0.5 if answer == "3" else 0.9)


# --------------------------------------------------------------------------------------------
# best_of_n and majority
# --------------------------------------------------------------------------------------------

SAMPLES = {
    "": [
        "x [0.2]\n\n\\boxed{3} [0.9]\n\n<eos>",
        "\\boxed{1/2} [0.5]<eos>",
        "\\boxed{0.5} [0.45]<eos>",
        "\\boxed{9} " + "y" * 40 + " [0.99]<eos>",
        "\\boxed{\\frac{1}{2}} [0.05]<eos>",
        "\\boxed{3} [0.3]<eos>",
    ]
}


@pytest.mark.parametrize(
    "strategy, selection, answer",
    [
        ("best_of_n", "naive", "3"),
        ("best_of_n", "weighted", "3"),  # 0.9 + 0.3 > 0.5 + 0.45 + 0.05
        ("majority", "weighted", "1/2"),  # three equivalent answers beat two "3"
    ],
)
def test_sampling_strategies(strategy, selection, answer):
    (result,), engine, prm = run(strategy, SAMPLES, n=6, max_tokens=30, selection=selection)
    assert len(engine.calls) == 1 and engine.calls[0][0].params.n == 6
    assert engine.calls[0][0].params.stop == ()
    assert result.candidates[result.selected].answer == answer
    truncated = result.candidates[3]
    assert (truncated.finished, truncated.finish_reason, truncated.answer) == (
        False,
        FinishReason.LENGTH,
        "9",
    )
    if strategy == "majority":
        assert prm.calls == []
        assert all(c.step_scores == () for c in result.candidates)
        return
    (requests,) = prm.calls
    assert len(requests) == 5  # the truncated sample is not scored
    # no empty trailing step is scored after the final "\n\n"
    assert requests[0].steps == ("x [0.2]", "\\boxed{3} [0.9]")
    first = result.candidates[0]
    assert first.step_scores == (0.2, 0.9) and len(first.steps) == 2
    assert truncated.step_scores == ()


def test_majority_runs_without_prm_and_others_need_one():
    config = SearchConfig(strategy="majority", n=6, max_tokens=30)
    (result,) = run_search(config, [problem("P")], ScriptedEngine(SAMPLES), None, FakeAnswerSpec())
    assert result.candidates[result.selected].answer == "1/2"
    for strategy in ("best_of_n", "beam_search", "dvts", "compute_optimal"):
        config = SearchConfig(strategy=strategy, n=4)
        with pytest.raises(ValueError, match=f"^strategy={strategy} needs a process reward model"):
            run_search(config, [problem("P")], ScriptedEngine(SAMPLES), None, FakeAnswerSpec())


def test_engine_contract_violations_are_reported():
    class NoStopInText(ScriptedEngine):
        def generate(self, requests):
            outputs = super().generate(requests)
            return [
                type(o)(
                    tuple(
                        type(c)(c.text.replace("\n\n", ""), c.token_ids, c.finish_reason)
                        for c in o.completions
                    ),
                    o.prompt_tokens,
                )
                for o in outputs
            ]

    config = SearchConfig(strategy="beam_search", n=2, beam_width=2)
    with pytest.raises(ValueError, match="STEP completion whose text lacks the step delimiter"):
        run_search(config, [problem("P")], NoStopInText(BEAM_SCRIPT), FakePRM(), FakeAnswerSpec())


def test_duplicate_uids_are_rejected():
    config = SearchConfig(strategy="majority", n=2)
    with pytest.raises(ValueError, match="problem uid 'P' appears twice"):
        run_search(config, [problem("P"), problem("P")], RandomEngine(), None, FakeAnswerSpec())
