"""lm-eval flags that ``--model tts`` used to take silently: ``--device`` (``cuda:0`` on a machine
without a GPU ran on CPU, and the results recorded ``cuda:0``) and ``--num_fewshot`` on our
zero-shot tasks (ignored with an INFO line). Both are checked before any model loads.
"""

from __future__ import annotations

import argparse

import pytest
from test_lm_eval_errors import last_line, tts_eval

from tts_eval import plugin
from tts_eval.model_args import parse_model_args
from tts_eval.runtime import local


def run_command_config(argv: list[str]):
    """What lm-eval's ``run`` command builds from ``argv`` (its ``EvaluatorConfig``)."""
    from lm_eval._cli.run import Run
    from lm_eval.config.evaluate_config import EvaluatorConfig

    plugin.register()
    parser = argparse.ArgumentParser()
    Run.create(parser.add_subparsers())
    return EvaluatorConfig.from_cli(parser.parse_args(["run", *argv]))


@pytest.mark.parametrize(("flag", "given"), [([], None), (["--device", "cuda:0"], "cuda:0")])
def test_the_run_command_notes_whether_device_was_given(flag, given):
    config = run_command_config(["--model", "tts", "--tasks", "arith", *flag])
    assert config.device == "cuda:0"  # lm-eval's default: the flag alone cannot tell
    assert plugin._cli_device == [given]
    plugin._cli_device.clear()


def test_a_device_given_in_the_config_yaml_counts_as_given(tmp_path):
    yaml = tmp_path / "run.yaml"
    yaml.write_text("model: tts\ntasks: [arith]\ndevice: cuda:0\n")
    run_command_config(["--config", str(yaml)])
    assert plugin._cli_device == ["cuda:0"]
    plugin._cli_device.clear()


@pytest.mark.parametrize(
    ("extra", "device"),
    [
        ({"device": "cuda:0", "device_flag": "cuda:0"}, "cuda:0"),  # --device cuda:0
        ({"device": "cuda:0", "device_flag": None}, "auto"),  # no --device
        ({"device": "cpu", "device_flag": "cpu"}, "cpu"),
        ({"device": "cuda:0"}, "auto"),  # built outside simple_evaluate: cuda:0 is the default
        ({"device": "cuda:1"}, "cuda:1"),
    ],
)
def test_only_a_device_the_user_gave_reaches_the_engine(extra, device):
    assert parse_model_args("pretrained=x", extra=extra).engine.device == device
    given = parse_model_args("pretrained=x,device=cpu", extra=extra).engine.device
    assert given == "cpu"  # model_args win over the flag


@pytest.mark.parametrize(
    ("device", "visible", "message"),
    [
        ("cuda:0", 0, "model_args device=cuda:0 is invalid; accepted: cpu or auto (no cuda device"),
        ("cuda", 0, "model_args device=cuda is invalid; accepted: cpu or auto (no cuda device is"),
        ("cuda:1", 1, "model_args device=cuda:1 is invalid; accepted: cuda:0 to cuda:0, cuda, cpu"),
        ("xpu:0", 0, "model_args device=xpu:0 is invalid; accepted: cpu or auto (no xpu device"),
    ],
)
def test_a_device_that_is_not_visible_is_refused_before_loading(
    monkeypatch, device, visible, message
):
    monkeypatch.setattr(local, "visible_devices", lambda kind: visible)
    with pytest.raises(ValueError) as info:
        local.check_devices(parse_model_args(f"pretrained=x,device={device}"))
    assert str(info.value).startswith(message)
    prm = parse_model_args(f"pretrained=x,prm=y,prm_device={device}")
    with pytest.raises(ValueError, match=f"^model_args prm_device={device} is invalid"):
        local.check_devices(prm)


def test_visible_devices_are_there(monkeypatch):
    monkeypatch.setattr(local, "visible_devices", lambda kind: 2)
    local.check_devices(parse_model_args("pretrained=x,device=cuda:1,prm=y,prm_device=cuda"))
    local.check_devices(parse_model_args("pretrained=x,backend=openai,base_url=http://h/v1"))


def test_the_results_record_the_device_the_policy_ran_on():
    results = {"config": {"device": "cuda:0", plugin.POLICY_DEVICE_KEY: "cpu"}}
    plugin.record_device(results)
    assert results["config"] == {"device": "cpu"}


def test_num_fewshot_is_refused_on_our_zero_shot_tasks():
    assert {"math500", "arith", "tts_eval"} <= plugin.zero_shot_tasks()
    for shots in (None, 0):
        plugin.check_num_fewshot(shots, ["math500"])
    plugin.check_num_fewshot(5, ["gsm8k"])  # lm-eval's own tasks take it
    with pytest.raises(ValueError) as info:
        plugin.check_num_fewshot(2, ["gsm8k", "math500"])
    assert str(info.value).startswith(
        "lm_eval --num_fewshot=2 is invalid with --tasks math500; accepted: 0 or no flag "
        "(--model tts runs these tasks zero-shot"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--num_fewshot", "2"], "lm_eval --num_fewshot=2 is invalid with --tasks arith;"),
        pytest.param(
            ["--device", "cuda:0"],
            "model_args device=cuda:0 is invalid; accepted: cpu or auto",
            marks=pytest.mark.skipif(
                bool(local.visible_devices("cuda")),
                reason="a CUDA device is visible here (the refusal is for machines without one)",
            ),
        ),
    ],
)
def test_tts_eval_eval_refuses_in_one_line(tiny_llama, tmp_path, extra, message):
    args = ["--model", "tts", "--model_args", f"pretrained={tiny_llama},backend=hf"]
    proc = tts_eval(["eval", *args, "--tasks", "arith", "--limit", "2", *extra], {}, tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert last_line(proc.stderr).startswith(f"tts-eval eval: error: {message}")
    assert "loaded" not in proc.stderr  # nothing was loaded
