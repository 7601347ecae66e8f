"""Early stopping of the sampling strategies (``stop=adaptive|esc``, ``wave``) on scripted engines.

Every sample of the scripted problems is one boxed answer (``\\boxed{a}`` + EOS: 10 tokens), and
the seeded fake numbers samples as real engines seed them (sample ``i`` is seeded ``base + i``), so
which answer a problem's ``i``-th sample gives is read off the script below. Stopping points are
hand-computed from the Beta tails of ``tests/test_search_stopping.py``
(``P(Beta(c1 + 1, c2 + 1) > 1/2)``): 1-0: 3/4, 2-0: 7/8, 3-0: 15/16, 4-0: 31/32 (>= 0.95), 1-1:
1/2, 2-1: 11/16, 3-1: 26/32, 4-1: 57/64, 5-1: 120/128, 6-1: 247/256 (>= 0.95), 7-1: 502/512.
"""

from __future__ import annotations

import dataclasses

import pytest
from fakes import FakeAnswerSpec, FakePRM, RandomEngine, ScriptedEngine, problem

from tts_eval.config import TTSConfig, result_identity
from tts_eval.errors import SettingError
from tts_eval.model_args import parse_model_args
from tts_eval.search import SearchConfig, derive_seed, get_spec, run_search
from tts_eval.settings import EngineConfig
from tts_eval.traces import result_record
from tts_eval.workflow.estimate import EstimateSettings, Grader, estimate_run


def boxed(*answers: str) -> list[str]:
    return [f"\\boxed{{{a}}}<eos>" for a in answers]


SAMPLE_TOKENS = 10  # "\boxed{a}" (9 characters) + EOS
SCRIPT = {
    "A|": boxed("1"),  # unanimous
    "B|": boxed("1", "2", "1", "1", "1", "1", "1", "1"),  # one dissent
    "C|": boxed(*"12345678"),  # all different: never settles
}
PROBLEMS = [problem(uid) for uid in "ABC"]


def run(strategy="majority", *, script=SCRIPT, problems=PROBLEMS, prm=None, **kwargs):
    engine = ScriptedEngine(script, seeded=True)
    config = SearchConfig(strategy=strategy, **{"n": 8, "max_tokens": 50, **kwargs})
    results = run_search(config, problems, engine, prm, FakeAnswerSpec())
    return {r.uid: r for r in results}, engine


def drawn(results):
    return {uid: r.settings["samples_drawn"] for uid, r in results.items()}


def test_adaptive_consistency_one_sample_per_wave():
    results, engine = run(stop="adaptive")
    # A: 4-0 gives 31/32 >= 0.95 after 4; B: 6-1 gives 247/256 after 7; C never settles
    assert drawn(results) == {"A": 4, "B": 7, "C": 8}
    assert {uid: r.settings["stopped_at"] for uid, r in results.items()} == {
        "A": 4,
        "B": 7,
        "C": None,
    }
    assert {uid: r.settings["waves"] for uid, r in results.items()} == {"A": 4, "B": 7, "C": 8}
    assert "0.9688 >= 0.95 with answer counts 4" in results["A"].settings["stop_reason"]
    assert "0.9648 >= 0.95 with answer counts 6,1" in results["B"].settings["stop_reason"]
    assert results["C"].settings["stop_reason"].startswith("cap: all n=8 samples drawn")
    # one engine call per wave over the problems still drawing: stopped ones leave the batch
    assert [len(call) for call in engine.calls] == [3, 3, 3, 3, 2, 2, 2, 1]
    assert all(req.params.n == 1 for call in engine.calls for req in call)
    # the cost counts what was drawn, the selection votes over every drawn sample
    for r in results.values():
        assert len(r.candidates) == r.settings["samples_drawn"]
        assert r.cost.policy_tokens == SAMPLE_TOKENS * r.settings["samples_drawn"]
    assert [results[u].candidates[results[u].selected].answer for u in "ABC"] == ["1", "1", "1"]
    assert [c.answer for c in results["B"].candidates] == ["1", "2", "1", "1", "1", "1", "1"]


