"""``tts-eval sweep`` end to end through lm-eval's math500 task, on the fake engine and PRM.

A sweep is killed (SIGKILL, in a subprocess) part-way and resumed: nothing recorded is recomputed
or rewritten, nothing is lost, a torn last line is repaired, and the resumed results equal those
of an uninterrupted sweep (per-problem seeds come from doc ids, not from chunks or positions).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import FakeAnswerSpec, FakePRM, RandomEngine, decode

from tts_eval.runtime import Searcher
from tts_eval.runtime.local import LocalSearcher
from tts_eval.workflow.recipe import load_sweep_recipe
from tts_eval.workflow.report import build_report
from tts_eval.workflow.results import load_results
from tts_eval.workflow.sweep import run_sweep

HERE = Path(__file__).resolve().parent
PROBLEMS = [
    ("What is 1+2?", "3", 1, "Algebra"),
    ("Half of one?", "\\frac{1}{2}", 2, "Prealgebra"),
    ("What is 3+4?", "7", 3, "Algebra"),
    ("What is 2+2?", "4", 5, "Number Theory"),
    ("What is 9-2?", "7", 4, "Prealgebra"),
]


class CountingEngine(RandomEngine):
    """RandomEngine that remembers every prompt it generated for (and may sleep per call)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.prompts: list[str] = []

    def generate(self, requests):
        time.sleep(self.delay)
        self.prompts += [decode(r.prompt_ids) for r in requests]
        return super().generate(requests)


def fake_searcher_factory(engine):
    def factory(config) -> Searcher:
        return LocalSearcher(engine, FakePRM(), FakeAnswerSpec())

    return factory


TREES = {"beam_search", "dvts", "compute_optimal"}


def write_inputs(
    folder: Path,
    out: Path,
    chunk_size: int = 1,
    task: str = "math500",
    strategies: tuple[str, ...] = ("majority", "best_of_n", "beam_search", "dvts"),
    budgets: tuple[int, ...] = (2, 4),
    apply_chat_template: bool = True,
) -> Path:
    data = folder / "math500.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "problem": p,
                    "solution": a,
                    "answer": a,
                    "level": lv,
                    "subject": s,
                    "unique_id": f"test/{i}.json",
                }
            )
            + "\n"
            for i, (p, a, lv, s) in enumerate(PROBLEMS)
        )
    )
    recipe = folder / "recipe.yaml"
    recipe.write_text(
        json.dumps(
            {
                "model_args": {
                    "pretrained": "fake/policy",
                    "prm": "fake/prm",
                    # the tree strategies' option: a recipe may set it only when one is swept
                    **({"beam_width": 2} if set(strategies) & TREES else {}),
                    "max_tokens": 200,
                },
                "sweep": {
                    "task": task,
                    "strategies": list(strategies),
                    "budgets": list(budgets),
                    "output_dir": str(out),
                    "chunk_size": chunk_size,
                    "apply_chat_template": apply_chat_template,
                },
            }
        )
    )
    return recipe


def child(recipe: str, delay: str) -> None:
    """Subprocess entry: run the sweep on a slow fake engine until killed."""
    run_sweep(
        load_sweep_recipe(recipe),
        searcher_factory=fake_searcher_factory(CountingEngine(float(delay))),
        progress=False,
    )


def read_lines(folder: Path) -> dict[str, list[str]]:
    return {
        p.name: p.read_text().splitlines(keepends=True)
        for p in sorted((folder / "runs").glob("*.jsonl"))
    }


def count_records(folder: Path) -> int:
    return sum(len(v) for v in read_lines(folder).values()) if (folder / "runs").is_dir() else 0


def strip_timing(record: dict) -> dict:
    return {**record, "cost": {**record["cost"], "wall_time_s": 0}}


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("TTS_EVAL_MATH500", str(tmp_path / "math500.jsonl"))
    return tmp_path


