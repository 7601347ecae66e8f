"""The model_args adapter: flat lm-eval keys -> frozen configs, with one-line errors."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tts_eval.config import TTSConfig, result_identity, results_fingerprint
from tts_eval.model_args import (
    accepted_keys,
    batch_size_of_flag,
    parse_model_args,
    split_arg_string,
)
from tts_eval.search import SearchConfig, default_table
from tts_eval.settings import EngineConfig


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
    assert (s.strategy, s.n, s.options.beam_width, s.agg) == ("dvts", 64, 4, "min")
    assert (s.temperature, s.top_p, s.max_tokens) == (0.7, 0.95, 1024)
    assert s.step_delimiter == "\n\n"
    assert cfg.prm.path == "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data"
    assert cfg.prm.dtype == "bfloat16" and cfg.prm.batch_tokens == 4096
    assert cfg.trace_path == "/tmp/t.jsonl"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.search.n = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("\\n\\n", "\n\n"),
        (" \u043a\u0438\\n", " \u043a\u0438\n"),  # Math-Shepherd's step tag, then a newline
        ("\u3002\\n", "\u3002\n"),  # a CJK full stop
        ("caf\u00e9\\t", "caf\u00e9\t"),  # Latin-1 kept as it is
        ("\\u043a", "\u043a"),  # an escape of a non-ASCII character
        ("a\\\\nb", "a\\nb"),  # an escaped backslash
    ],
)
def test_escaped_keys_decode_escapes_and_keep_other_text(given, expected):
    cfg = parse_model_args({"pretrained": "m", "step_delimiter": given, "system_prompt": given})
    assert cfg.search.step_delimiter == expected
    assert cfg.system_prompt == expected


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


# ------------------------------------------------------------------ lm-eval's own flags


def test_lm_eval_flags_fill_what_model_args_leave_unset():
    extra = {
        "seed": 2,
        "gen_kwargs": {"max_gen_toks": 16, "temperature": 0, "top_p": 0.9, "until": ["x"]},
        "batch_size": "4",
        "device": "cpu",
    }
    cfg = parse_model_args("pretrained=m,n=3", extra=extra)
    s = cfg.search
    assert (s.seed, s.max_tokens, s.temperature, s.top_p) == (2, 16, 0.0, 0.9)
    assert (cfg.engine.seed, cfg.engine.batch_size, cfg.engine.device) == (2, 4, "cpu")
    assert cfg.max_tokens_from_task is False  # --gen_kwargs max_gen_toks set it


def test_model_args_win_over_lm_eval_flags(caplog):
    caplog.set_level("INFO", logger="tts_eval.model_args")
    extra = {"seed": 2, "gen_kwargs": {"max_gen_toks": 16, "temperature": 0}, "batch_size": 4}
    cfg = parse_model_args("pretrained=m,seed=5,max_tokens=7,temperature=0.5,batch_size=2", extra)
    s = cfg.search
    assert (s.seed, s.max_tokens, s.temperature) == (5, 7, 0.5)
    assert (cfg.engine.seed, cfg.engine.batch_size) == (5, 2)
    assert "lm-eval flags overridden by model_args: --seed 2 (model_args seed=5)" in caplog.text


def test_lm_eval_flags_applied_are_logged(caplog):
    caplog.set_level("INFO", logger="tts_eval.model_args")
    parse_model_args("pretrained=m", {"seed": 1, "gen_kwargs": {"max_gen_toks": 16}})
    assert (
        "lm-eval flags applied to --model tts: --seed 1 -> seed=1; "
        "--gen_kwargs max_gen_toks=16 -> max_tokens=16" in caplog.text
    )


def test_do_sample_false_on_the_command_line_means_greedy():
    cfg = parse_model_args("pretrained=m", {"gen_kwargs": {"do_sample": False, "temperature": 1}})
    assert cfg.search.temperature == 0.0
    cfg = parse_model_args("pretrained=m", {"gen_kwargs": {"do_sample": True}})
    assert cfg.search.temperature == 0.8


def test_max_tokens_comes_from_the_task_only_when_nobody_set_it(tmp_path):
    assert parse_model_args("pretrained=m").max_tokens_from_task is True
    assert parse_model_args("pretrained=m,max_tokens=64").max_tokens_from_task is False
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_args:\n  pretrained: m\n  max_tokens: 99\n")
    assert parse_model_args(f"config={recipe}").max_tokens_from_task is False
    # a config built in Python searches with exactly its SearchConfig
    assert (
        TTSConfig(EngineConfig("m"), SearchConfig(strategy="majority")).max_tokens_from_task
        is False
    )


@pytest.mark.parametrize(
    ("value", "max_batch_size", "backend", "expected"),
    [
        (None, None, "hf", None),
        (1, None, "hf", None),  # lm-eval's default: not applied
        ("1", None, "vllm", None),
        ("4", None, "hf", 4),
        ("auto", None, "hf", None),  # the engine's default
        ("auto:4", 8, "hf", 8),  # the most auto may pick
        ("auto", 8, "vllm", None),  # vLLM batches continuously
    ],
)
def test_batch_size_flag(value, max_batch_size, backend, expected):
    assert batch_size_of_flag(value, max_batch_size, backend) == expected


@pytest.mark.parametrize(
    ("args", "extra", "message"),
    [
        (
            "pretrained=m",
            {"gen_kwargs": {"repetition_penalty": 1.1}},
            "lm_eval --gen_kwargs repetition_penalty=1.1 is invalid; accepted: max_gen_toks, "
            "temperature, top_p, do_sample, until",
        ),
        (
            "pretrained=m",
            {"gen_kwargs": {"temperature": -1}},
            "lm_eval --gen_kwargs temperature=-1 is invalid; accepted: a number >= 0",
        ),
        (
            "pretrained=m",
            {"gen_kwargs": {"max_gen_toks": 0}},
            "lm_eval --gen_kwargs max_gen_toks=0 is invalid; accepted: an integer >= 1",
        ),
        (
            "pretrained=m,backend=vllm",
            {"batch_size": "4"},
            "lm_eval --batch_size=4 is invalid; accepted: 1 or auto with backend=vllm",
        ),
        ("pretrained=m", {"batch_size": "big"}, "lm_eval --batch_size=big is invalid"),
        ("pretrained=m", {"seed": -3}, "lm_eval --seed=-3 is invalid; accepted: an integer >= 0"),
        ("pretrained=m,n=4", {"repeated_model_args": ("n",)}, "model_args key 'n' is given twice"),
    ],
)
def test_bad_lm_eval_flags_are_one_line_errors(args, extra, message):
    with pytest.raises(ValueError) as err:
        parse_model_args(args, extra=extra)
    assert message in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------ results fingerprint

BASE = "pretrained=m,prm=p,strategy=best_of_n,n=4"


@pytest.mark.parametrize(
    "change",
    [
        "n=8",
        "strategy=dvts",
        "max_tokens=16",
        "temperature=0.5",
        "top_p=0.9",
        "seed=1",
        "agg=min",
        "selection=naive",
        "step_delimiter=\\n",
        "num_iterations=3",
        "pretrained=other",
        "backend=vllm",
        "dtype=float32",
        "max_model_len=512",
        "chat_template={{x}}",
        "prm=other",
        "prm_type=rlhflow",
        "prm_dtype=float32",
        "prm_step_separator=\\n",
        "answer=number",
        "system_prompt=Be brief.",
    ],
)
def test_results_fingerprint_changes_with_every_result_setting(change):
    changed = parse_model_args({**split_arg_string(BASE), **split_arg_string(change)})
    assert results_fingerprint(changed) != results_fingerprint(parse_model_args(BASE))


def test_results_fingerprint_ignores_where_traces_go_and_how_work_is_spread(tmp_path):
    base = results_fingerprint(parse_model_args(BASE))
    same = "trace_path=/tmp/t.jsonl,eager_load=false,data_parallel_size=2,ray_address=h:1"
    assert results_fingerprint(parse_model_args(f"{BASE},{same}")) == base
    # a task's max_gen_toks may set max_tokens only when nobody did: that changes results too
    explicit = parse_model_args(f"{BASE},max_tokens=2048")
    assert explicit.search == parse_model_args(BASE).search
    assert results_fingerprint(explicit) != base


@pytest.mark.parametrize(
    "placement",
    [
        "batch_size=8",
        "device=cpu",
        "gpu_memory_utilization=0.3",
        "prm_device=cpu,prm_batch_tokens=512,prm_cache_bytes=0,prm_block_size=32",
        "backend=vllm,tensor_parallel_size=2,enforce_eager=true",
    ],
)
def test_the_result_identity_leaves_out_placement(placement):
    base = BASE if "tensor" not in placement else f"{BASE},backend=vllm"
    changed = parse_model_args({**split_arg_string(base), **split_arg_string(placement)})
    assert result_identity(changed, "t") == result_identity(parse_model_args(base), "t")
    assert results_fingerprint(changed) == results_fingerprint(parse_model_args(base))


def test_the_result_identity_leaves_out_the_server_address():
    server = "pretrained=m,backend=openai,base_url=http://a:1/v1,model=served"
    moved = "pretrained=m,backend=openai,base_url=https://b/v1,api_key=k,timeout_s=5,max_retries=0"
    assert results_fingerprint(parse_model_args(f"{moved},model=served")) == results_fingerprint(
        parse_model_args(server)
    )
    assert results_fingerprint(parse_model_args(f"{moved},model=other")) != results_fingerprint(
        parse_model_args(server)
    )


def test_the_result_identity_holds_a_strategy_own_options_only():
    # a majority run does not read beam_width: its identity (and resume key) does not have it
    majority = result_identity(parse_model_args("pretrained=m,strategy=majority,n=4"), "t")
    assert "beam_width" not in majority["search"]
    dvts = parse_model_args("pretrained=m,prm=p,strategy=dvts,n=8,beam_width=2")
    assert result_identity(dvts, "t")["search"]["beam_width"] == 2


def test_results_fingerprint_follows_the_routing_table_content(tmp_path):
    table = tmp_path / "table.json"
    table.write_text(json.dumps(default_table()))
    args = f"pretrained=m,prm=p,strategy=compute_optimal,n=4,compute_optimal_table={table}"
    before = results_fingerprint(parse_model_args(args))
    data = default_table()
    data["bin_edges"] = [0.1, 0.3, 0.5, 0.7]
    table.write_text(json.dumps(data))
    assert results_fingerprint(parse_model_args(args)) != before


# ------------------------------------------------------------------ options a strategy does not read


@pytest.mark.parametrize(
    ("args", "key", "owners"),
    [
        ("strategy=majority,beam_width=4", "beam_width", "beam_search, dvts or compute_optimal"),
        (
            "prm=p,strategy=best_of_n,lookahead=0",
            "lookahead",
            "beam_search, dvts or compute_optimal",
        ),
        ("prm=p,strategy=dvts,pf_temperature=1.0", "pf_temperature", "particle_filtering or "),
        (
            "prm=p,strategy=dvts,compute_optimal_table=t.json",
            "compute_optimal_table",
            "compute_opt",
        ),
    ],
)
def test_an_option_of_other_strategies_is_refused_whatever_its_value(args, key, owners):
    with pytest.raises(
        ValueError, match=rf"^model_args {key}=\S+ is invalid; accepted: only with "
    ):
        parse_model_args(f"pretrained=m,{args}")
    try:
        parse_model_args(f"pretrained=m,{args}")
    except ValueError as exc:
        assert owners in str(exc) and "\n" not in str(exc)


def test_a_shared_setting_the_strategy_does_not_read_is_recorded_and_logged(caplog):
    caplog.set_level("WARNING", logger="tts_eval.model_args")
    cfg = parse_model_args("pretrained=m,strategy=majority,n=3,selection=naive,agg=min")
    assert (cfg.search.selection, cfg.search.agg) == ("naive", "min")  # recorded as given
    assert "model_args selection=naive: strategy=majority does not read selection" in caplog.text
    assert "strategy=majority does not read agg" in caplog.text


def test_a_recipe_option_the_strategy_does_not_read_is_dropped(tmp_path, caplog):
    caplog.set_level("INFO", logger="tts_eval.model_args")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model_args:\n  pretrained: m\n  prm: p\n  strategy: particle_filtering\n"
        "  beam_width: 4\n  lookahead: 1\n"
    )
    cfg = parse_model_args(f"config={recipe}")  # a recipe serves several strategies
    assert "beam_width" not in cfg.search.settings()
    assert "not read by strategy=particle_filtering, not used: beam_width, lookahead" in caplog.text
    with pytest.raises(ValueError, match="^model_args beam_width=4 is invalid; accepted: only"):
        parse_model_args(f"config={recipe},beam_width=4")  # given for this run: refused
