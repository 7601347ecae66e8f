"""Exact semantics of particle filtering and particle Gibbs on scripted engines.

Scores live in the scripted step text (``[0.75]``). At ``pf_temperature=1`` a particle's
resampling weight is its odds ``p / (1 - p)`` (``exp(logit p)``): 0.5 -> 1, 0.75 -> 3, 0.8 -> 4,
0.9 -> 9. Systematic resampling gives every particle exactly ``n * probability`` copies when
those are integers, whatever its uniform, so the worlds below are checkable by eye; the
multinomial ones are checked against the documented generator.
"""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
from fakes import FakeAnswerSpec, FakePRM, RandomEngine, ScriptedEngine, problem

from tts_eval.search import SearchConfig, run_search
from tts_eval.search._common import derive_seed
from tts_eval.search.particle_filtering import log_weight, probabilities, resample
from tts_eval.types import FinishReason

DELIM = ("\n\n",)
LONG = "L" * 60 + "<eos>"  # cut off at max_tokens=40: truncated


def run(strategy, script, *, problems=None, **kwargs):
    engine, prm = ScriptedEngine(script), FakePRM()
    config = SearchConfig(strategy=strategy, **{"max_tokens": 40, **kwargs})
    results = run_search(config, problems or [problem("P")], engine, prm, FakeAnswerSpec())
    return results, engine, prm


