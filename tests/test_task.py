"""The math500 task: data loading (local JSONL), prompt, grading hook, and a CoT baseline run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from lm_eval_cli import run_lm_eval

from tts_eval.plugin import tasks_dir
from tts_eval.prompts import DESCRIPTION_SEPARATOR, SYSTEM_PROMPT

ROOT = Path(__file__).resolve().parents[1]


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def task_yaml() -> dict:
    return yaml.load((tasks_dir() / "math500" / "math500.yaml").read_text(), Loader=_Loader)


def test_task_yaml_description_is_the_system_prompt():
    cfg = task_yaml()
    assert cfg["task"] == "math500"
    assert cfg["description"] == SYSTEM_PROMPT + DESCRIPTION_SEPARATOR
    assert cfg["metadata"]["version"] >= 1
    assert cfg["output_type"] == "generate_until"
    assert cfg["metric_list"][0] == {
        "metric": "exact_match",
        "aggregation": "mean",
        "higher_is_better": True,
    }


@pytest.fixture
def local_math500(math500_path, monkeypatch):
    monkeypatch.setenv("TTS_EVAL_MATH500", str(math500_path))
    return math500_path


def test_task_loads_local_copy_with_all_fields(local_math500):
    from lm_eval.tasks import TaskManager

    task = TaskManager().load(["math500"])["tasks"]["math500"]
    docs = list(task.test_docs())
    assert len(docs) == 500
    assert set(docs[0]) >= {"problem", "solution", "answer", "subject", "level", "unique_id"}
    ctx = task.fewshot_context(docs[0], num_fewshot=0)
    assert ctx == SYSTEM_PROMPT + DESCRIPTION_SEPARATOR + docs[0]["problem"]


def test_missing_local_copy_is_a_clear_error(monkeypatch, tmp_path):
    sys.path.insert(0, str(tasks_dir() / "math500"))
    try:
        import utils as math500_utils
    finally:
        sys.path.pop(0)
    monkeypatch.setenv("TTS_EVAL_MATH500", str(tmp_path / "missing.jsonl"))
    with pytest.raises(FileNotFoundError, match="TTS_EVAL_MATH500"):
        math500_utils.load_math500()


@pytest.mark.parametrize(
    ("output", "gold", "expected"),
    [
        (
            "## Step 1: add\n\nTherefore, the final answer is: $\\boxed{\\frac{1}{2}}$.",
            "\\frac12",
            1.0,
        ),
        ("The answer is $\\boxed{0.5}$", "\\frac{1}{2}", 1.0),
        ("The answer is $\\boxed{3}$", "\\frac{1}{2}", 0.0),
        ("no answer at all", "5", 0.0),
    ],
)
def test_process_results_grades_with_our_grader(output, gold, expected):
    from tts_eval.task_metrics import math_metrics

    assert math_metrics(output, gold)["exact_match"] == expected


def read_results(out_dir: Path) -> dict:
    (path,) = list(out_dir.rglob("results_*.json"))
    return json.loads(path.read_text())


@pytest.mark.slow
def test_cot_baseline_with_builtin_hf_model(tiny_llama, math500_path, tmp_path):
    out = tmp_path / "out"
    proc = run_lm_eval(
        [
            "--model", "hf",
            "--model_args", f"pretrained={tiny_llama},dtype=float32",
            "--tasks", "math500", "--limit", "2", "--apply_chat_template",
            "--gen_kwargs", "max_gen_toks=16",
            "--output_path", str(out), "--log_samples",
        ],
        {"TTS_EVAL_MATH500": str(math500_path), "HF_HUB_OFFLINE": "1"},
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = read_results(out)["results"]["math500"]
    assert results["exact_match,none"] == 0.0  # random weights never box the right answer
    (samples,) = list(out.rglob("samples_math500_*.jsonl"))
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(rows) == 2 and {"level", "subject"} <= set(rows[0]["doc"])
