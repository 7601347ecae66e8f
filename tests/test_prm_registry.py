"""PRM type detection table, PRMConfig validation and load_prm's early one-line errors."""

from __future__ import annotations

import json

import pytest

from tts_eval.prm import (
    DETECTION_RULES,
    SUPPORTED,
    PRMConfig,
    PRMPathError,
    PRMTokenizerError,
    detect_prm_type,
    load_prm,
)


@pytest.mark.parametrize(
    ("path", "config", "expected"),
    [
        ("RLHFlow/Llama3.1-8B-PRM-Deepseek-Data", {"architectures": ["LlamaForCausalLM"]},
         "rlhflow"),
        ("RLHFlow/Llama3.1-8B-PRM-Mistral-Data", {}, "rlhflow"),
        ("peiyi9979/math-shepherd-mistral-7b-prm", {"architectures": ["MistralForCausalLM"]},
         "math_shepherd"),
        ("/models/x", {"architectures": ["Qwen2ForProcessRewardModel"]}, "qwen_prm"),
        ("Qwen/Qwen2.5-Math-PRM-72B", {}, "qwen_prm"),
        ("/models/y", {"architectures": ["Qwen2ForPrmModel"]}, "skywork"),
        ("Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B", {"architectures": ["Qwen2ForCausalLM"]},
         "skywork"),
        ("/models/z", {"architectures": ["Qwen2ForTokenClassification"]}, "token_classification"),
        ("/models/w", {"_name_or_path": "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data"}, "rlhflow"),
        ("/models/plain", {"architectures": ["LlamaForCausalLM"]}, None),
    ],
)  # fmt: skip
def test_detection_table(path, config, expected):
    assert detect_prm_type(path, config) == expected


def test_detection_rules_name_only_supported_types():
    assert {rule.prm_type for rule in DETECTION_RULES} == set(SUPPORTED)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"prm_type": "nope"},
            "^model_args prm_type=nope is invalid; accepted: rlhflow, math_shep",
        ),
        (
            {"device": "gpu"},
            "^model_args prm_device=gpu is invalid; accepted: auto, cpu, mps, cuda",
        ),
        ({"dtype": "fp8"}, "^model_args prm_dtype=fp8 is invalid; accepted: auto, float32"),
        (
            {"batch_tokens": 0},
            "^model_args prm_batch_tokens=0 is invalid; accepted: an integer >= 1$",
        ),
        ({"batch_tokens": 1.5}, "^model_args prm_batch_tokens=1.5 is invalid"),
        (
            {"cache_bytes": -1},
            "^model_args prm_cache_bytes=-1 is invalid; accepted: an integer >= 0",
        ),
        ({"block_size": 0}, "^model_args prm_block_size=0 is invalid"),
        (
            {"prm_type": "rlhflow", "step_separator": "\n"},
            r"^model_args prm_step_separator=\\n is invalid; accepted: only with prm_type=skywork",
        ),
        (
            {"step_separator": ""},
            "^model_args prm_step_separator='' is invalid; accepted: a non-empty",
        ),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        PRMConfig("/some/path", **kwargs)
    assert "\n" not in str(err.value)


def test_config_accepts_defaults_and_is_frozen():
    cfg = PRMConfig("/p", "skywork", "cuda:1", "bfloat16", 4096, 0, 8, "\n")
    assert cfg.batch_tokens == 4096
    with pytest.raises(AttributeError):
        cfg.batch_tokens = 1  # type: ignore[misc]


def test_unknown_prm_type_fails_before_any_file_is_read(tmp_path):
    with pytest.raises(ValueError, match="accepted: rlhflow, math_shepherd, qwen_prm, skywork"):
        load_prm(str(tmp_path / "missing"), prm_type="shepherd")


def test_missing_path(tmp_path):
    with pytest.raises(PRMPathError, match="^model_args prm=.* is invalid; .*no such directory"):
        load_prm(str(tmp_path / "missing"))


def test_dir_without_config(tmp_path):
    with pytest.raises(PRMPathError, match="no config.json"):
        load_prm(str(tmp_path))


def test_undetectable_type_names_the_fix(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ValueError, match="model_args prm_type is needed: .*; accepted: rlhflow"):
        load_prm(str(tmp_path))


def test_tokenizer_error_comes_before_weights_load(tmp_path):
    """A PRM whose tokenizer lacks its step token fails on the tokenizer; weights are never read
    (this checkpoint has none, so reaching the weights would raise a different error)."""
    from tiny_models import build_tokenizer

    build_tokenizer(tmp_path)
    config = {"architectures": ["Qwen2ForPrmModel"], "model_type": "qwen2"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(PRMTokenizerError, match="single token") as err:
        load_prm(str(tmp_path), step_separator="zzqx-not-a-token")
    assert "\n" not in str(err.value)
    assert "skywork" in str(err.value)
