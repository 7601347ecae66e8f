"""Interrupting a run on Ray (``data_parallel_size=2``): SIGTERM / SIGINT to the process group of
``tts-eval eval`` ends it with one line and exit status 143 / 130, within seconds, and leaves no
process behind: not the actors, not Ray's own helpers (GCS, raylet, dashboard and runtime-env
agents) of the Ray instance the run started (SIGTERM). A cluster the run joined keeps running;
only the run's actors go (SIGINT, as Ctrl-C sends it).

Before the fix: ``kill -TERM`` exited 134 ("Aborted") after Ray's ``*** SIGTERM received ***``
dump, with Ray's agents left as orphans; Ctrl-C exited 1 after 33 s with ``SystemError:
<cyfunction CoreWorker.wait ...> returned a result with an exception set``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tts_eval import cli

# A search long enough that it is still running when the signal comes (each chunk: 32 samples of
# up to 3000 tokens of a random tiny model), so the actors are busy when the run is interrupted.
MODEL_ARGS = "backend=hf,device=cpu,n=32,max_tokens=3000,data_parallel_size=2"
SEARCHING = "search[majority] x2"  # the progress bar of the first Ray search
EXIT_WITHIN_S = 30  # an actor's chunk runs for minutes; close must not wait for it


def test_a_library_reraised_keyboard_interrupt_keeps_the_signal(monkeypatch, capsys):
    """Ray's blocking waits turn the handler's exception into a fresh KeyboardInterrupt; the exit
    status and line still name the signal that arrived (SIGTERM here, not SIGINT)."""

    def run(argv):
        try:
            cli._raise_interrupted(signal.SIGTERM, None)
        except KeyboardInterrupt:  # what Ray's check_signals does with it
            raise KeyboardInterrupt from None

    monkeypatch.setattr(cli, "_received", [])
    monkeypatch.setitem(cli.COMMANDS, "eval", ("test", run))
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    try:
        assert issubclass(cli.Interrupted, KeyboardInterrupt)
        assert cli.run_command("eval", []) == 143
    finally:
        for sig in cli.SIGNALS:  # the handler armed "exit at once" for a second signal
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else 0)
    assert capsys.readouterr().err.startswith("tts-eval eval: interrupted (SIGTERM)")


def test_ray_init_does_not_take_over_the_signal_handlers():
    """``ray.init`` replaces the SIGTERM handler; the one installed before comes back."""
    from tts_eval.runtime.ray import keep_signal_handlers

    def ours(signum, frame):
        pass

    def rays(signum, frame):
        pass

    before = {sig: signal.getsignal(sig) for sig in cli.SIGNALS}
    try:
        signal.signal(signal.SIGTERM, ours)
        with keep_signal_handlers():
            signal.signal(signal.SIGTERM, rays)  # what ray.init does
            signal.signal(signal.SIGINT, rays)
        assert signal.getsignal(signal.SIGTERM) is ours
        assert signal.getsignal(signal.SIGINT) is before[signal.SIGINT]
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # nothing of ours: Ray's handler stays
        with keep_signal_handlers():
            signal.signal(signal.SIGTERM, rays)
        assert signal.getsignal(signal.SIGTERM) is rays
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------------------------
# The real thing: tts-eval eval on two Ray actors, interrupted
# --------------------------------------------------------------------------------------------


def start_eval(tiny_llama: Path, math500_path: Path, tmp_path: Path, env: dict[str, str]):
    exe = Path(sys.executable).parent / "tts-eval"
    log = tmp_path / "stderr.txt"
    root = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen(
        [
            str(exe),
            "eval",
            "--model",
            "tts",
            "--model_args",
            f"pretrained={tiny_llama},{MODEL_ARGS}",
            "--tasks",
            "math500",
            "--limit",
            "4",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        env={
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TTS_EVAL_MATH500": str(math500_path),
            # Ray's workers import this checkout, as the driver does
            "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
            **env,
        },
        cwd=tmp_path,
        start_new_session=True,  # its own process group, as a shell job is
    )
    return proc, log


def wait_until_searching(proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if SEARCHING in log.read_text(errors="replace"):
            time.sleep(2)  # the actors are inside their chunks
            return
        if proc.poll() is not None:
            pytest.fail(f"exited early ({proc.returncode}): {log.read_text()[-3000:]}")
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"{SEARCHING!r} not logged within {timeout} s")


def processes_of(psutil, proc: subprocess.Popen, log: Path) -> list:
    """Every process of the run: its process group, its descendants (Ray's actors run in process
    groups of their own) and its actors (children of a joined cluster's raylet)."""
    found = {p.pid: p for p in psutil.Process(proc.pid).children(recursive=True)}
    for pid in actor_pids(log.read_text(errors="replace")):
        try:
            found.setdefault(pid, psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == proc.pid:
                found.setdefault(p.pid, p)
        except (ProcessLookupError, psutil.Error):
            pass
    return list(found.values())


def alive(psutil, processes: list) -> list[tuple[int, str]]:
    out = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append((p.pid, p.name()))
        except psutil.NoSuchProcess:
            pass
    return out


def actor_pids(text: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"ray worker \d ready on \S+ \(pid (\d+)\)", text)]


def interrupt_group(psutil, proc: subprocess.Popen, log: Path, sig: signal.Signals):
    """Signal the whole process group (what Ctrl-C and ``kill -TERM -PGID`` do); returns the
    run's processes of just before (pid -> name), the stderr text and the seconds to exit."""
    processes = processes_of(psutil, proc, log)
    names = {p.pid: p.name() for p in processes}
    t0 = time.monotonic()
    os.killpg(proc.pid, sig)
    proc.wait(timeout=300)
    return processes, names, log.read_text(errors="replace"), time.monotonic() - t0


def check_one_line(proc: subprocess.Popen, err: str, sig: signal.Signals, seconds: float) -> None:
    assert proc.returncode == 128 + sig, err[-3000:]
    assert "Traceback" not in err and "received at time=" not in err, err[-3000:]
    last = err.rstrip("\n").splitlines()[-1].split("\r")[-1]
    assert last == (
        f"tts-eval eval: interrupted ({sig.name}); re-run the same command to start again"
    ), err[-3000:]
    assert seconds < EXIT_WITHIN_S, f"{seconds:.1f} s to exit"


def left_behind(psutil, processes: list) -> list[tuple[int, str]]:
    """What still runs 2 s after the exit (killed here, so a failure leaves nothing either)."""
    _, still = psutil.wait_procs(processes, timeout=2)
    left = alive(psutil, still)
    for pid, _ in left:
        os.kill(pid, signal.SIGKILL)
    return left


@pytest.mark.slow
def test_sigterm_to_a_ray_run_leaves_no_process(tiny_llama, math500_path, tmp_path):
    """``kill -TERM -PGID`` of a run that started its own Ray instance."""
    sig = signal.SIGTERM
    pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")
    env = {"RAY_ADDRESS": ""}  # start its own Ray instance, as a user's first run does
    proc, log = start_eval(tiny_llama, math500_path, tmp_path, env)
    try:
        wait_until_searching(proc, log)
        processes, names, err, seconds = interrupt_group(psutil, proc, log, sig)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    ray_parts = {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"}
    assert ray_parts <= set(names.values()), names
    assert len(actor_pids(err)) == 2 and set(actor_pids(err)) <= set(names), names
    check_one_line(proc, err, sig, seconds)
    assert left_behind(psutil, processes) == []


@pytest.mark.slow
def test_ctrl_c_to_a_run_that_joined_a_cluster_keeps_the_cluster(
    ray_cluster, tiny_llama, math500_path, tmp_path
):
    """SIGINT to the run's process group (Ctrl-C): its actors go, the cluster it joined stays."""
    psutil = pytest.importorskip("psutil")
    address = ray_cluster.get_runtime_context().gcs_address
    proc, log = start_eval(tiny_llama, math500_path, tmp_path, {"RAY_ADDRESS": address})
    try:
        wait_until_searching(proc, log)
        processes, names, err, seconds = interrupt_group(psutil, proc, log, signal.SIGINT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    check_one_line(proc, err, signal.SIGINT, seconds)
    assert len(actor_pids(err)) == 2 and set(actor_pids(err)) <= set(names), names
    assert left_behind(psutil, processes) == []
    assert ray_cluster.is_initialized() and ray_cluster.cluster_resources().get("CPU") == 2

    @ray_cluster.remote(num_cpus=2)  # both CPUs are free again: the actors released them
    def answer() -> int:
        return 42

    assert ray_cluster.get(answer.remote(), timeout=60) == 42
