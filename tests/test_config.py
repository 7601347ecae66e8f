"""The model_args adapter: flat lm-eval keys -> frozen configs, with one-line errors."""

from __future__ import annotations

import dataclasses

import pytest

from tts_eval.settings import TTSConfig, accepted_keys, parse_model_args, split_arg_string


def test_full_arg_string_maps_onto_sub_configs():
    cfg = parse_model_args(
        "pretrained=meta-llama/Llama-3.2-1B-Instruct,prm=RLHFlow/Llama3.1-8B-PRM-Deepseek-Data,"
        "backend=vllm,strategy=dvts,n=64,beam_width=4,agg=min,temperature=0.7,top_p=0.95,"
        "max_tokens=1024,seed=3,prm_dtype=bfloat16,prm_batch_tokens=4096,"
        "gpu_memory_utilization=0.5,step_delimiter=\\n\\n,trace_path=/tmp/t.jsonl"
    )
    assert isinstance(cfg, TTSConfig)
    assert cfg.engine.pretrained == "meta-llama/Llama-3.2-1B-Instruct"
    assert cfg.engine.backend == "vllm" and cfg.engine.gpu_memory_utilization == 0.5
    assert cfg.engine.seed == 3 and cfg.search.seed == 3
    s = cfg.search
    assert (s.strategy, s.n, s.beam_width, s.agg) == ("dvts", 64, 4, "min")
    assert (s.temperature, s.top_p, s.max_tokens) == (0.7, 0.95, 1024)
    assert s.step_delimiter == "\n\n"
    assert cfg.prm.path == "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data"
    assert cfg.prm.dtype == "bfloat16" and cfg.prm.batch_tokens == 4096
    assert cfg.trace_path == "/tmp/t.jsonl"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.search.n = 3  # type: ignore[misc]


def test_mapping_input_with_lm_eval_types_is_accepted():
    cfg = parse_model_args({"pretrained": "m", "prm": "p", "n": 8, "temperature": 1, "seed": 0})
    assert cfg.search.n == 8 and cfg.search.temperature == 1.0


def test_no_prm_and_no_strategy_means_plain_sampling():
    cfg = parse_model_args("pretrained=m,seed=1,temperature=0.5,max_tokens=64")
    assert cfg.prm is None
    assert (cfg.search.strategy, cfg.search.n) == ("majority", 1)
    assert cfg.search.max_tokens == 64


def test_lm_eval_device_flag_reaches_the_engine():
    cfg = parse_model_args("pretrained=m", extra={"device": "cpu", "batch_size": 1})
    assert cfg.engine.device == "cpu"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("pretrained=m,bogus=1", "unknown model_args key 'bogus' for --model tts; accepted: "),
        ("pretrained=m,n", "malformed model_args part 'n'"),
        ("pretrained=m,n=1,n=2", "model_args key 'n' is given twice"),
        ("n=4", "model_args pretrained is required; accepted: a model directory or hub id"),
        ("pretrained=m,prm=p,n=abc", "model_args n=abc is invalid; accepted: an integer"),
        (
            "pretrained=m,prm=p,temperature=hot",
            "model_args temperature=hot is invalid; accepted: a number",
        ),
        ("pretrained=m,prm=p,strategy=dvts,n=6,beam_width=4", "multiple of beam_width=4"),
        (
            "pretrained=m,prm=p,strategy=greedy",
            "model_args strategy=greedy is invalid; accepted: majority",
        ),
        ("pretrained=m,strategy=beam_search,n=8", "strategy=beam_search needs a PRM"),
        ("pretrained=m,prm_type=rlhflow", "given without prm="),
        ("pretrained=m,data_parallel_size=0", "data_parallel_size=0 is invalid"),
        ("pretrained=m,config=/nonexistent/recipe.yaml", "accepted: an existing recipe file"),
        (
            "pretrained=m,answer=words",
            "model_args answer=words is invalid; accepted: math, number, regex:",
        ),
        (
            "pretrained=m,answer=regex:\\d+",
            "model_args answer=regex:\\d+ is invalid; accepted: math",
        ),
        (
            "pretrained=m,prm=p,prm_device=gpu",
            "model_args prm_device=gpu is invalid; accepted: auto, cpu",
        ),
        (
            "pretrained=m,prm=p,prm_dtype=fp8",
            "model_args prm_dtype=fp8 is invalid; accepted: auto, float32",
        ),
    ],
)
def test_bad_model_args_are_one_line_errors(args, message):
    with pytest.raises(ValueError) as err:
        parse_model_args(args)
    text = str(err.value)
    assert message in text
    assert "\n" not in text


def test_unknown_key_error_lists_accepted_keys():
    with pytest.raises(ValueError) as err:
        parse_model_args("pretrained=m,beamwidth=4")
    for key in ("beam_width", "strategy", "prm", "pretrained", "backend"):
        assert key in str(err.value)
    assert set(accepted_keys()) >= {"n", "prm_device", "prm_dtype", "gpu_memory_utilization"}


def test_recipe_file_is_loaded_and_explicit_keys_override(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_args:\n  pretrained: base\n  prm: p\n  strategy: dvts\n  n: 16\n")
    cfg = parse_model_args(f"config={recipe},n=8")
    assert (cfg.engine.pretrained, cfg.search.strategy, cfg.search.n) == ("base", "dvts", 8)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_args: [1, 2\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        parse_model_args(f"config={bad}")


def test_split_arg_string_keeps_values_as_strings():
    assert split_arg_string("a=1, b = x=y ,") == {"a": "1", "b": "x=y"}


def test_gpu_memory_is_shared_with_a_prm_on_the_gpu_by_default():
    alone = parse_model_args("pretrained=m,backend=vllm")
    shared = parse_model_args("pretrained=m,backend=vllm,prm=p")
    prm_on_cpu = parse_model_args("pretrained=m,backend=vllm,prm=p,prm_device=cpu")
    explicit = parse_model_args("pretrained=m,backend=vllm,prm=p,gpu_memory_utilization=0.7")
    assert shared.engine.gpu_memory_utilization == 0.5
    assert alone.engine.gpu_memory_utilization == prm_on_cpu.engine.gpu_memory_utilization == 0.9
    assert explicit.engine.gpu_memory_utilization == 0.7