def test_waves_of_two_read_the_rule_after_each_wave():
    results, engine = run(stop="adaptive", wave=2)
    # A: 2-0 (7/8) after 2, 4-0 after 4; B: 1-1, 3-1, 5-1 (120/128 < 0.95), 7-1 at the cap
    assert drawn(results) == {"A": 4, "B": 8, "C": 8}
    assert results["B"].settings["stopped_at"] == 8  # the rule fired, on the last wave
    assert [[req.params.n for req in call] for call in engine.calls] == [
        [2, 2, 2],
        [2, 2, 2],
        [2, 2],
        [2, 2],
    ]
    # wave k asks for samples 2k, 2k+1: seeded base + 2k (an engine seeds sample j with seed + j)
    seeds = [req.params.seed for call in engine.calls for req in call if req.prompt_ids[0] == 67]
    assert [s - seeds[0] for s in seeds] == [0, 2, 4, 6]


def test_a_lower_threshold_stops_earlier():
    results, _ = run(stop="adaptive", stop_threshold=0.9)
    # A: 3-0 is 15/16 >= 0.9; B: 5-1 is 120/128 >= 0.9 after 6
    assert drawn(results) == {"A": 3, "B": 6, "C": 8}


def test_dirichlet_prior_reads_every_answer():
    script = {"D|": boxed("1", "2", "3", "1", "1", "1", "1", "1", "1", "1")}
    beta, _ = run(stop="adaptive", script=script, problems=[problem("D")], n=10)
    dirichlet, _ = run(
        stop="adaptive", stop_prior="dirichlet", script=script, problems=[problem("D")], n=10
    )
    # Beta reads the top two counts only: 6-1 fires after 8 samples (6, 1, 1)
    assert beta["D"].settings["samples_drawn"] == 8
    # the Dirichlet posterior over three answers is less sure of the leader at 6-1-1
    assert dirichlet["D"].settings["samples_drawn"] > 8
    assert "(dirichlet)" in dirichlet["D"].settings["stop_reason"]


def test_esc_windows_of_identical_answers():
    results, engine = run(stop="esc", esc_window=3)
    # waves of the window: A's first window is unanimous; B's second (samples 4-6)
    assert drawn(results) == {"A": 3, "B": 6, "C": 8}
    assert [[req.params.n for req in call] for call in engine.calls] == [[3, 3, 3], [3, 3], [2]]
    assert "samples 4-6 (window 3)" in results["B"].settings["stop_reason"]
    # waves that do not align with the window: the rule fires at the first unanimous window
    results, _ = run(stop="esc", esc_window=3, wave=2)
    assert drawn(results) == {"A": 4, "B": 6, "C": 8}
    assert results["A"].settings["stopped_at"] == 3


def test_best_of_n_scores_the_finished_samples_once_stopped():
    script = {
        "A|": [f"\\boxed{{1}} [0.{i}]<eos>" for i in range(1, 9)],
        "B|": ["\\boxed{1} [0.2]<eos>", "\\boxed{2} [0.9]<eos>", "\\boxed{2} [0.8]<eos>"]
        + ["\\boxed{1} [0.1]<eos>"] * 5,
    }
    prm = FakePRM()
    results, engine = run(
        "best_of_n", script=script, problems=PROBLEMS[:2], prm=prm, stop="esc", esc_window=2
    )
    # A: samples 1-2 agree (stops at 2); B: 1,2 | 2,1 | 1,1 (stops at 6)
    assert drawn(results) == {"A": 2, "B": 6}
    # the PRM scores a problem's samples once, when it stopped (A in round 1, B in round 3)
    assert [[req.problem for req in call] for call in prm.calls] == [["problem A"] * 2] + [
        ["problem B"] * 6
    ]
    # weighted selection over what was drawn: 2 has 0.9 + 0.8 > 0.2 + 0.1 + 0.1 + 0.1
    b = results["B"]
    assert b.candidates[b.selected].answer == "2"
    assert b.cost.prm_tokens == sum(out.tokens_processed for out in prm.outputs[1])


def comparable(result):
    return dataclasses.replace(result, cost=dataclasses.replace(result.cost, wall_time_s=0.0))


