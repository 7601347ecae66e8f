"""The grader's only timeout: symbolic comparisons run in persistent helper processes.

``call(op, a, b, timeout)`` sends one comparison (an op of ``symbolic.OPS`` over two LaTeX
strings) to a helper process started with :mod:`subprocess` (``python -m
tts_eval.grader._worker``) and waits at most ``timeout`` seconds for the answer. On timeout the
helper is killed (sympy stuck in C code included) and a fresh one is started on the next call.
This works the same from the main thread, from other threads and from daemonic worker processes
(which may not start ``multiprocessing`` children but may start subprocesses); it never touches
signals, so it cannot clash with a host program's alarms.

Helpers are pooled (at most ``MAX_WORKERS``), one request at a time each, guarded by a lock; a
forked child process gets a fresh pool instead of sharing its parent's pipes. The first helper of
a process is started in the calling thread (importing sympy and warming the LaTeX parser, 1-4 s):
that one-time cost is not counted against ``timeout`` (it is bounded by ``STARTUP_TIMEOUT_S``).
Two warm spare helpers are kept from then on, so a helper killed on timeout is replaced at once
(and a new spare starts in the background). Only when several timeouts in a row use up the spares
does a call wait for a restarting helper; that wait is not counted either (a verdict must not
depend on machine load), while waiting for a helper busy with another thread's call is.

What this module does not do: decide anything about answers, or cache (``equiv`` caches results).
Linux/macOS only (``select`` on pipes).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

MAX_WORKERS = 3  # one busy + two warm spares for a single caller; threads share them
STARTUP_TIMEOUT_S = 60.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class GraderTimeout(Exception):
    """A symbolic comparison did not finish in time (its helper process was killed)."""


class _Worker:
    """One helper process speaking JSON lines over its stdin/stdout."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [_PACKAGE_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tts_eval.grader._worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self._buf = b""
        line = self._readline(time.monotonic() + STARTUP_TIMEOUT_S)
        if line != "ready":
            self.kill()
            raise RuntimeError(f"grader helper process failed to start (said {line!r})")

    def _readline(self, deadline: float) -> str | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def ask(self, op: str, a: str, b: str, timeout: float) -> object:
        assert self.proc.stdin is not None
        deadline = time.monotonic() + timeout
        try:
            self.proc.stdin.write(json.dumps([op, a, b]).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as e:
            raise GraderTimeout(f"helper process gone: {e}") from e
        line = self._readline(deadline)
        if line is None:
            raise GraderTimeout(f"{op} comparison exceeded {timeout:.2f} s")
        return json.loads(line)["r"]

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001 - best effort on an already dead process
            pass


class _Pool:
    """Ready helpers. After a helper is killed its replacement starts at once in the background;
    only the very first helper of a process is started in the caller's thread (not timed)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.idle: list[_Worker] = []
        self.count = 0  # ready + busy + starting
        self.ever_ready = False
        self._busy = 0
        self.cond = threading.Condition()

    def _start_background(self) -> None:
        def run() -> None:
            try:
                w = _Worker()
            except Exception:  # noqa: BLE001 - logged; callers time out and retry later
                logger.warning("grader helper process failed to restart", exc_info=True)
                with self.cond:
                    self.count -= 1
                    self.cond.notify_all()
                return
            with self.cond:
                self.idle.append(w)
                self.cond.notify_all()

        threading.Thread(target=run, name="tts-grader-helper-start", daemon=True).start()

    def acquire(self, timeout: float) -> _Worker:
        """A ready helper. Waiting for one that is still starting is not counted (start-up is not
        comparison work); waiting while all helpers are busy with other threads' calls is."""
        deadline = time.monotonic() + timeout
        startup_deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with self.cond:
            while not self.idle:
                if self.count < MAX_WORKERS:
                    self.count += 1
                    if not self.ever_ready:
                        break  # first helper of this process: start it here, untimed
                    self._start_background()
                now = time.monotonic()
                starting = self.count - self._busy
                limit = startup_deadline if starting > 0 else deadline
                if now >= limit:
                    raise GraderTimeout("no grader helper process ready in time")
                self.cond.wait(limit - now)
            else:
                self._busy += 1
                return self.idle.pop()
        try:
            w = _Worker()
        except BaseException:
            with self.cond:
                self.count -= 1
                self.cond.notify_all()
            raise
        with self.cond:
            self._busy += 1
            self.ever_ready = True
            while self.count < MAX_WORKERS:  # warm spares take over at once when one is killed
                self.count += 1
                self._start_background()
        return w

    def release(self, worker: _Worker, healthy: bool) -> None:
        if not healthy:
            worker.kill()
        with self.cond:
            self._busy -= 1
            if healthy:
                self.idle.append(worker)
            else:
                self._start_background()  # the replacement keeps the slot
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            idle, self.idle = self.idle, []
            self.count -= len(idle)
        for w in idle:
            w.kill()


_pool: _Pool | None = None
_pool_lock = threading.Lock()


def _get_pool() -> _Pool:
    global _pool
    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid():
            _pool = _Pool()  # a forked child must not share its parent's pipes
        return _pool


def call(op: str, a: str, b: str, timeout: float) -> object:
    """Run ``symbolic.run_op(op, a, b)`` in a helper process, at most ``timeout`` seconds.

    Raises :class:`GraderTimeout` when it does not finish in time.
    """
    pool = _get_pool()
    worker = pool.acquire(timeout)
    healthy = False
    try:
        result = worker.ask(op, a, b, timeout)
        healthy = True
        return result
    finally:
        pool.release(worker, healthy)


def prestart(timeout: float = STARTUP_TIMEOUT_S) -> bool:
    """Start this process's helpers now and wait until all are ready; False if not in time.

    Optional: the grader starts them on first use anyway. Useful before timing calls.
    """
    pool = _get_pool()
    pool.release(pool.acquire(timeout), healthy=True)
    deadline = time.monotonic() + timeout
    with pool.cond:
        while len(pool.idle) < pool.count:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            pool.cond.wait(left)
    return True


def shutdown() -> None:
    """Stop the idle helper processes of this process (they also exit when it does)."""
    with _pool_lock:
        pool = _pool
    if pool is not None and pool.pid == os.getpid():
        pool.close()


atexit.register(shutdown)
