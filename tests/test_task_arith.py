"""The ``arith`` task: its seeded generator, its lm-eval task, its grading, and the real-model
benchmark that runs on it (``benchmarks/bench_real_model.py``, on 5 problems here)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
from lm_eval_cli import run_lm_eval

from tts_eval.grader import NumberAnswerSpec
from tts_eval.plugin import tasks_dir
from tts_eval.types import Candidate, Cost, FinishReason, SearchResult, TracedText

ROOT = Path(__file__).resolve().parents[1]


def hooks():
    spec = importlib.util.spec_from_file_location("arith_hooks", tasks_dir() / "arith" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generator_is_pinned_by_its_seed():
    rows = hooks().generate_problems()
    assert len(rows) == 100 and len({r["uid"] for r in rows}) == 100
    # The first problems of the default seed: a change here changes every published figure.
    assert [(r["question"], r["answer"]) for r in rows[:3]] == [
        ("Ben has 9 coins. Ben gets 2 more coins. How many coins does Ben have now?", "11"),
        ("Jon has 9 shells and gives 8 of them away. How many shells does Jon have left?", "1"),
        (
            "Dev has 2 apples, buys 5 more and then gives 2 to a friend. "
            "How many apples does Dev have now?",
            "5",
        ),
    ]
    assert hooks().generate_problems(100, 2026) == rows
    assert hooks().generate_problems(100, 7) != rows


def test_every_problem_states_its_numbers_and_the_answer_is_their_sum():
    rows = hooks().generate_problems(500, 11)
    assert {r["numbers"] for r in rows} == {2, 3}
    for row in rows:
        terms = [int(t) for t in re.findall(r"\d+", row["expression"])]
        assert len(terms) == row["numbers"] and all(1 <= t <= 9 for t in terms)
        assert int(row["answer"]) == eval(row["expression"]) >= 0  # noqa: S307 (digits, +, -)
        assert [int(t) for t in re.findall(r"\d+", row["question"])] == terms


def _task():
    from tts_eval import plugin

    plugin.register()
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=False).load(["arith"])["tasks"]["arith"]


def test_lm_eval_loads_the_task_with_its_prompt_and_target():
    task = _task()
    docs = list(task.test_docs())
    assert len(docs) == 100
    assert docs[0]["question"] == hooks().generate_problems()[0]["question"]
    text = task.doc_to_text(docs[0])
    assert text.startswith(docs[0]["question"]) and text.endswith('"The answer is N."')
    assert task.doc_to_target(docs[0]) == "11"


@pytest.mark.parametrize("task_name, count", [("arith", 100), ("arith_500", 500)])
def test_the_model_args_seed_does_not_reach_the_generator(task_name, count):
    """lm-eval hands its metadata (the run's model_args) to ``custom_dataset`` beside the task's
    dataset_kwargs: a run's ``seed=1`` must neither change the test problems nor collide."""
    from tts_eval import plugin

    plugin.register()
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_defaults=False, metadata={"seed": 1, "count": 3, "split": "x"})
    docs = list(manager.load([task_name])["tasks"][task_name].test_docs())
    assert len(docs) == count and docs[0]["uid"] == "arith/2026/0"


def _candidate(text: str, answer: str | None, score: float) -> Candidate:
    return Candidate(
        steps=(text,), step_scores=(score,), finish_reason=FinishReason.EOS, finished=True,
        answer=answer,
    )  # fmt: skip