@pytest.mark.parametrize("strategy", ["majority", "best_of_n"])
def test_a_rule_that_never_fires_is_the_fixed_budget_run(strategy):
    """8 unanimous answers give P = 511/512 < 0.999: the rule cannot fire, so the waves draw the
    fixed run's samples (seeded base + i either way), select the same one and cost the same."""
    problems = [problem(uid) for uid in ("A", "B", "C", "D")]

    def search(**kwargs):
        engine, prm = RandomEngine(seeded=True, answers=("1", "2")), FakePRM()
        config = SearchConfig(strategy=strategy, n=8, max_tokens=120, **kwargs)
        return run_search(config, problems, engine, prm, FakeAnswerSpec()), engine

    fixed, fixed_engine = search()
    waved, waved_engine = search(stop="adaptive", stop_threshold=0.999, wave=3)
    assert len(fixed_engine.calls) == 1 and len(waved_engine.calls) == 3  # waves of 3, 3, 2
    for a, b in zip(fixed, waved, strict=True):
        assert b.settings["samples_drawn"] == 8 and b.settings["stopped_at"] is None
        assert b.candidates == a.candidates
        assert b.selected == a.selected
        assert (b.cost.policy_tokens, b.cost.prompt_tokens, b.cost.prm_tokens) == (
            a.cost.policy_tokens,
            a.cost.prompt_tokens,
            a.cost.prm_tokens,
        )
    assert len({c.answer for r in fixed for c in r.candidates}) > 1  # not a trivial batch


@pytest.mark.parametrize(
    "kwargs, varies",
    [
        (dict(strategy="majority", stop="adaptive", wave=2), "samples_drawn"),
        (dict(strategy="best_of_n", prune_steps=2, prune_fraction=0.4), "pruned_tokens"),
    ],
)
def test_results_do_not_depend_on_the_batch(kwargs, varies):
    problems = [problem(uid) for uid in ("A", "B", "C", "D", "E")]

    def search(batch):
        engine = RandomEngine(seeded=True, answers=("1", "2", "3"), p_final=0.5)
        config = SearchConfig(n=12, max_tokens=120, **kwargs)
        results = run_search(config, batch, engine, FakePRM(), FakeAnswerSpec())
        return [comparable(r) for r in results]

    together = search(problems)
    assert len({r.settings[varies] for r in together}) > 1  # the problems differ
    assert search(problems[::-1])[::-1] == together
    assert [search([p])[0] for p in problems] == together


def test_a_stopped_run_is_one_curve_at_its_cap_with_the_tokens_it_spent():
    spec = get_spec("majority")
    results, _ = run(stop="adaptive")
    settings = results["A"].settings
    (curve,) = spec.curves_of(8, settings)
    assert curve.name == "majority (stop=adaptive)" and curve.budgets == (8,)
    assert not curve.prm and curve.choose is None
    assert [c.name for c in get_spec("best_of_n").curves_of(8, {**settings, "wave": 2})] == [
        "best_of_n (stop=adaptive, wave=2)"
    ]
    # a sweep runs a stopped strategy at every budget, a fixed one at its largest
    stopped = SearchConfig(strategy="majority", n=8, stop="esc").options
    assert spec.plan([2, 4, 8], stopped) == [2, 4, 8]
    assert spec.plan([2, 4, 8], SearchConfig(strategy="majority", n=8).options) == [8]
    records = [result_record(r, task="t", doc={"answer": "1"}) for r in (results[u] for u in "ABC")]
    spec_ = FakeAnswerSpec()
    (point,) = estimate_run(
        records, "run", spec_, Grader(spec_, lambda a, g: a == g), EstimateSettings()
    )
    assert point.curve == "majority (stop=adaptive)" and point.n == 8
    assert point.policy_tokens == {"A": 40, "B": 70, "C": 80}
    assert point.accuracy == {"A": 1.0, "B": 1.0, "C": 1.0}


