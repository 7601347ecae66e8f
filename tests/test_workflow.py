"""Workflow: recipes, run planning, accuracy@n estimates on a hand-computed trace fixture, reports,
compute-optimal fitting, figures, and the one-line CLI errors (no models, no lm-eval runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import FakeAnswerSpec

from tts_eval.cli import main as cli_main
from tts_eval.search import load_table
from tts_eval.workflow.estimate import EstimateSettings, bootstrap_ci, subsets
from tts_eval.workflow.fit import fit_table, quantile_edges, run_settings_of
from tts_eval.workflow.plan import RunSpec, plan_runs
from tts_eval.workflow.plot import parse_ref, plot_report
from tts_eval.workflow.recipe import load_sweep_recipe, parse_sweep_recipe
from tts_eval.workflow.report import build_report, estimate_results, to_markdown
from tts_eval.workflow.results import MANIFEST, RUNS_DIR, load_results, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SPEC = FakeAnswerSpec()


def is_correct(answer: str, gold: str) -> bool:
    return SPEC.equivalent(answer, gold)


# --------------------------------------------------------------------------- recipes and plans

BASE = {
    "model_args": {"pretrained": "org/policy", "prm": "org/prm"},
    "sweep": {"strategies": ["majority", "best_of_n", "beam_search", "dvts"], "budgets": [4, 16]},
}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_recipes_load_as_sweeps_and_as_config(path):
    from tts_eval.model_args import parse_model_args

    recipe = load_sweep_recipe(path)
    assert recipe.sweep.task == "math500"
    assert {"majority", "best_of_n", "beam_search", "dvts"} <= set(recipe.sweep.strategies)
    assert max(recipe.sweep.budgets) == 256
    single = parse_model_args(f"config={path},n=16")  # explicit keys override the file's
    assert single.search.n == 16 and single.prm is not None
    assert single.engine.pretrained == recipe.model_args["pretrained"]


def test_shipped_recipes_cover_the_published_setups():
    pairs = {
        (load_sweep_recipe(p).model_args["pretrained"], load_sweep_recipe(p).model_args["prm"])
        for p in CONFIGS
    }
    assert ("meta-llama/Llama-3.2-1B-Instruct", "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data") in pairs
    assert ("meta-llama/Llama-3.2-3B-Instruct", "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data") in pairs
    assert ("Qwen/Qwen2.5-1.5B-Instruct", "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B") in pairs
    assert any(prm == "Qwen/Qwen2.5-Math-PRM-7B" for _, prm in pairs)


def _with(section: str, **changes):
    data = json.loads(json.dumps(BASE))
    data[section].update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**BASE, "extra": 1}, "unknown top-level key(s) extra"),
        (_with("sweep", budget=[4]), "unknown sweep key(s) budget"),
        (_with("sweep", strategies=["greedy"]), "unknown strategy 'greedy'"),
        (_with("sweep", budgets=[3]), "powers of two"),
        (_with("sweep", budgets=[16, 4]), "strictly increasing"),
        (_with("sweep", limit=0), "sweep.limit"),
        (
            _with("model_args", temperature="hot"),
            "model_args temperature=hot is invalid; accepted: a number",
        ),
        (_with("model_args", colour="red"), "unknown model_args key 'colour'"),
        (_with("model_args", trace_path="x.jsonl"), "trace_path is managed by the sweep"),
        (_with("model_args", beam_width=32), "no budget beam_search can run"),
        ({"model_args": {"pretrained": "org/p"}}, "needs a sweep: mapping"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_recipe_errors_are_one_line_naming_the_key(data, message):
    with pytest.raises(ValueError) as info:
        parse_sweep_recipe(data, "r.yaml")
    text = str(info.value)
    assert message in text and "\n" not in text and "r.yaml" in text


def test_plan_runs_exchangeable_once_beam_search_per_budget():
    recipe = parse_sweep_recipe(_with("sweep", budgets=[1, 2, 4, 8]))
    assert plan_runs(recipe) == [
        RunSpec("best_of_n", 8),
        RunSpec("dvts", 8),
        RunSpec("beam_search", 4),
        RunSpec("beam_search", 8),
    ]
    only_majority = parse_sweep_recipe(_with("sweep", strategies=["majority"]))
    assert plan_runs(only_majority) == [RunSpec("majority", 16)]


def test_plan_runs_particle_strategies_once_per_budget():
    data = _with("sweep", strategies=["beam_search", "particle_filtering", "particle_gibbs"])
    data["sweep"]["budgets"] = [2, 4, 8]
    data["model_args"].update(pg_iterations=2, pf_temperature=0.5, beam_width=2)
    recipe = parse_sweep_recipe(data)
    assert plan_runs(recipe) == [
        RunSpec("beam_search", 2),
        RunSpec("beam_search", 4),
        RunSpec("beam_search", 8),
        RunSpec("particle_filtering", 2),
        RunSpec("particle_filtering", 4),
        RunSpec("particle_filtering", 8),
        RunSpec("particle_gibbs", 4),  # n=2 would leave 1 particle per sweep, all reference
        RunSpec("particle_gibbs", 8),
    ]
    # keys of the particle strategies reach their runs only
    assert "pf_temperature" not in recipe.run_model_args("beam_search", 4)
    assert recipe.run_model_args("particle_filtering", 4)["pf_temperature"] == 0.5
    assert "pg_iterations" not in recipe.run_model_args("particle_filtering", 4)
    assert recipe.run_model_args("particle_gibbs", 4)["pg_iterations"] == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"model_args": {"pf_temperature": 0.5}},
            "model_args pf_temperature is read only by strategy=particle_filtering or "
            "particle_gibbs, which sweep.strategies does not list",
        ),
        (
            {"model_args": {"pg_iterations": 16}, "sweep": {"strategies": ["particle_gibbs"]}},
            "no budget particle_gibbs can run: it needs multiples of pg_iterations=16",
        ),
        (
            {"model_args": {"pf_temperature": 0}, "sweep": {"strategies": ["particle_filtering"]}},
            "strategy=particle_filtering: model_args pf_temperature=0.0 is invalid",
        ),
    ],
)
def test_particle_recipe_errors_are_one_line(changes, message):
    data = json.loads(json.dumps(BASE))
    for section, values in changes.items():
        data[section].update(values)
    with pytest.raises(ValueError) as info:
        parse_sweep_recipe(data, "r.yaml")
    text = str(info.value)
    assert message in text and "\n" not in text and "r.yaml" in text


# --------------------------------------------------------------------------- hand-computed fixture


def cand(answer, score, finished=True, group=0):
    return {
        "steps": [f"step \\boxed{{{answer}}}" if answer else "cut off"],
        "step_scores": [score] if score is not None else [],
        "finish_reason": "eos" if finished else "length",
        "finished": finished,
        "token_ids": [],
        "answer": answer,
        "group": group,
    }


def record(run_key, strategy, n, doc_id, doc, candidates, selected, policy_tokens, width=2):
    return {
        "version": 1,
        "task": "math500",
        "uid": f"math500/{doc_id}",
        "doc_id": doc_id,
        "run_key": run_key,
        "strategy": strategy,
        "selected": selected,
        "settings": {
            "strategy": strategy,
            "n": n,
            "beam_width": width,
            "agg": "last",
            "selection": "weighted",
        },
        "cost": {
            "policy_tokens": policy_tokens,
            "prompt_tokens": 0,
            "cached_prompt_tokens": 0,
            "prm_tokens": 2 * policy_tokens,
            "wall_time_s": 0.0,
        },
        "candidates": candidates,
        "doc": doc,
    }


DOC_A = {"unique_id": "a", "answer": "3", "level": 1, "subject": "Algebra"}
DOC_B = {"unique_id": "b", "answer": "1/2", "level": 2, "subject": "Geometry"}


def fixture_runs() -> dict[str, list[dict]]:
    bon = "best_of_n-n4-x"
    dvts = "dvts-n4-x"
    return {
        bon: [
            record(
                bon,
                "best_of_n",
                4,
                0,
                DOC_A,
                [cand("3", 0.9), cand("5", 0.2), cand("5", 0.3), cand("3", 0.35)],
                0,
                400,
            ),
            record(
                bon,
                "best_of_n",
                4,
                1,
                DOC_B,
                [cand("0.5", 0.2), cand("2", 0.8), cand("2", 0.7), cand(None, None, False)],
                1,
                200,
            ),
        ],
        dvts: [
            record(
                dvts,
                "dvts",
                4,
                0,
                DOC_A,
                [
                    cand("3", 0.9, group=0),
                    cand("5", 0.2, group=0),
                    cand("5", 0.3, group=1),
                    cand("5", 0.4, group=1),
                ],
                3,
                500,
            ),
            record(
                dvts,
                "dvts",
                4,
                1,
                DOC_B,
                [
                    cand("0.5", 0.6, group=0),
                    cand(None, None, False, group=0),
                    cand("2", 0.9, group=1),
                    cand("2", 0.1, group=1),
                ],
                2,
                500,
            ),
        ],
        "beam_search-n2-x": [
            record("beam_search-n2-x", "beam_search", 2, 0, DOC_A, [cand("5", 0.5)], 0, 1000),
            record("beam_search-n2-x", "beam_search", 2, 1, DOC_B, [cand("0.5", 0.5)], 0, 1000),
        ],
        "beam_search-n4-x": [
            record("beam_search-n4-x", "beam_search", 4, 0, DOC_A, [cand("3", 0.5)], 0, 1000),
            record("beam_search-n4-x", "beam_search", 4, 1, DOC_B, [cand("7", 0.5)], 0, 1000),
        ],
    }


def write_results(folder: Path, runs: dict[str, list[dict]], n: int) -> Path:
    """A version-1 results folder holding ``runs`` (run key -> trace records)."""
    for key, records in runs.items():
        path = folder / RUNS_DIR / f"{key}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    write_json_atomic(
        folder / MANIFEST,
        {
            "format": "tts-eval/sweep",
            "version": 1,
            "task": "math500",
            "pretrained": "org/policy",
            "prm": "org/prm",
            "runs": [{"key": k, "strategy": k.split("-")[0], "n": n} for k in runs],
        },
    )
    return folder


@pytest.fixture
def results_dir(tmp_path) -> Path:
    folder = tmp_path / "results"
    runs = fixture_runs()
    return write_results(folder, runs, n=0)


def rows_by(report):
    return {(r["curve"], r["n"]): r for r in report["rows"]}


# (curve, n) -> (overall accuracy, level "1" accuracy, level "2" accuracy), computed by hand in
# the comments of this file's fixture: all C(4, n) subsets are enumerated (exact estimates).
EXPECTED = {
    ("majority", 1): (0.375, 0.5, 0.25),
    ("majority", 2): (0.5, 0.5, 0.5),
    ("majority", 4): (0.5, 1.0, 0.0),
    ("best_of_n", 1): (0.375, 0.5, 0.25),
    ("best_of_n", 2): (0.5, 5 / 6, 1 / 6),
    ("best_of_n", 4): (0.5, 1.0, 0.0),
    ("pass@n", 1): (0.375, 0.5, 0.25),
    ("pass@n", 2): (2 / 3, 5 / 6, 0.5),
    ("pass@n", 4): (1.0, 1.0, 1.0),
    ("dvts", 2): (0.5, 0.5, 0.5),
    ("dvts", 4): (0.0, 0.0, 0.0),
    ("beam_search", 2): (0.5, 0.0, 1.0),
    ("beam_search", 4): (0.5, 1.0, 0.0),
}


def test_report_matches_hand_computed_accuracies(results_dir):
    report = build_report(load_results(results_dir), SPEC, is_correct, bootstrap_iters=500)
    rows = rows_by(report)
    assert set(rows) == set(EXPECTED)
    for key, (overall, level1, level2) in EXPECTED.items():
        row = rows[key]
        assert row["accuracy"] == pytest.approx(overall), key
        assert row["by_level"]["1"]["accuracy"] == pytest.approx(level1), key
        assert row["by_level"]["2"]["accuracy"] == pytest.approx(level2), key
        assert row["ci_low"] - 1e-12 <= row["accuracy"] <= row["ci_high"] + 1e-12
        assert row["problems"] == 2
    assert rows[("pass@n", 4)]["ci_low"] == rows[("pass@n", 4)]["ci_high"] == 1.0
    assert rows[("best_of_n", 2)]["by_subject"]["Geometry"]["accuracy"] == pytest.approx(1 / 6)
    # tokens of n exchangeable samples: the N=4 run's tokens scaled by n/4; (400 + 200) / 2 = 300
    assert rows[("majority", 1)]["policy_tokens"] == pytest.approx(75)
    assert rows[("best_of_n", 4)]["policy_tokens"] == pytest.approx(300)
    assert rows[("best_of_n", 4)]["prm_tokens"] == pytest.approx(600)
    assert rows[("beam_search", 4)]["policy_tokens"] == pytest.approx(1000)
    text = to_markdown(report)
    assert "| best_of_n | 2 | 50.0 |" in text and "## Accuracy by level" in text


def test_fit_compute_optimal_table_and_fitted_curve(results_dir, tmp_path):
    results = load_results(results_dir)
    estimates = estimate_results(results, SPEC, is_correct)
    # difficulty = mean aggregated score, unfinished counting 0: A 0.4375 (easier), B 0.425
    assert estimates.difficulty["math500/0"] == pytest.approx(0.4375)
    assert estimates.difficulty["math500/1"] == pytest.approx(0.425)
    table = fit_table(estimates, run_settings_of(results), probe_n=4, num_bins=2)
    cells = {(e["bin"], e["budget"]): e for e in table["entries"]}
    assert len(table["bin_edges"]) == 1 and 0.425 < table["bin_edges"][0] <= 0.4375
    assert cells[(1, 2)]["strategy"] == "best_of_n"  # A: 5/6 beats majority/dvts 1/2, beam 0
    assert cells[(1, 2)]["selection"] == "weighted"
    # what beam search reads of the swept run: its options and the shared selection and agg
    assert cells[(2, 2)] == {
        "bin": 2,
        "budget": 2,
        "strategy": "beam_search",
        "beam_width": 2,
        "lookahead": 0,
        "selection": "weighted",
        "agg": "last",
    }
    assert cells[(1, 4)]["strategy"] == "majority"  # tie at 1.0: fewer tokens, then order
    assert sorted({b for _, b in cells}) == [1, 2, 4]
    out = tmp_path / "table.json"
    out.write_text(json.dumps(table))
    loaded = load_table(out)  # the exact schema strategy=compute_optimal reads
    assert loaded.route(2, 2).strategy == "beam_search"
    report = build_report(results, SPEC, is_correct, table=out, bootstrap_iters=100)
    fitted = rows_by(report)[("compute_optimal (fitted)", 2)]
    assert fitted["accuracy"] == pytest.approx((5 / 6 + 1.0) / 2)


def test_fit_needs_best_of_n_run(results_dir):
    results = load_results(results_dir)
    runs = {k: v for k, v in results.runs.items() if not k.startswith("best_of_n")}
    partial = type(results)(results.task, runs, source=results.source)
    with pytest.raises(ValueError, match="needs a best_of_n run"):
        fit_table(estimate_results(partial, SPEC, is_correct), run_settings_of(partial))


@pytest.mark.parametrize(
    ("scores", "bins", "edges"),
    [([0.1, 0.2, 0.3, 0.4, 0.5], 2, [0.3]), ([0.5] * 4, 5, [0.5]), ([0.0, 0.0, 1.0], 3, [0.3333])],
)
def test_quantile_edges(scores, bins, edges):
    assert quantile_edges(scores, bins) == edges


def test_subsets_exact_when_few_random_otherwise():
    settings = EstimateSettings(max_exact=10, draws=7, seed=1)
    assert subsets(4, 2, "k", settings) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    drawn = subsets(16, 8, "k", settings)
    assert len(drawn) == 7 and all(len(set(s)) == 8 for s in drawn)
    assert drawn == subsets(16, 8, "k", settings)  # fixed seed
    assert drawn != [tuple(range(8))] * 7  # random subsets, not the first n


def test_bootstrap_ci_brackets_the_mean_and_collapses_when_constant():
    low, high = bootstrap_ci([0, 1] * 50, iters=1000)
    assert low < 0.5 < high and high - low < 0.3
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)


# --------------------------------------------------------------------------- figures


def test_plot_writes_non_empty_pngs(results_dir, tmp_path):
    report = build_report(load_results(results_dir), SPEC, is_correct, bootstrap_iters=100)
    paths = plot_report(report, tmp_path / "fig", [parse_ref("Llama-3.1-8B CoT=49.8")])
    assert [p.name for p in paths] == [
        "accuracy_vs_budget.png",
        "accuracy_vs_tokens.png",
        "accuracy_by_level.png",
    ]
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


@pytest.mark.parametrize("text", ["no-equals", "label=abc", "=40", "x=140"])
def test_bad_reference_lines_are_rejected(text):
    with pytest.raises(ValueError, match="--ref"):
        parse_ref(text)


# --------------------------------------------------------------------------- CLI, errors


def test_cli_plot_and_fit_from_results(results_dir, capsys):
    assert cli_main(["plot", str(results_dir), "--ref", "Big=40", "--bootstrap", "50"]) == 0
    assert (results_dir / "figures" / "accuracy_vs_budget.png").stat().st_size > 0
    # The CLI grades with tts_eval.grader; "1/2" vs "0.5" etc. are equivalent there too.
    assert cli_main(["fit-compute-optimal", str(results_dir), "--bins", "2"]) == 0
    assert load_table(results_dir / "compute_optimal_table.json").budgets == (1, 2, 4)
    assert cli_main(["report", str(results_dir), "--bootstrap", "50"]) == 0
    report = json.loads((results_dir / "report.json").read_text())
    assert any(r["curve"] == "compute_optimal (fitted)" for r in report["rows"])
    assert "| majority | 4 |" in (results_dir / "report.md").read_text()


def _one_line_error(argv, capsys) -> str:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_cli_errors_are_one_line(results_dir, tmp_path, capsys):
    assert "no such file" in _one_line_error(["sweep", str(tmp_path / "missing.yaml")], capsys)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_args: [unclosed\n")
    assert "not valid YAML" in _one_line_error(["sweep", str(bad)], capsys)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(json.dumps(_with("sweep", budgets=[4], colour="red")))
    assert "unknown sweep key(s) colour" in _one_line_error(["sweep", str(unknown)], capsys)
    err = _one_line_error(["report", str(results_dir), "--task", "gsm8k"], capsys)
    assert "are for task 'math500', not 'gsm8k'" in err
    assert "--ref" in _one_line_error(["plot", str(results_dir), "--ref", "oops"], capsys)
    assert "no sweep.json" in _one_line_error(["report", str(tmp_path)], capsys)


def test_trace_file_mixing_tasks_is_refused(tmp_path):
    records = fixture_runs()["beam_search-n4-x"]
    records[1] = {**records[1], "task": "gsm8k"}
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(ValueError, match="mixes tasks gsm8k, math500"):
        load_results(path)


def test_report_reads_a_plain_trace_file(tmp_path):
    records = [r for rs in fixture_runs().values() for r in rs]
    for r in records:
        r.pop("run_key")
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = rows_by(build_report(load_results(path), SPEC, is_correct, bootstrap_iters=10))
    assert rows[("best_of_n", 2)]["accuracy"] == pytest.approx(0.5)
    assert rows[("beam_search", 2)]["accuracy"] == pytest.approx(0.5)


def test_per_problem_settings_do_not_split_a_plain_trace_file_into_runs(tmp_path):
    records = [r for rs in fixture_runs().values() for r in rs]
    for i, r in enumerate(records):
        r.pop("run_key")
        # per-problem outcomes a search or a Ray worker adds to a result's settings
        r["settings"] = {**r["settings"], "pruned": i, "worker": {"rank": i % 2}}
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert len(load_results(path).runs) == len(fixture_runs())


def test_report_shows_per_worker_throughput_of_distributed_runs(tmp_path):
    records = fixture_runs()["beam_search-n4-x"]
    for i, r in enumerate(records):
        r["settings"] = {
            **r["settings"],
            "worker": {"rank": i % 2, "node": "n0", "chunk": i, "chunk_busy_s": 2.0},
        }
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = build_report(load_results(path), SPEC, is_correct, bootstrap_iters=10)
    (rows,) = report["workers"].values()
    assert [(w["worker"], w["problems"], w["busy_s"]) for w in rows] == [
        (0, (len(records) + 1) // 2, 2.0 * ((len(records) + 1) // 2)),
        (1, len(records) // 2, 2.0 * (len(records) // 2)),
    ]
    assert "## Throughput per worker" in to_markdown(report)


def test_report_of_single_worker_runs_has_no_worker_table(results_dir):
    report = build_report(load_results(results_dir), SPEC, is_correct, bootstrap_iters=10)
    assert report["workers"] == {}
    assert "Throughput per worker" not in to_markdown(report)


# --------------------------------------------------------------------------- token attribution


def test_prm_free_curves_of_a_best_of_n_run_charge_no_prm_tokens(results_dir):
    rows = rows_by(build_report(load_results(results_dir), SPEC, is_correct, bootstrap_iters=10))
    for n in (1, 2, 4):
        # majority and pass@n vote the sampled solutions without the PRM
        assert rows[("majority", n)]["prm_tokens"] == 0, n
        assert rows[("pass@n", n)]["prm_tokens"] == 0, n
        assert rows[("majority", n)]["policy_tokens"] == pytest.approx(300 * n / 4), n
        assert rows[("majority", n)]["run"] == "best_of_n-n4-x"
        # best_of_n keeps the PRM tokens of the run it is read off (2x policy tokens here)
        assert rows[("best_of_n", n)]["prm_tokens"] == pytest.approx(600 * n / 4), n
    assert rows[("dvts", 2)]["prm_tokens"] == pytest.approx(1000 * 2 / 4)
    assert "| majority | 4 | 50.0 | [0.0, 100.0] | 2 | 300 | 0 |" in to_markdown(
        build_report(load_results(results_dir), SPEC, is_correct, bootstrap_iters=10)
    )


# --------------------------------------------------------------------------- settings groups


def _two_temperatures(results_dir: Path) -> Path:
    """The fixture folder plus a best_of_n run of the same documents at temperature 0.5."""
    key = "best_of_n-n4-t05"
    records = [
        {**r, "run_key": key, "settings": {**r["settings"], "temperature": 0.5}}
        for r in fixture_runs()["best_of_n-n4-x"]
    ]
    records[0]["candidates"] = [cand("5", 0.9)] * 4  # wrong at 0.5 for document A
    (results_dir / RUNS_DIR / f"{key}.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records)
    )
    manifest = json.loads((results_dir / MANIFEST).read_text())
    manifest["runs"].append({"key": key, "strategy": "best_of_n", "n": 4})
    write_json_atomic(results_dir / MANIFEST, manifest)
    return results_dir


def test_runs_of_other_search_settings_are_reported_apart_and_labelled(results_dir):
    results = load_results(_two_temperatures(results_dir))
    report = build_report(results, SPEC, is_correct, bootstrap_iters=10)
    labels = [g["label"] for g in report["settings_groups"]]
    assert labels == ["temperature=0.8", "temperature=0.5"]
    rows = {(r["settings"], r["curve"], r["n"]): r for r in report["rows"]}
    old = rows[("temperature=0.8", "best_of_n", 4)]
    new = rows[("temperature=0.5", "best_of_n", 4)]
    assert (old["accuracy"], new["accuracy"]) == (0.5, 0.0)
    assert (old["run"], new["run"]) == ("best_of_n-n4-x", "best_of_n-n4-t05")
    assert ("temperature=0.5", "majority", 1) in rows  # every curve of the run, per group
    assert ("temperature=0.5", "dvts", 4) not in rows  # dvts ran at 0.8 only
    assert old["settings_digest"] != new["settings_digest"]
    text = to_markdown(report)
    assert "| best_of_n [temperature=0.5] | 4 | 0.0 |" in text
    assert "| best_of_n [temperature=0.8] | 4 | 50.0 |" in text
    assert "runs of 2 search settings" in text
    paths = plot_report(report, results_dir / "fig")
    assert all(p.stat().st_size > 0 for p in paths)


def test_estimates_for_fitting_take_one_settings_group(results_dir):
    results = load_results(_two_temperatures(results_dir))
    with pytest.raises(ValueError) as info:
        estimate_results(results, SPEC, is_correct)
    text = str(info.value)
    assert "\n" not in text and "hold runs of 2 search settings" in text
    assert "temperature=0.8" in text and "temperature=0.5" in text
    report = build_report(results, SPEC, is_correct, bootstrap_iters=10)
    digest = report["settings_groups"][1]["digest"]
    estimates = estimate_results(results, SPEC, is_correct, group=digest[:4])
    assert {p.run_key for p in estimates.points.values()} == {"best_of_n-n4-t05"}
    with pytest.raises(ValueError, match="settings 'zz' matches no settings group; accepted: "):
        estimate_results(results, SPEC, is_correct, group="zz")


def test_one_settings_group_has_no_labels(results_dir):
    report = build_report(load_results(results_dir), SPEC, is_correct, bootstrap_iters=10)
    assert {r["settings"] for r in report["rows"]} == {""}
    assert len(report["settings_groups"]) == 1
    assert "search settings" not in to_markdown(report)


def test_manifest_of_a_newer_version_is_refused(results_dir):
    manifest = json.loads((results_dir / MANIFEST).read_text())
    write_json_atomic(results_dir / MANIFEST, {**manifest, "version": 99})
    with pytest.raises(ValueError, match=r"sweep.json has version 99; this tts-eval reads"):
        load_results(results_dir)


# --------------------------------------------------------------------------- diagnostics


def test_report_counts_silent_degradations_per_run(tmp_path):
    delimited = {
        **cand("3", 0.9),
        "steps": ["first step\n\n", "then \\boxed{3}"],
        "step_scores": [0.5, 0.9],
    }
    runs = {
        "best_of_n-n2-d": [
            record("best_of_n-n2-d", "best_of_n", 2, 0, DOC_A, [delimited, delimited], 0, 10),
            record(
                "best_of_n-n2-d",
                "best_of_n",
                2,
                1,
                DOC_B,
                [cand(None, None, False), cand(None, None, False)],
                None,
                10,
            ),
        ],
        "beam_search-n2-d": [
            record("beam_search-n2-d", "beam_search", 2, 0, DOC_A, [delimited], 0, 10),
            record("beam_search-n2-d", "beam_search", 2, 1, DOC_B, [cand("7", 0.5)], 0, 10),
        ],
    }
    # version 2 records carry their diagnostics; version 1 ones (the others) are recomputed
    runs["beam_search-n2-d"][1]["version"] = 2
    runs["beam_search-n2-d"][1]["settings"]["diagnostics"] = {
        "steps_without_delimiter": 1,
        "no_finished_candidate": False,
        "empty_response": False,
    }
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for rs in runs.values() for r in rs))
    report = build_report(load_results(path), SPEC, is_correct, bootstrap_iters=10)
    assert report["diagnostics"]["best_of_n-n2-d"] == {
        "problems": 2,
        "undelimited_problems": 1,  # document B: two cut-off candidates without a delimiter
        "steps_without_delimiter": 2,
        "no_finished_candidate": 1,
        "empty_response": 1,
    }
    assert report["diagnostics"]["beam_search-n2-d"] == {
        "problems": 2,
        "undelimited_problems": 1,
        "steps_without_delimiter": 1,
        "no_finished_candidate": 0,
        "empty_response": 0,
    }
    text = to_markdown(report)
    assert "## Diagnostics" in text
    assert "| best_of_n-n2-d | 2 | 1 | 2 | 1 | 1 |" in text


def _hopeless_results(folder: Path) -> Path:
    """A sweep where nothing is ever right and no best_of_n sample finishes (difficulty all 0)."""
    runs = {
        "best_of_n-n2-z": [
            record(
                "best_of_n-n2-z",
                "best_of_n",
                2,
                i,
                doc,
                [cand(None, None, False)] * 2,
                None,
                10,
            )
            for i, doc in enumerate([DOC_A, DOC_B])
        ],
        "beam_search-n2-z": [
            record("beam_search-n2-z", "beam_search", 2, i, doc, [cand("9", 0.5)], 0, 10)
            for i, doc in enumerate([DOC_A, DOC_B])
        ],
    }
    return write_results(folder, runs, n=2)


def test_degenerate_fit_warns_and_notes_it_beside_the_table(tmp_path, results_dir, caplog):
    from tts_eval.workflow.fit import write_table
    from tts_eval.workflow.results import table_notes_path

    caplog.set_level("WARNING")
    results = load_results(_hopeless_results(tmp_path / "hopeless"))
    estimates = estimate_results(results, SPEC, is_correct)
    table = fit_table(estimates, run_settings_of(results), probe_n=2, num_bins=5)
    assert table["bin_edges"] == [] and {e["bin"] for e in table["entries"]} == {1}
    assert len(table.notes) == 2
    assert "take 1 distinct value(s) (from 0 to 0): 1 bin(s) instead of 5" in table.notes[0]
    assert "strategy=compute_optimal skips its probe" in table.notes[0]
    assert table.notes[1].startswith("every strategy has accuracy 0 at n=1, 2:")
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [f"fit-compute-optimal: {note}" for note in table.notes] == [
        w for w in warned if w.startswith("fit-compute-optimal")
    ]
    out = tmp_path / "hopeless" / "compute_optimal_table.json"
    write_table(table, out)
    assert load_table(out).num_bins == 1  # the table itself is exactly the routing schema
    # ... and a compute_optimal search with it does not pay for a probe that cannot matter
    from fakes import FakePRM, ScriptedEngine, problem

    from tts_eval.search import SearchConfig, run_search

    engine = ScriptedEngine({"": ["\\boxed{1} [0.9]<eos>"]})
    config = SearchConfig(strategy="compute_optimal", n=2, compute_optimal_table=str(out))
    (searched,) = run_search(config, [problem("P")], engine, FakePRM(), SPEC)
    assert searched.settings["probe_skipped"] is True
    assert [r.params.n for call in engine.calls for r in call] == [2]
    notes = json.loads(table_notes_path(out).read_text())
    assert notes == {"table": str(out), "notes": list(table.notes)}
    report = build_report(results, SPEC, is_correct, bootstrap_iters=10)
    assert report["compute_optimal_table_notes"] == list(table.notes)
    assert "Notes of the fitted table" in to_markdown(report)
    # a fit without notes removes the stale notes file
    healthy = load_results(results_dir)
    estimates = estimate_results(healthy, SPEC, is_correct)
    write_table(fit_table(estimates, run_settings_of(healthy), num_bins=2), out)
    assert not table_notes_path(out).exists()


def test_healthy_fit_has_no_notes(results_dir, caplog):
    caplog.set_level("WARNING")
    results = load_results(results_dir)
    table = fit_table(
        estimate_results(results, SPEC, is_correct), run_settings_of(results), num_bins=2
    )
    assert table.notes == ()
    assert not [r for r in caplog.records if r.getMessage().startswith("fit-compute-optimal")]


def test_fit_cli_takes_the_settings_group_to_fit(results_dir, tmp_path, capsys):
    from tts_eval.workflow.cli import fit_main

    folder = _two_temperatures(results_dir)
    assert fit_main([str(folder)]) != 0
    assert "--settings DIGEST" in capsys.readouterr().err
    digest = build_report(load_results(folder), SPEC, is_correct, bootstrap_iters=10)[
        "settings_groups"
    ][1]["digest"]
    out = tmp_path / "table.json"
    assert fit_main([str(folder), "--settings", digest[:6], "--out", str(out)]) == 0
    assert json.loads(out.read_text())["entries"]