def test_sweep_records_every_run_and_document(env):
    recipe = write_inputs(env, env / "out", chunk_size=2)
    engine = CountingEngine()
    summary = run_sweep(
        load_sweep_recipe(recipe), searcher_factory=fake_searcher_factory(engine), progress=False
    )
    assert [(r.strategy, r.n) for r in summary.runs] == [
        ("best_of_n", 4),
        ("dvts", 4),
        ("beam_search", 2),
        ("beam_search", 4),
    ]
    files = read_lines(env / "out")
    assert len(files) == 4
    for lines in files.values():
        records = [json.loads(line) for line in lines]
        assert sorted(r["doc_id"] for r in records) == list(range(len(PROBLEMS)))
        for r in records:
            assert r["uid"] == f"math500/{r['doc_id']}"  # true doc ids despite samples=
            assert r["doc"]["answer"] == PROBLEMS[r["doc_id"]][1]
            assert r["doc"]["level"] == PROBLEMS[r["doc_id"]][2]
            assert r["task"] == "math500" and r["run_key"]
            assert r["settings"]["n"] in (2, 4) and r["settings"]["seed"] == 0
    # a second run has nothing to do and calls no engine
    again = CountingEngine()
    summary = run_sweep(
        load_sweep_recipe(recipe), searcher_factory=fake_searcher_factory(again), progress=False
    )
    assert again.prompts == [] and all(r.computed == 0 for r in summary.runs)
    report = build_report(
        load_results(env / "out"),
        FakeAnswerSpec(),
        lambda a, g: FakeAnswerSpec().equivalent(a, g),
        bootstrap_iters=50,
    )
    curves = {(r["curve"], r["n"]) for r in report["rows"]}
    assert {("majority", 1), ("best_of_n", 4), ("dvts", 2), ("beam_search", 2)} <= curves
    assert report["problems"] == len(PROBLEMS)