def test_fixed_budget_identities_do_not_change():
    """The early-stopping options are part of a result's identity only when set, so runs recorded
    before they existed keep their keys."""
    engine = EngineConfig(pretrained="m")
    fixed = result_identity(TTSConfig(engine=engine, search=SearchConfig(strategy="majority")))
    assert "stop" not in fixed["search"] and "wave" not in fixed["search"]
    stopped = result_identity(
        TTSConfig(engine=engine, search=SearchConfig(strategy="majority", n=8, stop="esc"))
    )
    assert stopped["search"]["stop"] == "esc"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(stop="adaptive", wave=9), "wave=9 is invalid; accepted: an integer in 1..n=8"),
        (dict(stop="often"), "stop=often is invalid; accepted: none, adaptive, esc"),
        (
            dict(wave=2),
            "wave=2 is invalid; accepted: only with stop=adaptive or esc, not stop=none",
        ),
        (dict(stop="adaptive", stop_threshold=1.0), "stop_threshold=1.0 is invalid; accepted: a"),
        (dict(stop="adaptive", stop_threshold=0), "accepted: a number in (0, 1)"),
        (dict(stop="esc", stop_threshold=0.9), "accepted: only with stop=adaptive, not stop=esc"),
        (dict(stop="esc", esc_window=9), "esc_window=9 is invalid; accepted: an integer in 2..n=8"),
        (dict(stop="adaptive", stop_prior="gauss"), "accepted: beta, dirichlet"),
    ],
)
def test_early_stopping_settings_are_checked(kwargs, message):
    with pytest.raises(SettingError) as info:
        SearchConfig(strategy="majority", n=8, **kwargs)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_stopping_options_belong_to_the_sampling_strategies():
    with pytest.raises(SettingError, match="only with strategy=majority or best_of_n"):
        SearchConfig(strategy="beam_search", n=8, stop="adaptive")


# --------------------------------------------------------------------------------------------
# early pruning of best-of-N (Speculative Rejection at step boundaries)
# --------------------------------------------------------------------------------------------

PRUNE_SCRIPT = {
    # sample i takes option i: four first steps scored 0.9, 0.2, 0.6 and 0.1
    "": ["a [0.9]\n\n", "b [0.2]\n\n", "c [0.6]\n\n", "d [0.1]\n\n"],
    "a [0.9]\n\n": ["\\boxed{1} [0.7]<eos>"],
    "c [0.6]\n\n": ["\\boxed{2} [0.8]<eos>"],
    "b [0.2]\n\n": ["\\boxed{3} [0.1]<eos>"],
}


def prune_run(script, **kwargs):
    engine, prm = ScriptedEngine(script), FakePRM()
    config = SearchConfig(strategy="best_of_n", **{"n": 4, "max_tokens": 100, **kwargs})
    (result,) = run_search(config, [problem("P")], engine, prm, FakeAnswerSpec())
    return result, engine, prm


def test_pruning_after_the_first_step():
    result, engine, prm = prune_run(PRUNE_SCRIPT, prune_steps=1)
    # the first steps of all four in one request, seeded as the fixed-budget samples
    (first,) = engine.calls[0]
    assert (first.params.n, first.params.stop) == (4, ("\n\n",))
    assert first.params.seed == derive_seed(0, "P", "sample")
    # scored after step 1: the lower half (0.1 and 0.2) stops; a and c run to the end
    assert [r.steps for r in prm.calls[0]] == [
        ("a [0.9]",),
        ("b [0.2]",),
        ("c [0.6]",),
        ("d [0.1]",),
    ]
    assert result.settings["pruned_at"] == [None, 1, None, 1]
    assert [[(r.params.n, r.params.stop) for r in call] for call in engine.calls[1:]] == [
        [(1, ()), (1, ())]
    ]
    assert [len(call) for call in prm.calls] == [4, 2]  # then only the finished ones
    # the trace keeps the pruned samples' partial solutions and their scores then
    pruned = result.candidates[1]
    assert (pruned.steps, pruned.step_scores, pruned.finished) == (("b [0.2]\n\n",), (0.2,), False)
    assert [c.step_scores for c in result.candidates[::2]] == [(0.9, 0.7), (0.6, 0.8)]
    assert result.candidates[result.selected].answer == "2"  # 0.8 > 0.7 (agg=last)
    # tokens: 9 per first step, 16 per answer step (EOS included); the pruned two had 9 each
    assert result.cost.policy_tokens == 4 * 9 + 2 * 16
    assert (result.settings["pruned"], result.settings["pruned_tokens"]) == (2, 18)
    assert result.settings["tokens_saved_estimate"] == 2 * (25 - 9)