class Uniforms:
    """A generator whose ``random()`` returns the given numbers in order."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


# --------------------------------------------------------------------------------------------
# weights and resampling rules
# --------------------------------------------------------------------------------------------


def test_log_weight_is_the_clipped_logit():
    assert log_weight(0.5) == 0.0
    assert math.exp(log_weight(0.75)) == pytest.approx(3.0)
    assert log_weight(1.0) == pytest.approx(math.log((1 - 1e-7) / 1e-7))
    assert log_weight(0.0) == pytest.approx(-log_weight(1.0))
    assert log_weight(2.0) == log_weight(1.0) and log_weight(-1.0) == log_weight(0.0)


def test_probabilities_are_a_tempered_softmax_without_truncated_particles():
    weights = [log_weight(0.75), log_weight(0.5), None]
    assert probabilities(weights, 1.0) == pytest.approx([0.75, 0.25, 0.0])
    assert probabilities(weights, 2.0) == pytest.approx(
        [3**0.5 / (3**0.5 + 1), 1 / (3**0.5 + 1), 0]
    )
    assert probabilities(weights, 1e-9) == [1.0, 0.0, 0.0]  # greedy limit
    assert probabilities(weights, 1e9) == pytest.approx([0.5, 0.5, 0.0])  # uniform limit
    with pytest.raises(ValueError, match="no particle has a weight"):
        probabilities([None, None], 1.0)


def test_multinomial_draws_one_uniform_per_particle():
    probs = [0.5, 0.25, 0.25, 0.0]  # cumulative 0.5, 0.75, 1.0, 1.0
    drawn = resample(probs, 4, "multinomial", Uniforms(0.9, 0.1, 0.6, 0.4))
    assert drawn == [0, 0, 1, 2]  # 0.1 and 0.4 -> 0, 0.6 -> 1, 0.9 -> 2; ascending
    assert resample(probs, 2, "multinomial", Uniforms(0.99, 0.97)) == [2, 2]
    # a point on a boundary goes to the next particle with mass, never to one without
    assert resample([0.5, 0.0, 0.5], 1, "multinomial", Uniforms(0.5)) == [2]


def test_systematic_uses_one_uniform_and_evenly_spaced_points():
    probs = [0.5, 0.25, 0.25, 0.0]
    assert resample(probs, 4, "systematic", Uniforms(0.1)) == [0, 0, 1, 2]  # .025 .275 .525 .775
    assert resample(probs, 4, "systematic", Uniforms(0.99)) == [0, 0, 1, 2]  # .2475 ... .9975
    # counts always within floor/ceil of n * p; multinomial can stray
    for seed in range(50):
        counts = [
            resample([0.7, 0.3], 4, "systematic", random.Random(seed)).count(i) for i in (0, 1)
        ]
        assert counts in ([3, 1], [2, 2])
    multinomial = {
        tuple(resample([0.7, 0.3], 4, "multinomial", random.Random(seed))) for seed in range(50)
    }
    assert (0, 0, 0, 0) in multinomial or (0, 1, 1, 1) in multinomial


# --------------------------------------------------------------------------------------------
# particle filtering
# --------------------------------------------------------------------------------------------

PF_SCRIPT = {
    "": ["\\boxed{1} [0.75]<eos>", "a [0.5]\n\n", LONG, LONG],
    "a [0.5]\n\n": ["\\boxed{2} [0.8]<eos>"],
}


@pytest.mark.parametrize("selection, answer", [("weighted", "1"), ("naive", "2")])
def test_finished_particles_are_copied_with_their_weight(selection, answer):
    (result,), engine, prm = run(
        "particle_filtering", PF_SCRIPT, n=4, resampling="systematic", selection=selection
    )
    # iteration 0: one request for the 4 empty particles, stopping at the step delimiter
    assert [[(r.params.n, r.params.stop) for r in call] for call in engine.calls] == [
        [(4, DELIM)],
        [(1, DELIM)],  # only the one active copy is extended; finished copies are not
    ]
    assert [len(call) for call in prm.calls] == [2, 1]  # truncated particles are never scored
    first, second = result.settings["genealogy"][0]
    # odds 3 (finished), 1 (active), truncated, truncated -> probabilities 3/4, 1/4, 0, 0
    assert first["log_weights"] == [log_weight(0.75), 0.0, None, None]
    assert first["counts"] == [3, 1, 0, 0] and first["ancestors"] == [0, 0, 0, 1]
    assert second == {"log_weights": [log_weight(0.75)] * 3 + [log_weight(0.8)]}  # not resampled
    assert result.settings["iterations_run"] == 2
    assert [(c.answer, c.finished, c.step_scores) for c in result.candidates] == [
        ("1", True, (0.75,)),
        ("1", True, (0.75,)),
        ("1", True, (0.75,)),
        ("2", True, (0.5, 0.8)),
    ]
    # weighted: three copies of odds 3 (9/13) beat one of odds 4 (4/13); naive: the best single
    assert result.candidates[result.selected].answer == answer
    assert {c.group for c in result.candidates} == {0}
    assert result.cost.policy_tokens == sum(
        len(c.token_ids) for call in engine.outputs for o in call for c in o.completions
    )


def test_truncated_particles_are_never_finished_nor_selected():
    script = {"": [LONG, "\\boxed{3} " + "x" * 40 + "<eos>"]}
    (result,), engine, prm = run("particle_filtering", script, n=2, max_tokens=30)
    assert all(c.finish_reason is FinishReason.LENGTH for c in result.candidates)
    assert not any(c.finished for c in result.candidates)
    assert result.selected is None
    assert prm.calls == [] and len(engine.calls) == 1
    assert result.settings["genealogy"] == [[{"log_weights": [None, None]}]]


def test_truncated_particles_get_no_copies_while_others_can_continue():
    script = {"": [LONG, "a [0.01]\n\n"], "a [0.01]\n\n": ["\\boxed{2} [0.9]<eos>"]}
    (result,), _, _ = run("particle_filtering", script, n=2)
    first = result.settings["genealogy"][0][0]
    assert first["counts"] == [0, 2]  # the low-scored active particle takes every copy
    assert [c.answer for c in result.candidates] == ["2", "2"]


TEMPERATURE_SCRIPT = {
    "": ["a [0.9]\n\n", "b [0.8]\n\n", "c [0.6]\n\n", "d [0.2]\n\n"],
    **{
        f"{s} [{p}]\n\n": [f"\\boxed{{{s}}} [{p}]<eos>"]
        for s, p in zip("abcd", (0.9, 0.8, 0.6, 0.2), strict=True)
    },
}


@pytest.mark.parametrize(
    "temperature, counts, answers",
    [
        (1e-9, [4, 0, 0, 0], ["a"] * 4),  # all copies to the best: greedy
        (1e9, [1, 1, 1, 1], ["a", "b", "c", "d"]),  # uniform: every particle once
    ],
)
def test_temperature_limits(temperature, counts, answers):
    (result,), engine, _ = run(
        "particle_filtering",
        TEMPERATURE_SCRIPT,
        n=4,
        resampling="systematic",
        pf_temperature=temperature,
    )
    assert result.settings["genealogy"][0][0]["counts"] == counts
    assert [c.answer for c in result.candidates] == answers
    assert [r.params.n for r in engine.calls[1]] == [c for c in counts if c]
    assert result.settings["pf_temperature"] == temperature
    # weights of the final particles are tempered alike: the best-scored answer still wins
    assert result.candidates[result.selected].answer == "a"


def test_multinomial_counts_follow_the_documented_generator():
    """Counts drawn from random.Random(derive_seed(seed, uid, strategy, "resample", sweep, t))."""
    seen = set()
    for seed in range(8):
        (result,), _, _ = run("particle_filtering", PF_SCRIPT, n=4, seed=seed)
        rng = random.Random(derive_seed(seed, "P", "particle_filtering", "resample", 0, 0))
        # by hand: a uniform below 3/4 picks the finished particle 0, otherwise particle 1
        expected = sorted(0 if rng.random() < 0.75 else 1 for _ in range(4))
        first = result.settings["genealogy"][0][0]
        assert first["ancestors"] == expected
        seen.add(tuple(first["counts"]))
    assert len(seen) > 1  # multinomial counts vary with the seed (systematic would give 3, 1)


def test_iteration_cap_generates_to_the_end():
    engine, prm = RandomEngine(p_final=0.0, max_steps=20), FakePRM()
    config = SearchConfig(strategy="particle_filtering", n=3, num_iterations=3, max_tokens=400)
    (result,) = run_search(config, [problem("P")], engine, prm, FakeAnswerSpec())
    assert [call[0].params.stop for call in engine.calls] == [DELIM, DELIM, ()]
    assert result.settings["iterations_run"] == 3
    assert all(c.finish_reason is FinishReason.EOS for c in result.candidates)
    assert result.selected is None  # ended without an answer


# --------------------------------------------------------------------------------------------
# particle Gibbs
# --------------------------------------------------------------------------------------------

PG_SCRIPT = {
    "": ["x [0.5]\n\n", "r [0.5]\n\n"],
    "x [0.5]\n\n": [LONG],
    "r [0.5]\n\n": ["\\boxed{2} [0.8]<eos>"],
}


def test_reference_particle_survives_the_next_sweep():
    (result,), engine, _ = run(
        "particle_gibbs", PG_SCRIPT, n=4, pg_iterations=2, resampling="systematic"
    )
    sweep0, sweep1 = result.settings["genealogy"]
    # sweep 0: two particles of equal weight keep one copy each; x is then cut off
    assert sweep0[0]["counts"] == [1, 1]
    assert sweep0[1] == {"log_weights": [None, log_weight(0.8)]}
    # the reference is the finished particle (the truncated one has no weight)
    assert result.settings["references"] == [[1]]
    # sweep 1: one free particle from scratch (one request, n=1), the reference joins as its
    # prefix after iteration 0 with the weight it had then; only the free particle is resampled
    assert [(r.prompt_ids[2:], r.params.n) for r in engine.calls[2]] == [((), 1)]
    assert sweep1[0]["log_weights"] == [0.0, 0.0]
    assert len(sweep1[0]["ancestors"]) == 1 and sum(sweep1[0]["counts"]) == 1
    assert sweep1[1]["log_weights"][1] == log_weight(0.8)  # the reference's final state
    candidates = result.candidates
    assert [c.group for c in candidates] == [0, 0, 1, 1]
    reference = candidates[3]
    assert (reference.text, reference.step_scores) == (candidates[1].text, (0.5, 0.8))
    assert reference.finished and result.selected in (2, 3)  # chosen in the last sweep
    assert candidates[result.selected].answer == "2"


def test_reference_joins_every_iteration_with_the_weight_of_its_prefix():
    script = {
        "": ["x [0.9]\n\n", "r [0.1]\n\n", "y [0.3]\n\n"],
        "x [0.9]\n\n": ["\\boxed{1} [0.2]<eos>"],
    }
    (result,), engine, _ = run("particle_gibbs", script, n=6, pg_iterations=2, pf_temperature=1e-9)
    sweep0, sweep1 = result.settings["genealogy"]
    assert sweep0[0]["counts"] == [3, 0, 0]  # greedy limit: every copy to x
    assert [c.answer for c in result.candidates[:3]] == ["1", "1", "1"]
    (ref,) = result.settings["references"][0]
    # sweep 1: 2 free particles (x, r), then the reference as it was after iteration 0 (x, 0.9)
    assert sweep1[0]["log_weights"] == [log_weight(0.9), log_weight(0.1), log_weight(0.9)]
    drawn = sweep1[0]["counts"]
    assert drawn[1] == 0 and drawn[0] + drawn[2] == 2
    # a drawn reference prefix is a free particle now: continued with its own request
    assert [r.params.n for r in engine.calls[3]] == [k for k in drawn if k]
    assert [c.group for c in result.candidates] == [0, 0, 0, 1, 1, 1]
    assert result.candidates[5] == dataclasses.replace(result.candidates[ref], group=1)


def test_answer_comes_from_the_latest_sweep_that_has_one():
    # The best-weighted particle ends without an answer; with a tiny pf_temperature it is the
    # reference, and sweep 1 (its free particle takes the same path) has no answer at all.
    script = {"": ["done [0.9]<eos>", "\\boxed{1} [0.1]<eos>"]}
    (result,), _, _ = run("particle_gibbs", script, n=4, pg_iterations=2, pf_temperature=1e-9)
    assert result.settings["references"] == [[0]]
    assert [(c.group, c.answer) for c in result.candidates] == [
        (0, None),
        (0, "1"),
        (1, None),
        (1, None),
    ]
    assert result.selected == 1


# --------------------------------------------------------------------------------------------
# determinism, batching, genealogy consistency
# --------------------------------------------------------------------------------------------

PROBLEMS = [problem(uid) for uid in ("A", "B", "C")]
CONFIGS = [
    dict(strategy="particle_filtering", n=8),
    dict(strategy="particle_filtering", n=6, resampling="systematic", pf_temperature=0.5),
    dict(strategy="particle_gibbs", n=8, pg_iterations=2),
    dict(strategy="particle_gibbs", n=9, pg_iterations=3, pg_reference_particles=2),
]


def search(problems, **kwargs):
    engine, prm = RandomEngine(), FakePRM()
    config = SearchConfig(**{"max_tokens": 120, "num_iterations": 8, **kwargs})
    return run_search(config, problems, engine, prm, FakeAnswerSpec()), engine, prm


def comparable(result):
    return dataclasses.replace(result, cost=dataclasses.replace(result.cost, wall_time_s=0.0))


@pytest.mark.parametrize("kwargs", CONFIGS, ids=lambda k: f"{k['strategy']}-n{k['n']}")
def test_deterministic_and_independent_of_the_batch(kwargs):
    together, engine, prm = search(PROBLEMS, **kwargs)
    again, _, _ = search(PROBLEMS, **kwargs)
    assert [comparable(r) for r in together] == [comparable(r) for r in again]
    reordered, _, _ = search(PROBLEMS[::-1], **kwargs)
    assert [comparable(r) for r in reordered[::-1]] == [comparable(r) for r in together]
    alone = []
    for p, batched in zip(PROBLEMS, together, strict=True):
        (result,), e, r = search([p], **kwargs)
        assert comparable(result) == comparable(batched)
        alone.append((len(e.calls), len(r.calls)))
    # batched: one engine call and one PRM call per iteration, whatever the number of problems
    assert len(engine.calls) == max(e for e, _ in alone)
    assert len(prm.calls) == max(r for _, r in alone)
    assert any(len({req.prompt_ids[:2] for req in call}) > 1 for call in engine.calls)
    # another seed, another search
    other, _, _ = search(PROBLEMS, seed=1, **kwargs)
    assert [comparable(r) for r in other] != [comparable(r) for r in together]


@pytest.mark.parametrize("kwargs", CONFIGS, ids=lambda k: f"{k['strategy']}-n{k['n']}")
def test_genealogy_is_consistent(kwargs):
    results, _, _ = search(PROBLEMS, **kwargs)
    sweeps = kwargs.get("pg_iterations", 1)
    size = kwargs["n"] // sweeps
    refs = kwargs.get("pg_reference_particles", 1) if sweeps > 1 else 0
    for result in results:
        assert len(result.candidates) == kwargs["n"]
        genealogy = result.settings["genealogy"]
        assert len(genealogy) == sweeps
        assert result.settings["iterations_run"] == sum(map(len, genealogy))
        for s, entries in enumerate(genealogy):
            free = size - (refs if s else 0)
            for entry in entries[:-1]:
                weights, counts, ancestors = (
                    entry["log_weights"],
                    entry["counts"],
                    entry["ancestors"],
                )
                assert len(weights) == len(counts) == size
                assert ancestors == sorted(ancestors) and len(ancestors) == free
                assert counts == [ancestors.count(i) for i in range(size)]
                assert all(c == 0 for w, c in zip(weights, counts, strict=True) if w is None)
            assert "ancestors" not in entries[-1]
            block = result.candidates[s * size : (s + 1) * size]
            final = [
                None if c.finish_reason is FinishReason.LENGTH else log_weight(c.step_scores[-1])
                for c in block
            ]
            assert entries[-1]["log_weights"] == pytest.approx(final)
            assert all(c.group == s for c in block)
            assert not any(c.finish_reason is FinishReason.STEP and not c.finished for c in block)
        if sweeps > 1:
            assert [len(r) for r in result.settings["references"]] == [refs] * (sweeps - 1)
        if result.selected is not None:
            assert result.selected >= (sweeps - 1) * size
            assert result.candidates[result.selected].finished
