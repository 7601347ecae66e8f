"""The lm-eval ``tts`` model: prompt recovery, text handling, and end-to-end CLI runs."""

from __future__ import annotations

import json

import pytest
from lm_eval_cli import run_lm_eval

from tts_eval.lm_model import CHAT_TAG, TTSLM, context_to_messages, problem_text, truncate_at
from tts_eval.prompts import DESCRIPTION_SEPARATOR, SYSTEM_PROMPT

PROBLEM = "What is $1+1$?"


def test_chat_template_context_round_trips_messages():
    lm = TTSLM.__new__(TTSLM)  # no config needed for the pure method
    msgs = [{"role": "system", "content": "sys\n\n"}, {"role": "user", "content": PROBLEM}]
    ctx = TTSLM.apply_chat_template(lm, msgs)
    assert ctx.startswith(CHAT_TAG)
    assert context_to_messages(ctx) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": PROBLEM},
    ]


def test_plain_context_with_math500_description_splits_into_system_and_user():
    ctx = SYSTEM_PROMPT + DESCRIPTION_SEPARATOR + PROBLEM
    assert context_to_messages(ctx) == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": PROBLEM},
    ]


def test_plain_context_of_another_task_is_one_user_turn_and_system_prompt_overrides():
    assert context_to_messages("Q: 2+2?\nA:") == [{"role": "user", "content": "Q: 2+2?\nA:"}]
    msgs = context_to_messages(SYSTEM_PROMPT + DESCRIPTION_SEPARATOR + PROBLEM, "Be brief.")
    assert msgs == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": PROBLEM},
    ]
    assert problem_text(msgs) == PROBLEM
    with pytest.raises(ValueError, match="no user message"):
        problem_text([{"role": "system", "content": "x"}])


@pytest.mark.parametrize(
    ("text", "until", "expected"),
    [("abc<|eot|>def", ["<|eot|>"], "abc"), ("abc", [], "abc"), ("a\nb;c", [";", "\n"], "a")],
)
def test_truncate_at(text, until, expected):
    assert truncate_at(text, until) == expected


def test_loglikelihood_is_a_clear_not_supported_error():
    lm = TTSLM.__new__(TTSLM)
    with pytest.raises(NotImplementedError, match="only supports generation tasks"):
        lm.loglikelihood([])
    with pytest.raises(NotImplementedError, match="loglikelihood_rolling is not supported"):
        lm.loglikelihood_rolling([])


def test_bad_model_args_fail_before_loading_anything():
    with pytest.raises(ValueError, match="unknown model_args key 'temprature'"):
        TTSLM.create_from_arg_string("pretrained=/nonexistent/model,temprature=0.5")


@pytest.mark.slow
def test_lm_eval_cli_plain_sampling_on_tiny_model(tiny_llama, math500_path, tmp_path):
    out = tmp_path / "out"
    traces = tmp_path / "traces.jsonl"
    proc = run_lm_eval(
        [
            "--model", "tts",
            "--model_args",
            f"pretrained={tiny_llama},backend=hf,max_tokens=16,seed=1,trace_path={traces}",
            "--tasks", "math500", "--limit", "5",
            "--output_path", str(out), "--log_samples",
        ],
        {"TTS_EVAL_MATH500": str(math500_path)},
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    (results_file,) = list(out.rglob("results_*.json"))
    results = json.loads(results_file.read_text())["results"]["math500"]
    assert results["exact_match,none"] == 0.0
    assert "math500" in proc.stdout and "exact_match" in proc.stdout
    records = [json.loads(line) for line in traces.read_text().splitlines()]
    assert len(records) == 5
    assert all(r["strategy"] == "majority" and len(r["candidates"]) == 1 for r in records)
    assert all(r["cost"]["policy_tokens"] > 0 for r in records)


@pytest.mark.slow
def test_lm_eval_cli_rejects_unknown_key_in_one_line(tmp_path):
    proc = run_lm_eval(
        ["--model", "tts", "--model_args", "pretrained=x,strategyy=dvts", "--tasks", "math500"],
        {},
        tmp_path,
    )
    assert proc.returncode != 0
    assert "unknown model_args key 'strategyy' for --model tts; accepted:" in proc.stderr


@pytest.mark.slow
def test_tts_eval_eval_command_registers_explicitly_with_the_hook_off(
    tiny_llama, math500_path, tmp_path
):
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "tts-eval"
    out = tmp_path / "out"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TTS_EVAL_NO_LM_EVAL_HOOK": "1",
        "TTS_EVAL_MATH500": str(math500_path),
    }
    cmd = [
        str(exe), "eval", "--model", "tts",
        "--model_args", f"pretrained={tiny_llama},backend=hf,max_tokens=8",
        "--tasks", "math500", "--limit", "1", "--output_path", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (results_file,) = list(out.rglob("results_*.json"))
    table = json.loads(results_file.read_text())["results"]["math500"]
    assert table["exact_match,none"] == 0.0 and table["tts_trace,none"] == 1


@pytest.mark.slow
def test_out_of_memory_in_policy_or_prm_is_one_line_naming_the_knob(
    tiny_llama, tiny_prm, monkeypatch
):
    import torch

    from tts_eval.engines import load_engine
    from tts_eval.errors import OutOfMemoryError
    from tts_eval.prm import load_prm
    from tts_eval.types import GenerationRequest, PRMRequest, SamplingParams

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    engine = load_engine("hf", str(tiny_llama), dtype="float32", batch_size=4)
    monkeypatch.setattr(engine, "_forward", oom)
    request = GenerationRequest(tuple(engine.render_prompt([{"role": "user", "content": "1+1?"}])),
                                SamplingParams(n=2, max_tokens=8))  # fmt: skip
    with pytest.raises(OutOfMemoryError) as err:
        engine.generate([request])
    assert "batch_size=4" in str(err.value) and "\n" not in str(err.value)

    prm = load_prm(str(tiny_prm), "rlhflow", batch_tokens=512)
    monkeypatch.setattr(prm.scorer, "run", oom)
    with pytest.raises(OutOfMemoryError) as err:
        prm.score([PRMRequest("1+1?", ("2",))])
    assert "prm_batch_tokens=512" in str(err.value) and "\n" not in str(err.value)
