"""SIGTERM / SIGINT of ``tts-eval eval`` and ``tts-eval sweep``: the searcher is closed on the way
out (no vLLM engine-core or worker process is left behind), one line says what happened, and the
exit status is 128 + the signal (143 for SIGTERM, 130 for SIGINT)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import vllm_available

pytestmark = pytest.mark.slow
STARTED = "search: strategy="  # logged when the first search begins


def start(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    exe = Path(sys.executable).parent / "tts-eval"
    log = tmp_path / "stderr.txt"
    proc = subprocess.Popen(
        [str(exe), *args],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        cwd=tmp_path,
    )
    return proc, log


def wait_for(proc: subprocess.Popen, log: Path, text: str, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in log.read_text():
            return
        if proc.poll() is not None:
            pytest.fail(f"exited early ({proc.returncode}): {log.read_text()[-3000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"{text!r} not logged within {timeout} s")


def interrupt(proc: subprocess.Popen, log: Path, sig: signal.Signals) -> str:
    proc.send_signal(sig)
    proc.wait(timeout=300)
    err = log.read_text()
    assert proc.returncode == 128 + sig, err[-3000:]
    assert "Traceback" not in err
    return err.rstrip("\n").splitlines()[-1].split("\r")[-1]


def sweep_recipe(tmp_path: Path, model_args: dict) -> Path:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        json.dumps(
            {
                "model_args": model_args,
                "sweep": {
                    "task": "math500",
                    "strategies": ["majority"],
                    "budgets": [8],
                    "output_dir": str(tmp_path / "out"),
                    "chunk_size": 4,
                    "limit": 4,
                },
            }
        )
    )
    return recipe


def test_sigterm_ends_eval_in_one_line(tiny_llama, math500_path, tmp_path):
    model_args = f"pretrained={tiny_llama},backend=hf,n=8,max_tokens=3000"
    args = ["eval", "--model", "tts", "--model_args", model_args, "--tasks", "math500"]
    proc, log = start([*args, "--limit", "4"], {"TTS_EVAL_MATH500": str(math500_path)}, tmp_path)
    wait_for(proc, log, STARTED)
    last = interrupt(proc, log, signal.SIGTERM)
    assert last == "tts-eval eval: interrupted (SIGTERM); re-run the same command to start again"


def test_sigint_ends_sweep_in_one_line(tiny_llama, math500_path, tmp_path):
    args = {"pretrained": str(tiny_llama), "backend": "hf", "max_tokens": 3000}
    recipe = sweep_recipe(tmp_path, args)
    env = {"TTS_EVAL_MATH500": str(math500_path)}
    proc, log = start(["sweep", str(recipe), "--no-progress"], env, tmp_path)
    wait_for(proc, log, STARTED)
    last = interrupt(proc, log, signal.SIGINT)
    assert last == "tts-eval sweep: interrupted (SIGINT); re-run the same command to resume"


@pytest.mark.vllm
@pytest.mark.skipif(not vllm_available(), reason="vllm is not installed")
def test_sigterm_of_a_vllm_sweep_leaves_no_process_behind(tiny_llama, math500_path, tmp_path):
    psutil = pytest.importorskip("psutil")
    args = {"pretrained": str(tiny_llama), "backend": "vllm", "max_tokens": 3000}
    recipe = sweep_recipe(tmp_path, args)
    # vLLM's engine core in its own process, as a user who sets VLLM_ENABLE_V1_MULTIPROCESSING=1
    # gets it (tts-eval's CPU default keeps it in the calling process: no child to leave behind).
    env = {
        "TTS_EVAL_MATH500": str(math500_path),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "1",
    }
    proc, log = start(["sweep", str(recipe), "--no-progress"], env, tmp_path)
    wait_for(proc, log, STARTED)
    children = psutil.Process(proc.pid).children(recursive=True)
    names = [c.name() for c in children]
    assert any("EngineCore" in n for n in names), names
    last = interrupt(proc, log, signal.SIGTERM)
    assert last == "tts-eval sweep: interrupted (SIGTERM); re-run the same command to resume"
    _, alive = psutil.wait_procs(children, timeout=30)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], [(p.pid, p.name()) for p in alive]