def test_grading_is_by_number_for_plain_text_and_for_traces():
    module = hooks()
    doc = {"answer": "11"}
    assert module.process_results(doc, ["9 + 2 = 11.\n\nThe answer is 11."]) == {"exact_match": 1.0}
    assert module.process_results(doc, ["The answer is 12."])["exact_match"] == 0.0
    assert module.process_results(doc, ["no number"])["exact_match"] == 0.0
    # A trace: two candidates say 12, one says 11.0 (= 11 by value) with the best single score.
    candidates = (
        _candidate("The answer is 12.", "12", 0.5),
        _candidate("The answer is 12.", "12", 0.6),
        _candidate("The answer is 11.0", "11.0", 0.9),
    )
    trace = SearchResult("arith/2026/0", "best_of_n", candidates, selected=2, cost=Cost(30))
    metrics = module.process_results(doc, [TracedText("The answer is 11.0", trace)])
    assert metrics["exact_match"] == 1.0
    assert metrics["maj@n"] == 0.0 and metrics["pass@n"] == 1.0
    assert metrics["naive@n"] == 1.0 and metrics["weighted@n"] == 0.0  # 0.9 < 0.5 + 0.6
    assert metrics["policy_tokens"] == 30.0


@pytest.mark.slow
def test_lm_eval_tts_runs_the_task_with_number_answers(scripted_llama, tiny_prm, tmp_path):
    args = (
        f"pretrained={scripted_llama},backend=hf,device=cpu,prm={tiny_prm},prm_type=rlhflow,"
        "answer=number,strategy=best_of_n,n=3,max_tokens=24,seed=1"
    )
    out = tmp_path / "out"
    proc = run_lm_eval(
        ["--model", "tts", "--model_args", args, "--tasks", "arith", "--limit", "2",
         "--output_path", str(out), "--log_samples"],
        {},
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["arith"]
    for metric in ("exact_match", "maj@n", "weighted@n", "naive@n", "pass@n"):
        assert 0.0 <= results[f"{metric},none"] <= 1.0
    assert results["tts_trace,none"] == 2 and results["policy_tokens,none"] > 0
    samples = [json.loads(line) for line in next(out.rglob("samples_arith_*.jsonl")).open()]
    assert [s["doc"]["uid"] for s in samples] == ["arith/2026/0", "arith/2026/1"]
    number = NumberAnswerSpec()
    for sample in samples:
        candidates = sample["tts_trace"]["candidates"]
        assert len(candidates) == 3
        for cand in candidates:  # answer=number: the last number of the text, not a boxed answer
            assert cand["answer"] == number.extract("".join(cand["steps"]))


@pytest.mark.real_model
@pytest.mark.slow
def test_the_real_model_benchmark_runs_on_three_problems(smollm2, tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_real_model
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    plot = tmp_path / "scaling.png"
    out = bench_real_model.main(
        ["--problems", "3", "--budgets", "1,4", "--tree-budget", "4", "--iterations", "3",
         "--speed-problems", "1", "--max-tokens", "64", "--plot", str(plot),
         "--json", str(tmp_path / "out.json")]
    )  # fmt: skip
    assert out["problems"] == 3 and plot.stat().st_size > 10_000
    assert [r["backend"] for r in out["reports"]] == ["vllm", "hf"]
    for report in out["reports"]:
        assert report["speed"]["policy_tokens"] > 0 and report["speed"]["tokens_per_s"] > 0
        runs = report["runs"]
        assert list(runs) == [
            "cot",
            "best_of_n n=1",
            "best_of_n n=4",
            "beam_search n=4",
            "dvts n=4",
        ]
        for label, entry in runs.items():
            assert entry["policy_tokens"] > 0
            for metric in ("exact_match", "maj@n", "pass@n"):
                m = entry[metric]
                assert m["ci"][0] <= m["mean"] <= m["ci"][1] and 0 <= m["mean"] <= 1
            assert ("weighted@n" in entry) == (label != "cot")
            assert (entry["prm_tokens"] > 0) == (label != "cot")
        share = runs["beam_search n=4"]["prefix_cache_share"]
        assert len(share) >= 2
        if report["backend"] == "vllm":  # iteration 2 continues iteration 1's prefixes
            assert share[1] > 0.75  # 32-token blocks on CPU (128: 11%)
    assert json.loads((tmp_path / "out.json").read_text())["problems"] == 3
