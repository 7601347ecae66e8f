"""Batching across problems, determinism, batch-independence and cost accounting."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter

import pytest
from fakes import FakeAnswerSpec, FakePRM, RandomEngine, ScriptedEngine, decode, problem

from tts_eval.search import SearchConfig, run_search
from tts_eval.types import Cost

PROBLEMS = [problem(f"p{i}") for i in range(5)]

CONFIGS = [
    dict(strategy="majority", n=8),
    dict(strategy="best_of_n", n=8),
    dict(strategy="best_of_n", n=8, selection="naive", agg="min"),
    dict(strategy="beam_search", n=8, beam_width=2),
    dict(strategy="beam_search", n=8, beam_width=4, lookahead=1, agg="prod"),
    dict(strategy="dvts", n=8, beam_width=2),
    dict(strategy="dvts", n=8, beam_width=4, lookahead=2, agg="mean"),
    dict(strategy="compute_optimal", n=8),
]


def config_of(kwargs, **extra) -> SearchConfig:
    return SearchConfig(**{"max_tokens": 150, "num_iterations": 8, **kwargs, **extra})


def search(kwargs, problems, **extra):
    engine, prm = RandomEngine(), FakePRM()
    results = run_search(config_of(kwargs, **extra), problems, engine, prm, FakeAnswerSpec())
    return results, engine, prm


def without_time(result):
    return dataclasses.replace(result, cost=dataclasses.replace(result.cost, wall_time_s=0.0))


@pytest.mark.parametrize("kwargs", CONFIGS, ids=lambda k: "-".join(map(str, k.values())))
def test_deterministic_and_independent_of_the_batch(kwargs):
    full, _, _ = search(kwargs, PROBLEMS)
    again, _, _ = search(kwargs, PROBLEMS)
    assert list(map(without_time, full)) == list(map(without_time, again))
    subset, _, _ = search(kwargs, [PROBLEMS[3], PROBLEMS[1]])
    assert [without_time(r) for r in subset] == [without_time(full[3]), without_time(full[1])]
    assert any(r.selected is not None for r in full)  # the comparison is not vacuous
    reseeded, _, _ = search(kwargs, PROBLEMS, seed=1)
    assert [r.candidates for r in reseeded] != [r.candidates for r in full]


@pytest.mark.parametrize("kwargs", CONFIGS, ids=lambda k: "-".join(map(str, k.values())))
def test_requests_are_batched_across_problems(kwargs):
    results, engine, prm = search(kwargs, PROBLEMS)
    uids = {p.uid for p in PROBLEMS}

    def uids_in(call):
        return {decode(r.prompt_ids).split("|")[0] for r in call}

    assert uids_in(engine.calls[0]) == uids  # one call covers every problem
    seeds = [r.params.seed for r in engine.calls[0]]
    assert len(set(seeds)) == len(seeds)  # seeds differ across problems and beams
    lookahead = kwargs.get("lookahead", 0)
    if kwargs["strategy"] in ("beam_search", "dvts"):
        rounds = max(r.settings["iterations_run"] for r in results)
        # one engine call per iteration (plus one per lookahead depth), one PRM call per iteration
        assert rounds <= len(engine.calls) <= rounds * (1 + lookahead)
        assert len(prm.calls) <= rounds
        if not lookahead:
            assert len(engine.calls) == rounds
    for call in engine.calls:
        # never a loop over problems: each call holds every problem that still generates
        assert len(call) >= len(uids_in(call))
        assert all(r.params.seed is not None for r in call)
    for call in prm.calls:
        assert all(step.strip() for request in call for step in request.steps)
        assert all(step == step.strip() for request in call for step in request.steps)


def test_one_call_per_iteration_with_many_problems():
    problems = [problem(f"q{i}") for i in range(12)]
    results, engine, prm = search(dict(strategy="beam_search", n=8, beam_width=4), problems)
    rounds = max(r.settings["iterations_run"] for r in results)
    assert len(engine.calls) == rounds
    assert len(prm.calls) == rounds
    # the first iteration carries 2 beams x 12 problems in one call
    assert len(engine.calls[0]) == 24


@pytest.mark.parametrize("kwargs", CONFIGS, ids=lambda k: "-".join(map(str, k.values())))
def test_costs_are_exact_per_problem(kwargs):
    start = time.perf_counter()
    results, engine, prm = search(kwargs, PROBLEMS)
    elapsed = time.perf_counter() - start
    policy, prompt, prm_tokens = Counter(), Counter(), Counter()
    for call, outputs in zip(engine.calls, engine.outputs, strict=True):
        for request, output in zip(call, outputs, strict=True):
            uid = decode(request.prompt_ids).split("|")[0]
            policy[uid] += sum(len(c.token_ids) for c in output.completions)
            prompt[uid] += output.prompt_tokens
    for call, outputs in zip(prm.calls, prm.outputs, strict=True):
        for request, output in zip(call, outputs, strict=True):
            prm_tokens[request.problem.split()[-1]] += output.tokens_processed
    for result in results:
        assert result.cost.policy_tokens == policy[result.uid] > 0
        assert result.cost.prompt_tokens == prompt[result.uid] > 0
        assert result.cost.prm_tokens == prm_tokens[result.uid]
        assert result.cost.cached_prompt_tokens == 0  # RandomEngine does not report caching
        assert result.cost.wall_time_s > 0
    assert sum(r.cost.wall_time_s for r in results) <= elapsed
    if kwargs["strategy"] != "majority":
        assert all(r.cost.prm_tokens > 0 for r in results)


def test_policy_tokens_of_sampling_equal_the_candidates_tokens():
    results, _, _ = search(dict(strategy="best_of_n", n=8), PROBLEMS)
    for result in results:
        assert result.cost.policy_tokens == sum(len(c.token_ids) for c in result.candidates)
        assert result.cost.prompt_tokens == 8 * len("p0|")  # each of the 8 samples queries it


def test_cached_prompt_tokens_are_summed_where_reported():
    script = {
        "": ["a [0.5]\n\n", "b [0.6]\n\n"],
        "a [0.5]\n\n": ["\\boxed{1}<eos>"],
        "b [0.6]\n\n": ["\\boxed{2}<eos>"],
    }
    engine = ScriptedEngine(script, report_cache=True)
    config = SearchConfig(strategy="beam_search", n=2, beam_width=2, num_iterations=3)
    (result,) = run_search(config, [problem("P")], engine, FakePRM(), FakeAnswerSpec())
    requests = [r for call in engine.calls for r in call]
    cached = sum(len(r.prompt_ids) * r.params.n - 1 for r in requests)
    assert result.cost.cached_prompt_tokens == cached > 0
    assert result.candidates[result.selected].answer == "2"


def test_cost_addition():
    assert Cost(1, 2, 3, 4, 0.5) + Cost(1, 1, 1, 1, 0.25) == Cost(2, 3, 4, 5, 0.75)


def test_progress_bar_does_not_change_results(capsys):
    kwargs = dict(strategy="dvts", n=8, beam_width=4)
    engine, prm = RandomEngine(), FakePRM()
    quiet, _, _ = search(kwargs, PROBLEMS)
    shown = run_search(config_of(kwargs), PROBLEMS, engine, prm, FakeAnswerSpec(), progress=True)
    assert list(map(without_time, quiet)) == list(map(without_time, shown))
    assert "search[dvts]" in capsys.readouterr().err


def test_empty_batch():
    engine = RandomEngine()
    assert run_search(SearchConfig(), [], engine, FakePRM(), FakeAnswerSpec()) == []
    assert engine.calls == []
