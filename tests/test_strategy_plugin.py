"""A strategy is one module: a strategy defined and registered in this file alone ("first sample":
``n`` samples in one request, the first finished one with an answer is selected, skipping
``first_skip`` of them) works everywhere tts-eval takes a strategy, without touching another file:
``--model_args`` (its option checked and refused with other strategies), ``lm_eval --model tts``
(lm-eval's own command line, in this process), a compute-optimal routing table, a sweep (planned
from its spec), the report (its curve named by its option) and ``tts-eval compare``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass

import pytest
from fakes import FakeAnswerSpec, FakePRM, RandomEngine
from test_workflow_sweep import PROBLEMS, write_inputs

import tts_eval.runtime
from tts_eval import plugin
from tts_eval.model_args import parse_model_args
from tts_eval.params import ParamCount
from tts_eval.runtime.local import LocalSearcher
from tts_eval.search import (
    SearchConfig,
    StrategyOptions,
    StrategySpec,
    parse_table,
    register_strategy,
    strategy_names,
    unregister_strategy,
)
from tts_eval.search.majority import SamplingWork
from tts_eval.settings import check_int, invalid
from tts_eval.types import Cost, SearchResult
from tts_eval.workflow.compare import build_leaderboard, load_systems
from tts_eval.workflow.recipe import load_sweep_recipe
from tts_eval.workflow.report import build_report
from tts_eval.workflow.results import load_results
from tts_eval.workflow.sweep import run_sweep

NAME = "first_sample"


@dataclass(frozen=True)
class FirstOptions(StrategyOptions):
    first_skip: int = 0

    def __post_init__(self) -> None:
        check_int("first_skip", self.first_skip, 0)

    def check(self, config: SearchConfig) -> None:
        if self.first_skip >= config.n:
            raise invalid("first_skip", self.first_skip, f"an integer below n={config.n}")


class FirstSampleWork(SamplingWork):
    def __init__(self, problem, config, answers, grouper) -> None:
        super().__init__(
            problem, config, answers, grouper, strategy=NAME, use_prm=False, selection="majority"
        )

    def result(self, cost: Cost) -> SearchResult:
        result = super().result(cost)
        skip = self.config.options.first_skip
        eligible = [
            i
            for i, c in enumerate(result.candidates)
            if i >= skip and c.finished and c.answer is not None
        ]
        return dataclasses.replace(result, selected=eligible[0] if eligible else None)


SPEC = StrategySpec(
    name=NAME,
    summary="n samples, the first finished one",
    make_work=FirstSampleWork,
    needs_prm=False,
    reads=(),
    options=FirstOptions,
    undelimited_effect=None,
    one_request=True,
)


@pytest.fixture
def first_sample():
    register_strategy(SPEC)
    yield SPEC
    unregister_strategy(NAME)


@pytest.fixture
def fake_models(monkeypatch, tmp_path):
    """Fake policy and PRM behind the runtime; the sweep tests' local math500 copy, offline."""
    monkeypatch.setenv("TTS_EVAL_MATH500", str(tmp_path / "math500.jsonl"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    engine = RandomEngine()
    monkeypatch.setattr(
        tts_eval.runtime,
        "open_searcher",
        lambda config: LocalSearcher(engine, FakePRM(), FakeAnswerSpec()),
    )
    return engine


def test_its_settings_are_model_args_keys(first_sample):
    assert strategy_names()[-1] == NAME
    config = parse_model_args("pretrained=org/p,strategy=first_sample,n=4,first_skip=1")
    assert config.search.options == FirstOptions(first_skip=1)
    assert config.search.settings()["first_skip"] == 1
    with pytest.raises(ValueError, match=r"^model_args first_skip=4 is invalid; accepted: an int"):
        parse_model_args("pretrained=org/p,strategy=first_sample,n=4,first_skip=4")
    with pytest.raises(
        ValueError,
        match=r"^model_args first_skip=0 is invalid; accepted: only with "
        r"strategy=first_sample, not strategy=best_of_n$",
    ):
        parse_model_args("pretrained=org/p,prm=org/q,strategy=best_of_n,first_skip=0")
    # a routing table may send problems to it
    table = parse_table(
        {
            "format": "tts-eval/compute-optimal-table",
            "version": 1,
            "probe_n": 2,
            "bin_edges": [0.5],
            "entries": [
                {"bin": 1, "budget": 4, "strategy": NAME, "first_skip": 1},
                {"bin": 2, "budget": 4, "strategy": "best_of_n"},
            ],
        }
    )
    assert table.route(1, 4).config_for(SearchConfig(strategy="compute_optimal", n=4)).options == (
        FirstOptions(first_skip=1)
    )


def test_through_lm_eval_command_line(first_sample, fake_models, tmp_path, monkeypatch):
    from lm_eval.__main__ import cli_evaluate

    write_inputs(tmp_path, tmp_path / "unused")  # writes the local math500 copy
    plugin.register()
    out = tmp_path / "out"
    args = "pretrained=fake/policy,strategy=first_sample,n=3,first_skip=1,max_tokens=200"
    monkeypatch.setattr(
        sys,
        "argv",
        ["lm_eval", "--model", "tts", "--model_args", args, "--tasks", "math500", "--limit", "2"]
        + ["--output_path", str(out), "--log_samples"],
    )
    cli_evaluate()
    (results_file,) = out.rglob("results_*.json")
    table = json.loads(results_file.read_text())["results"]["math500"]
    assert "exact_match,none" in table and table["tts_trace,none"] == 2
    (samples_file,) = out.rglob("samples_math500_*.jsonl")
    traces = [json.loads(line)["tts_trace"] for line in samples_file.read_text().splitlines()]
    for trace in traces:
        assert trace["strategy"] == NAME and trace["settings"]["first_skip"] == 1
        assert len(trace["candidates"]) == 3
        first = next(
            i
            for i, c in enumerate(trace["candidates"])
            if i >= 1 and c["finished"] and c["answer"] is not None
        )
        assert trace["selected"] == first
    # compare reads the lm-eval run as the strategy's system
    (system,) = load_systems(out, spec=FakeAnswerSpec(), is_correct=_equivalent)
    assert NAME in system.label


def _equivalent(answer: str, gold: str) -> bool:
    return FakeAnswerSpec().equivalent(answer, gold)


def test_sweep_report_and_compare(first_sample, fake_models, tmp_path):
    recipe = write_inputs(
        tmp_path, tmp_path / "out", chunk_size=5, strategies=(NAME, "best_of_n"), budgets=(2, 4)
    )
    data = json.loads(recipe.read_text())
    data["model_args"]["first_skip"] = 1
    recipe.write_text(json.dumps(data))
    summary = run_sweep(load_sweep_recipe(recipe), progress=False)
    planned = [(run.strategy, run.n) for run in summary.runs]
    assert planned == [("best_of_n", 4), (NAME, 2), (NAME, 4)]  # its spec's default plan
    assert all(run.computed == len(PROBLEMS) for run in summary.runs)

    report = build_report(load_results(tmp_path / "out"), FakeAnswerSpec(), _equivalent)
    rows = {(r["curve"], r["n"]) for r in report["rows"]}
    curve = f"{NAME} (first_skip=1)"  # its own option, not at its default, names its curve
    assert {(curve, 2), (curve, 4), ("best_of_n", 4), ("majority", 1)} <= rows
    assert len(report["settings_groups"]) == 1

    systems = load_systems(tmp_path / "out", spec=FakeAnswerSpec(), is_correct=_equivalent)
    labels = [s.label for s in systems]
    assert f"policy: {curve}" in labels  # it needs no PRM: a policy-only system
    params = {
        "fake/policy": ParamCount("fake/policy", 1e9, "given"),
        "fake/prm": ParamCount("fake/prm", 1e9, "given"),
    }
    board = build_leaderboard(systems, params, bootstrap_iters=20)
    ours = [r for r in board["rows"] if r["system"] == f"policy: {curve}"]
    assert sorted(r["n"] for r in ours) == [2, 4]
    assert all(r["prm_tokens"] == 0 for r in ours)
