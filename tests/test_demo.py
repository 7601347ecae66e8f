"""``tts-eval demo``: the main job in small, end to end on tiny models; its defaults."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tts_eval.workflow.demo import DemoSettings, budgets, to_markdown, trained_prm


@pytest.mark.slow
def test_demo_runs_every_method_and_writes_its_table_and_figure(scripted_llama, tiny_prm, tmp_path):
    exe = Path(sys.executable).parent / "tts-eval"
    out = tmp_path / "demo"
    args = [
        "demo", "--policy", str(scripted_llama), "--prm", str(tiny_prm), "--prm-type", "rlhflow",
        "--problems", "3", "--n", "2", "--backend", "hf", "--max-tokens", "16",
        "--iterations", "3", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    result = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "demo.json").read_text())
    got = [(row["method"], row["n"]) for row in report["rows"]]
    assert got == [
        ("majority", 1), ("best-of-N (weighted)", 1), ("majority", 2),
        ("best-of-N (weighted)", 2), ("beam search", 2), ("dvts", 2),
    ]  # fmt: skip
    for row in report["rows"]:
        assert 0 <= row["ci"][0] <= row["mean"] <= row["ci"][1] <= 1
    assert report["problems"] == 3 and report["prm_trained"] is None  # a PRM was given
    assert (out / "demo.png").stat().st_size > 1000
    assert (out / "demo.md").read_text().strip() == to_markdown(report)
    assert "| beam search | 2 |" in result.stdout


def test_the_default_prm_is_the_newest_trained_one(tmp_path):
    assert trained_prm(tmp_path) is None
    for name in ("prm-a", "prm-b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "tts_eval_prm.json").write_text("{}")
        time.sleep(0.01)
    assert trained_prm(tmp_path) == tmp_path / "prm-b"


def test_an_untrained_prm_is_named_as_such_and_settings_are_checked():
    report = {
        "policy": "/m/SmolLM2", "prm": "/m/SmolLM2", "prm_trained": False, "problems": 1,
        "backend": "hf", "load_seconds": 1.0, "seconds": 2.0,
        "rows": [{"method": "majority", "n": 1, "mean": 0.5, "ci": [0.0, 1.0],
                  "policy_tokens": 10.0, "prm_tokens": 0.0, "seconds": None}],
    }  # fmt: skip
    assert "untrained" in to_markdown(report)
    assert budgets(16) == [1, 2, 4, 8, 16] and budgets(6) == [1, 2, 4, 6]
    with pytest.raises(ValueError, match="tts-eval demo n=0 is invalid"):
        DemoSettings(n=0)
    with pytest.raises(ValueError, match="prm_type"):
        DemoSettings(prm_type="rlhflow")
