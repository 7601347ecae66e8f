"""What a ``--model tts`` run records: FLOPs per problem beside the token counts (samples, table,
results JSON), the task of each logged trace, the device the policy ran on, and no table rows that
are not scores (``grade_status`` counted samples under an up-arrow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from lm_eval_cli import run_lm_eval

from tts_eval.lm_model import with_flops
from tts_eval.params import count_safetensors, search_flops
from tts_eval.task_metrics import trace_metrics
from tts_eval.traces import result_from_record, result_record
from tts_eval.types import Cost, SearchResult

TASKS = Path(__file__).resolve().parents[1] / "tasks"


def result(**cost) -> SearchResult:
    return SearchResult(uid="arith/0", strategy="best_of_n", candidates=(), selected=None,
                        cost=Cost(**cost))  # fmt: skip


def test_search_flops_is_two_x_parameters_x_tokens_processed():
    cost = Cost(policy_tokens=100, prompt_tokens=400, cached_prompt_tokens=150, prm_tokens=300)
    # policy: 100 generated + 250 prefilled tokens; PRM: 300 tokens
    assert search_flops(cost, 1e9, 8e9) == 2 * 1e9 * 350 + 2 * 8e9 * 300
    assert search_flops(cost, None, 8e9) is None  # the policy's size is unknown
    assert search_flops(cost, 1e9, None) is None  # the PRM scored: its size is needed
    assert search_flops(Cost(policy_tokens=10), 1e9, None) == 2e10  # no PRM tokens


def test_flops_are_added_once_and_survive_the_trace_record():
    plain = result(policy_tokens=10, prompt_tokens=5)
    counted = with_flops(plain, 1e6, None)
    assert counted.cost.flops == 2e6 * 15
    assert with_flops(counted, 2e6, None) is counted  # known FLOPs are kept
    assert with_flops(plain, None, None) is plain
    record = result_record(counted)
    assert record["version"] == 3 and record["cost"]["flops"] == 3e7
    assert result_from_record(record) == counted
    old = {**result_record(plain), "version": 2}
    del old["cost"]["flops"]
    assert result_from_record(old).cost.flops is None  # version 2 records: unknown
    assert (counted.cost + counted.cost).flops == 6e7
    assert (counted.cost + plain.cost).flops is None


def test_trace_metrics_name_the_task_and_the_flops():
    metrics = trace_metrics(with_flops(result(policy_tokens=3), 1e6, None), "7", task="arith")
    assert metrics["flops"] == 6e6
    assert metrics["tts_trace"]["task"] == "arith"
    assert "flops" not in trace_metrics(result(policy_tokens=3), "7")


@pytest.mark.parametrize("task", ["math500", "arith"])
def test_the_tables_have_no_rows_that_are_not_scores(task):
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    config = yaml.load((TASKS / task / f"{task}.yaml").read_text(), Loader=Loader)
    metrics = {m["metric"]: m for m in config["metric_list"]}
    assert "grade_status" not in metrics
    assert metrics["tts_trace"]["higher_is_better"] is None  # a count: no arrow
    assert metrics["flops"] == {"metric": "flops", "aggregation": "mean", "higher_is_better": False}


@pytest.mark.slow
def test_a_run_records_flops_task_and_device(scripted_llama, tiny_prm, tmp_path):
    """Plain lm_eval, no --device (lm-eval would record cuda:0): best-of-2 with the tiny PRM."""
    model_args = f"pretrained={scripted_llama},backend=hf,prm={tiny_prm},prm_device=cpu"
    model_args += ",strategy=best_of_n,n=2,max_tokens=64,answer=number"
    args = ["--model", "tts", "--model_args", model_args, "--tasks", "arith", "--limit", "2"]
    args += ["--output_path", str(tmp_path / "out"), "--log_samples"]
    from tts_eval.runtime.local import visible_devices

    args += ["--device", "cpu"] if visible_devices("cuda") else []
    proc = run_lm_eval(args, {}, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    (samples_file,) = (tmp_path / "out").rglob("samples_arith_*.jsonl")
    results = json.loads(results_file.read_text())
    assert results["config"]["device"] == "cpu"
    table = results["results"]["arith"]
    assert not [key for key in table if key.startswith("grade_status")]
    policy, prm = count_safetensors(scripted_llama), count_safetensors(tiny_prm)
    flops = []
    for line in samples_file.read_text().splitlines():
        sample = json.loads(line)
        trace = sample["tts_trace"]
        assert trace["task"] == "arith"
        cost = Cost(**trace["cost"])
        assert cost.prm_tokens > 0
        expected = search_flops(cost, policy, prm)
        assert sample["flops"] == pytest.approx(expected) == cost.flops
        flops.append(expected)
    assert table["flops,none"] == pytest.approx(sum(flops) / len(flops))
