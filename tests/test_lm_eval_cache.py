"""lm-eval's response cache (``--use_cache``) with ``--model tts``, through the lm_eval CLI.

lm-eval keys cached responses by request text and generation kwargs only; ``--model tts`` adds a
digest of its settings, so a run with other settings searches again and the same settings hit
the cache. The same runs check that logged samples show the rendered chat prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lm_eval_cli import run_lm_eval

pytestmark = pytest.mark.slow


def run(tiny_llama: Path, math500_path: Path, tmp_path: Path, name: str, settings: str):
    out = tmp_path / name
    traces = tmp_path / f"{name}.jsonl"
    proc = run_lm_eval(
        [
            "--model", "tts",
            "--model_args", f"pretrained={tiny_llama},backend=hf,{settings},trace_path={traces}",
            "--tasks", "math500", "--limit", "2", "--apply_chat_template",
            "--use_cache", str(tmp_path / "cache"),
            "--output_path", str(out), "--log_samples",
        ],
        {"TTS_EVAL_MATH500": str(math500_path)},
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    (samples_file,) = list(out.rglob("samples_math500_*.jsonl"))
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    return proc, samples, traces


def test_other_settings_search_again_and_the_same_settings_hit_the_cache(
    tiny_llama, math500_path, tmp_path
):
    proc, first, _ = run(tiny_llama, math500_path, tmp_path, "a", "n=2,max_tokens=8")
    assert "Cached requests: 0, Requests remaining: 2" in proc.stderr
    assert [len(s["tts_trace"]["candidates"]) for s in first] == [2, 2]

    proc, second, traces = run(tiny_llama, math500_path, tmp_path, "b", "n=4,max_tokens=6")
    assert "Cached requests: 0, Requests remaining: 2" in proc.stderr
    assert [len(s["tts_trace"]["candidates"]) for s in second] == [4, 4]
    assert {s["tts_trace"]["settings"]["max_tokens"] for s in second} == {6}
    assert len(traces.read_text().splitlines()) == 2

    proc, third, traces = run(tiny_llama, math500_path, tmp_path, "c", "n=4,max_tokens=6")
    assert "Cached requests: 2, Requests remaining: 0" in proc.stderr
    assert "response cache entries are keyed by request and by settings tts-eval/" in proc.stderr
    assert [s["resps"] for s in third] == [s["resps"] for s in second]
    assert [s["tts_trace"] for s in third] == [s["tts_trace"] for s in second]
    assert not traces.exists()  # cached responses are not searched, so not traced again

    # logged arguments are the prompt the policy sees, rendered with its chat template
    prompt = second[0]["arguments"]["gen_args_0"]["arg_0"]
    assert prompt.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "\x1e" not in prompt and "tts-chat" not in prompt
    assert "prompts are always rendered with the chat template of" in proc.stderr