@pytest.mark.slow
def test_killed_sweep_resumes_without_recomputing_or_losing(env):
    recipe = write_inputs(env, env / "out", chunk_size=1)
    proc = subprocess.Popen(
        [sys.executable, __file__, "child", str(recipe), "0.4"],
        cwd=HERE.parent,
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            if count_records(env / "out") >= 3:
                break
            if proc.poll() is not None:
                pytest.fail(f"sweep child exited early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        else:
            pytest.fail("the sweep child recorded nothing within 180 s")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = read_lines(env / "out")
    recorded = sum(len(v) for v in before.values())
    assert 3 <= recorded < 4 * len(PROBLEMS)  # killed part-way
    # a write torn by the kill: a partial last line must be cut off, not glued to the next record
    torn_file = env / "out" / "runs" / next(iter(before))
    with open(torn_file, "a") as f:
        f.write('{"version": 1, "uid": "math500/')

    engine = CountingEngine()
    summary = run_sweep(
        load_sweep_recipe(recipe), searcher_factory=fake_searcher_factory(engine), progress=False
    )
    after = read_lines(env / "out")
    for name, lines in before.items():
        assert after[name][: len(lines)] == lines  # nothing recorded was lost or rewritten
    done_before = {name: {json.loads(x)["doc_id"] for x in lines} for name, lines in before.items()}
    for lines in after.values():
        ids = [json.loads(x)["doc_id"] for x in lines]
        assert sorted(ids) == list(range(len(PROBLEMS)))  # complete, no duplicates
    assert sum(r.done_before for r in summary.runs) == recorded
    assert sum(r.computed for r in summary.runs) == 4 * len(PROBLEMS) - recorded
    # the resumed engine never saw a problem whose every run was already recorded
    finished_everywhere = set.intersection(*[done_before.get(name, set()) for name in after])
    for doc_id in finished_everywhere:
        assert not any(PROBLEMS[doc_id][0] in prompt for prompt in engine.prompts)

    # resumed results equal an uninterrupted sweep's
    (env / "clean").mkdir()
    clean = write_inputs(env / "clean", env / "clean_out", chunk_size=3)
    run_sweep(
        load_sweep_recipe(clean),
        searcher_factory=fake_searcher_factory(CountingEngine()),
        progress=False,
    )
    for name, lines in read_lines(env / "clean_out").items():
        want = {json.loads(x)["doc_id"]: strip_timing(json.loads(x)) for x in lines}
        got = {json.loads(x)["doc_id"]: strip_timing(json.loads(x)) for x in after[name]}
        assert got == want


def test_results_folder_of_another_task_is_refused(env):
    recipe = write_inputs(env, env / "out")
    manifest = {
        "format": "tts-eval/sweep",
        "version": 1,
        "task": "gsm8k",
        "pretrained": "fake/policy",
        "prm": "fake/prm",
        "runs": [],
    }
    (env / "out").mkdir()
    (env / "out" / "sweep.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="holds a sweep of task 'gsm8k', not 'math500'"):
        run_sweep(
            load_sweep_recipe(recipe),
            searcher_factory=fake_searcher_factory(CountingEngine()),
            progress=False,
        )


def sweep(recipe: Path, overrides=None, output_dir=None, engine=None):
    return run_sweep(
        load_sweep_recipe(recipe, overrides),
        output_dir=output_dir,
        searcher_factory=fake_searcher_factory(engine or CountingEngine()),
        progress=False,
    )


def equivalent(answer: str, gold: str) -> bool:
    return FakeAnswerSpec().equivalent(answer, gold)


def test_resweep_with_other_search_settings_keeps_runs_apart(env, caplog):
    recipe = write_inputs(
        env, env / "out", chunk_size=5, strategies=("majority", "best_of_n"), budgets=(2,)
    )
    (first,) = sweep(recipe).runs
    caplog.set_level("WARNING")
    (second,) = sweep(recipe, {"temperature": "0.5"}).runs
    assert second.key != first.key and second.computed == len(PROBLEMS)  # nothing reused
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(
        "already holds runs of other search settings (temperature=0.8); the runs of "
        "temperature=0.5 are recorded beside them" in w
        for w in warned
    ), warned
    manifest = json.loads((env / "out" / "sweep.json").read_text())
    assert manifest["version"] == 3
    assert manifest["model_args"]["temperature"] == "0.5"  # the latest sweep's
    entries = {e["key"]: e for e in manifest["runs"]}
    assert "temperature" not in entries[first.key]["model_args"]
    assert entries[second.key]["model_args"]["temperature"] == "0.5"
    assert (
        entries[first.key]["search"]["temperature"],
        entries[second.key]["search"]["temperature"],
    ) == (0.8, 0.5)
    assert entries[first.key]["settings_digest"] != entries[second.key]["settings_digest"]

    report = build_report(
        load_results(env / "out"), FakeAnswerSpec(), equivalent, bootstrap_iters=10
    )
    assert [g["label"] for g in report["settings_groups"]] == ["temperature=0.8", "temperature=0.5"]
    rows = {(r["settings"], r["curve"], r["n"]): r for r in report["rows"]}
    for label, key in (("temperature=0.8", first.key), ("temperature=0.5", second.key)):
        assert rows[(label, "best_of_n", 2)]["run"] == key
        assert rows[(label, "majority", 1)]["problems"] == len(PROBLEMS)
    # resuming either setting finds its own records
    assert sweep(recipe, {"temperature": "0.5"}).runs[0].computed == 0
    assert sweep(recipe).runs[0].computed == 0


REFUSED = [
    (
        "system_prompt",
        {"system_prompt": "Answer tersely."},
        "system_prompt=None",
        "'Answer tersely.'",
    ),
    ("prm", {"prm": "fake/other-prm"}, "prm='fake/prm'", "prm='fake/other-prm'"),
    ("prm_type", {"prm_type": "math_shepherd"}, "prm_type=None", "prm_type='math_shepherd'"),
    ("answer", {"answer": "number"}, "answer='math'", "answer='number'"),
    ("dtype", {"dtype": "float32"}, "dtype=", "dtype='float32'"),
    # settings the resume key of earlier versions left out: they change records too
    (
        "prm_step_separator",
        {"prm_step_separator": "\\n"},
        "prm_step_separator=None",
        "prm_step_separator='\\n'",
    ),
    ("max_model_len", {"max_model_len": "512"}, "max_model_len=None", "max_model_len=512"),
    ("backend", {"backend": "vllm"}, "backend='hf'", "backend='vllm'"),
]


@pytest.mark.parametrize(
    ("name", "overrides", "theirs", "mine"), REFUSED, ids=[c[0] for c in REFUSED]
)
def test_resweep_with_other_non_search_settings_is_refused(env, name, overrides, theirs, mine):
    recipe = write_inputs(env, env / "out", chunk_size=5, strategies=("majority",), budgets=(2,))
    sweep(recipe)
    manifest = (env / "out" / "sweep.json").read_text()
    engine = CountingEngine()
    with pytest.raises(ValueError) as info:
        sweep(recipe, overrides, engine=engine)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"results folder {env / 'out'} holds a sweep with {name}="), text
    assert theirs in text and mine in text
    assert f"use sweep.output_dir={env / 'out'}-" in text
    assert engine.prompts == [] and (env / "out" / "sweep.json").read_text() == manifest
    if name == "system_prompt":  # the folder it names takes the sweep
        suggested = text.split("use sweep.output_dir=")[1].split(" ")[0]
        (run,) = sweep(recipe, overrides, output_dir=suggested).runs
        assert run.computed == len(PROBLEMS)
        identity = json.loads((Path(suggested) / "sweep.json").read_text())["identity"]
        assert identity["system_prompt"] == "Answer tersely."
        assert sweep(recipe, overrides, output_dir=suggested).runs[0].computed == 0


@pytest.mark.parametrize(
    "placement",
    [
        {"batch_size": "4"},
        {"device": "cpu"},
        {"prm_device": "cpu", "prm_batch_tokens": "1024"},
        {"gpu_memory_utilization": "0.3"},
    ],
    ids=["batch_size", "device", "prm_device", "gpu_memory_utilization"],
)
def test_resweep_with_other_placement_reuses_every_record(env, placement):
    recipe = write_inputs(env, env / "out", chunk_size=5, strategies=("best_of_n",), budgets=(2,))
    (first,) = sweep(recipe).runs
    engine = CountingEngine()
    (again,) = sweep(recipe, placement, engine=engine).runs
    assert (again.key, again.computed, again.done_before) == (first.key, 0, len(PROBLEMS))
    assert engine.prompts == []


def test_resweep_against_another_server_address_reuses_every_record(env):
    recipe = write_inputs(env, env / "out", chunk_size=5, strategies=("majority",), budgets=(2,))
    server = {"backend": "openai", "base_url": "http://a.example:8000/v1", "model": "m"}
    (first,) = sweep(recipe, server).runs
    moved = {**server, "base_url": "https://b.example/v1", "max_concurrency": "8"}
    (again,) = sweep(recipe, moved, engine=CountingEngine()).runs
    assert (again.key, again.computed) == (first.key, 0)
    with pytest.raises(ValueError, match="holds a sweep with served_model='m', not"):
        sweep(recipe, {**server, "model": "other"})  # another served model is another policy


def _as_version_2(folder: Path) -> str:
    """Rewrite a results folder as tts-eval wrote it before result identities (manifest version 2,
    a run key that covered fewer settings); returns that old key."""
    manifest = json.loads((folder / "sweep.json").read_text())
    (entry,) = manifest["runs"]
    old = f"{entry['strategy']}-n{entry['n']}-0123456789"
    (folder / "runs" / f"{entry['key']}.jsonl").rename(folder / "runs" / f"{old}.jsonl")
    entry["key"] = old
    legacy = {k: manifest["identity"][k] for k in ("pretrained", "prm", "answer")}
    manifest.update(version=2, identity=legacy)
    (folder / "sweep.json").write_text(json.dumps(manifest))
    return old


def test_a_version_2_folder_is_resumed_under_current_keys(env):
    recipe = write_inputs(env, env / "out", chunk_size=5, strategies=("majority",), budgets=(2,))
    (first,) = sweep(recipe).runs
    old = _as_version_2(env / "out")
    (again,) = sweep(recipe).runs  # its recorded model_args say it is the same run: reused
    assert (again.key, again.computed) == (first.key, 0)
    assert not (env / "out" / "runs" / f"{old}.jsonl").exists()
    manifest = json.loads((env / "out" / "sweep.json").read_text())
    assert manifest["version"] == 3 and [e["key"] for e in manifest["runs"]] == [first.key]
    # a version 2 run swept under another max_model_len is never taken for this one
    old = _as_version_2(env / "out")
    manifest = json.loads((env / "out" / "sweep.json").read_text())
    manifest["runs"][0]["model_args"]["max_model_len"] = 256
    (env / "out" / "sweep.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="holds a sweep with max_model_len=256, not max_model_len"):
        sweep(recipe)


def test_resweep_without_the_chat_template_is_refused(env):
    write_inputs(env, env / "out", chunk_size=5, strategies=("majority",), budgets=(2,))
    sweep(env / "recipe.yaml")
    (env / "plain").mkdir()
    plain = write_inputs(
        env / "plain",
        env / "out",
        strategies=("majority",),
        budgets=(2,),
        apply_chat_template=False,
    )
    with pytest.raises(
        ValueError,
        match="holds a sweep with apply_chat_template=True, not apply_chat_template=False",
    ):
        sweep(plain)


def test_sweep_upgrades_a_version_1_manifest(env):
    recipe = write_inputs(env, env / "out", chunk_size=5, strategies=("majority",), budgets=(2,))
    legacy = {
        "format": "tts-eval/sweep",
        "version": 1,
        "task": "math500",
        "pretrained": "fake/policy",
        "prm": "fake/prm",
        "model_args": {"pretrained": "fake/policy"},
        "runs": [],
    }
    (env / "out").mkdir()
    (env / "out" / "sweep.json").write_text(json.dumps(legacy))
    (run,) = sweep(recipe).runs
    manifest = json.loads((env / "out" / "sweep.json").read_text())
    assert manifest["version"] == 3 and manifest["identity"]["system_prompt"] is None
    assert manifest["model_args"]["max_tokens"] == 200
    assert [e["key"] for e in manifest["runs"]] == [run.key]
    (env / "out" / "sweep.json").write_text(json.dumps({**legacy, "prm": "fake/old-prm"}))
    with pytest.raises(
        ValueError, match="holds a sweep with prm='fake/old-prm', not prm='fake/prm'"
    ):
        sweep(recipe)


@pytest.mark.slow
def test_sweep_report_plot_on_tiny_models(env, tiny_llama, tiny_prm, capsys):
    """Real loading (open_searcher: HF engine, rlhflow PRM, math grader) on 2 problems."""
    from tts_eval.cli import main as cli_main

    write_inputs(env, env / "out")
    recipe = env / "tiny.yaml"
    recipe.write_text(
        json.dumps(
            {
                "model_args": {
                    "pretrained": str(tiny_llama),
                    "prm": str(tiny_prm),
                    "beam_width": 2,
                    "max_tokens": 12,
                    "num_iterations": 2,
                    "device": "cpu",
                },
                "sweep": {
                    "task": "math500",
                    "strategies": ["majority", "best_of_n", "beam_search"],
                    "budgets": [2],
                    "limit": 2,
                    "output_dir": str(env / "tiny_out"),
                },
            }
        )
    )
    assert cli_main(["sweep", str(recipe), "--no-progress"]) == 0
    files = read_lines(env / "tiny_out")
    assert len(files) == 2 and all(len(lines) == 2 for lines in files.values())
    for lines in files.values():
        for line in lines:
            record = json.loads(line)
            assert record["cost"]["policy_tokens"] > 0 and record["candidates"]
    assert cli_main(["report", str(env / "tiny_out"), "--bootstrap", "50"]) == 0
    report = json.loads((env / "tiny_out" / "report.json").read_text())
    assert {(r["curve"], r["n"]) for r in report["rows"]} >= {
        ("majority", 1),
        ("majority", 2),
        ("best_of_n", 2),
        ("beam_search", 2),
    }
    assert report["policy"] == str(tiny_llama) and report["problems"] == 2
    assert cli_main(["plot", str(env / "tiny_out"), "--ref", "CoT=10"]) == 0
    pngs = sorted((env / "tiny_out" / "figures").glob("*.png"))
    assert len(pngs) == 3 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_sweep_report_plot_of_particle_strategies(env):
    """Particle runs sweep once per budget, share one settings group with beam search (their
    keys do not split it), and get report rows and figure lines like every strategy."""
    from tts_eval.workflow.plot import plot_report

    recipe = write_inputs(
        env,
        env / "out",
        chunk_size=5,
        strategies=("beam_search", "particle_filtering", "particle_gibbs"),
        budgets=(2, 4),
    )
    data = json.loads(recipe.read_text())
    data["model_args"].update(pg_iterations=2, resampling="systematic")
    recipe.write_text(json.dumps(data))
    summary = sweep(recipe)
    assert [(r.strategy, r.n) for r in summary.runs] == [
        ("beam_search", 2),
        ("beam_search", 4),
        ("particle_filtering", 2),
        ("particle_filtering", 4),
        ("particle_gibbs", 4),
    ]
    for name, lines in read_lines(env / "out").items():
        records = [json.loads(line) for line in lines]
        assert len(records) == len(PROBLEMS)
        if name.startswith("particle"):
            settings = records[0]["settings"]
            assert settings["resampling"] == "systematic" and settings["genealogy"]
            assert all(len(r["candidates"]) == settings["n"] for r in records)
        else:
            assert "resampling" not in records[0]["settings"]
    report = build_report(
        load_results(env / "out"), FakeAnswerSpec(), equivalent, bootstrap_iters=50
    )
    assert len(report["settings_groups"]) == 1
    rows = {(r["curve"], r["n"]): r for r in report["rows"]}
    pf, pg = (
        "particle_filtering (resampling=systematic)",
        "particle_gibbs (pg_iterations=2, resampling=systematic)",
    )  # their own settings name their curves
    assert {("beam_search", 2), ("beam_search", 4), (pf, 2), (pf, 4), (pg, 4)} == set(rows)
    assert rows[(pg, 4)]["problems"] == len(PROBLEMS)
    assert rows[(pf, 4)]["policy_tokens"] > rows[(pf, 2)]["policy_tokens"] > 0
    paths = plot_report(report, env / "figures")
    assert paths and all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "child":
    child(sys.argv[2], sys.argv[3])


def _tiny_recipe(env: Path, policy: Path, prm: Path, workers: int) -> Path:
    recipe = env / f"tiny-k{workers}.yaml"
    model_args = {
        "pretrained": str(policy),
        "prm": str(prm),
        "prm_type": "rlhflow",
        "beam_width": 2,
        "max_tokens": 12,
        "num_iterations": 2,
        "device": "cpu",
        "seed": 5,
        "data_parallel_size": workers,
    }
    sweep = {
        "task": "math500",
        "strategies": ["majority", "best_of_n", "beam_search"],
        "budgets": [2, 4],
        "limit": 3,
        "chunk_size": 2,
        "output_dir": str(env / f"out-k{workers}"),
    }
    recipe.write_text(json.dumps({"model_args": model_args, "sweep": sweep}))
    return recipe


def _comparable(record: dict) -> dict:
    """A record without what may differ between K=1 and K=2: wall time, the worker entry, and
    float32 noise in PRM scores (rounded; see tests/test_runtime.py)."""
    settings = {k: v for k, v in record["settings"].items() if k != "worker"}
    candidates = [
        {**c, "step_scores": [round(s, 5) for s in c["step_scores"]]} for c in record["candidates"]
    ]
    return {
        **strip_timing(record),
        "settings": settings,
        "candidates": candidates,
        "run_key": record.get("run_key"),
    }


@pytest.mark.slow
def test_sweep_on_two_ray_workers_loads_once_and_equals_one_worker(
    env, ray_cluster, tiny_llama, tiny_prm
):
    from tts_eval.runtime import open_searcher
    from tts_eval.runtime.local import models_loaded
    from tts_eval.runtime.ray import RaySearcher

    write_inputs(env, env / "unused")
    opened = []

    def counting_factory(config):
        opened.append(open_searcher(config))
        return opened[-1]

    records = {}
    for k in (1, 2):
        before = models_loaded()
        recipe = load_sweep_recipe(_tiny_recipe(env, tiny_llama, tiny_prm, k))
        summary = run_sweep(recipe, searcher_factory=counting_factory, progress=False)
        assert [(r.strategy, r.n, r.computed) for r in summary.runs] == [
            ("best_of_n", 4, 3),
            ("beam_search", 2, 3),
            ("beam_search", 4, 3),
        ]
        files = read_lines(env / f"out-k{k}")
        records[k] = {name: [json.loads(line) for line in lines] for name, lines in files.items()}
        if k == 1:  # one in-process load for the whole sweep (every strategy and budget)
            assert models_loaded() == before + 1
    assert len(opened) == 2, "each sweep opens its searcher once"
    ray_searcher = opened[1]
    assert isinstance(ray_searcher, RaySearcher)
    # One load per worker for the whole K=2 sweep: every record of every run was searched by
    # the two processes that loaded their models once at start-up.
    assert [info["loads"] for info in ray_searcher.infos] == [1, 1]
    started = {(info["rank"], info["pid"]) for info in ray_searcher.infos}
    seen = {
        (r["settings"]["worker"]["rank"], r["settings"]["worker"]["pid"])
        for lines in records[2].values()
        for r in lines
    }
    assert seen == started
    assert ray_searcher.workers == 0, "the sweep closes its searcher (the Ray actors) at the end"
    assert ray_cluster.is_initialized()
    assert sorted(records[1]) == sorted(records[2])
    for name in records[1]:
        one = [_comparable(r) for r in records[1][name]]
        two = [_comparable(r) for r in records[2][name]]
        assert one == two, name
        assert all(r["cost"]["policy_tokens"] > 0 for r in records[1][name])