def test_pruning_schedule_of_two_steps_never_prunes_a_finished_sample():
    script = {
        "": ["a [0.9]\n\n", "b [0.2]\n\n", "c [0.6]\n\n", "\\boxed{5} [0.05]<eos>"],
        "a [0.9]\n\n": ["e [0.3]\n\n"],
        "c [0.6]\n\n": ["f [0.5]\n\n"],
        "c [0.6]\n\nf [0.5]\n\n": ["\\boxed{2} [0.8]<eos>"],
    }
    result, engine, prm = prune_run(script, prune_steps=2)
    # step 1: of the three still generating (d finished) floor(1.5) = 1 stops: b; step 2: of a
    # (0.3) and c (0.5), a stops; c alone runs to the end
    assert result.settings["pruned_at"] == [2, 1, None, None]
    assert [len(call) for call in prm.calls] == [3, 2, 2]
    assert {r.steps[-1] for r in prm.calls[2]} == {"\\boxed{2} [0.8]", "\\boxed{5} [0.05]"}
    assert [[r.params.stop for r in call] for call in engine.calls] == [
        [("\n\n",)],
        [("\n\n",), ("\n\n",)],
        [()],
    ]
    assert result.candidates[0].steps == ("a [0.9]\n\n", "e [0.3]\n\n")
    assert result.candidates[result.selected].answer == "2"


def test_a_pruned_run_is_one_curve_and_is_not_a_probe():
    result, _, _ = prune_run(PRUNE_SCRIPT, prune_steps=1, prune_fraction=0.25)
    assert result.settings["pruned_at"] == [None, None, None, 1]  # floor(0.25 x 4) = 1
    spec = get_spec("best_of_n")
    assert [c.name for c in spec.curves_of(4, result.settings)] == [
        "best_of_n (prune_fraction=0.25, prune_steps=1)"
    ]
    assert not spec.scores_samples_of(result.settings)
    assert spec.scores_samples_of(SearchConfig(strategy="best_of_n").settings())
    options = SearchConfig(strategy="best_of_n", n=4, prune_steps=1).options
    assert spec.plan([2, 4], options) == [2, 4]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prune_steps=-1), "prune_steps=-1 is invalid; accepted: an integer >= 0"),
        (dict(prune_steps=1, prune_fraction=1), "prune_fraction=1 is invalid; accepted: a number"),
        (dict(prune_fraction=0.3), "accepted: only with prune_steps >= 1"),
        (dict(prune_steps=1, stop="esc", esc_window=2), "accepted: 0 with stop=esc"),
    ],
)
def test_pruning_settings_are_checked(kwargs, message):
    with pytest.raises(SettingError) as info:
        SearchConfig(strategy="best_of_n", n=4, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(SettingError, match="prune_steps=1 is invalid; accepted: only with str"):
        SearchConfig(strategy="majority", n=4, prune_steps=1)


@pytest.mark.parametrize(
    "args, message",
    [
        ("strategy=majority,n=16,stop=esc,wave=32", "wave=32 is invalid; accepted: an integer in"),
        ("strategy=majority,stop=adaptive,stop_threshold=1.5", "stop_threshold=1.5 is invalid"),
        ("strategy=best_of_n,prune_steps=2", "prune_steps=2 is invalid without a PRM"),
        ("prm=self,backend=openai,base_url=http://h/v1,confidence_topk=50", "confidence_topk=50"),
        ("strategy=majority,n=4,stop=adaptive,stop_prior=flat", "stop_prior=flat is invalid"),
    ],
)
def test_adaptive_settings_fail_in_one_line_before_models_load(args, message):
    """Item 7 of the issue: each through ``--model_args``, one line naming key, value and what
    is accepted (nothing is loaded by parsing)."""
    with pytest.raises(SettingError) as info:
        parse_model_args(f"pretrained=org/policy,{args}")
    text = str(info.value)
    assert text.startswith("model_args ") and message in text and "accepted" in text
    assert "\n" not in text
