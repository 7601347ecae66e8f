"""The grader's only time limit: symbolic comparisons run in helper processes on a CPU budget.

``run(op, a, b, cpu_budget_s)`` sends one comparison (an op of ``symbolic.OPS`` over two LaTeX
strings) to a helper process and returns its :class:`Answer`, or raises :class:`GraderTimeout`
when the comparison used up ``cpu_budget_s`` seconds of the *helper's own CPU time*. CPU time, not
wall time: a comparison gets the same budget whether the machine is idle or overloaded, so whether
it finishes does not depend on machine load (see ``_worker`` for how the helper enforces it). A
separate, much larger wall-clock limit (``wall_limit_s``) only catches a hung helper.

Helpers are forked from one warm *template* process per host process (``python -m
tts_eval.grader._worker``, started with :mod:`subprocess`: this works from threads and from
daemonic worker processes, and never touches the host's signals). The template imports sympy and
warms the LaTeX parser once (about 1 s of CPU); a fork of it is ready in milliseconds, so every
helper starts in the same warm state. A helper that timed out is discarded, and ``fresh=True``
asks for a brand-new one (``equiv`` retries a timed-out comparison that way). The first call of a
process starts the template in the calling thread (bounded by ``STARTUP_TIMEOUT_S`` of wall time,
not charged to any budget); :func:`prestart` does it ahead of time.

Helpers are pooled: at most ``MAX_HELPERS`` at once, one request at a time each; a thread that
finds all of them busy waits (not charged to its budget; bounded by ``WAIT_LIMIT_S``). A forked
host process gets a fresh pool instead of sharing its parent's sockets.

What this module does not do: decide anything about answers, retry, or cache (``equiv`` does).
POSIX only (``fork``, ``select`` on sockets, ``SCM_RIGHTS``).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MAX_HELPERS = max(4, min(16, os.cpu_count() or 1))
PRESTART_HELPERS = 2  # forked by prestart(), so that the first calls do not even wait for a fork
STARTUP_TIMEOUT_S = 120.0  # wall clock: the template's start (import sympy, warm-up), loaded or not
SPAWN_TIMEOUT_S = 60.0  # wall clock: a forked helper says ready
WAIT_LIMIT_S = 600.0  # wall clock: waiting for a free helper (safety only)
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def wall_limit_s(cpu_budget_s: float) -> float:
    """The wall-clock safety limit of one request: only a hung helper ever reaches it."""
    return 30.0 + 30.0 * cpu_budget_s


class GraderTimeout(Exception):
    """A symbolic comparison could not finish: CPU budget used up, helper died or hung."""

    def __init__(self, message: str, cpu_s: float = 0.0) -> None:
        super().__init__(message)
        self.cpu_s = cpu_s  # helper CPU seconds spent on the failed attempt


@dataclass(frozen=True)
class Answer:
    """The result of one finished comparison and the helper CPU seconds it took."""

    value: object
    cpu_s: float


class _Lines:
    """Reads newline-terminated lines from a file descriptor with a wall-clock deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.eof = False

    def readline(self, deadline: float) -> str | None:
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                return None
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.eof = True
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace")


class _Helper:
    """One forked helper, spoken to over a Unix socket (JSON lines)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.lines = _Lines(sock.fileno())
        line = self.lines.readline(deadline)
        if not line or not line.startswith("ready "):
            sock.close()
            raise GraderTimeout(f"grader helper did not start (said {line!r})")
        self.pid = int(line.split()[1])

    def ask(self, op: str, a: str, b: str, budget: float) -> Answer:
        try:
            self.sock.sendall(json.dumps([op, a, b, budget]).encode() + b"\n")
        except OSError as e:
            raise GraderTimeout(f"grader helper gone: {e}") from e
        line = self.lines.readline(time.monotonic() + wall_limit_s(budget))
        if line is None and self.lines.eof:
            raise GraderTimeout(f"{op} comparison killed at its CPU limit", cpu_s=budget)
        if line is None:
            raise GraderTimeout(f"{op} comparison hung past {wall_limit_s(budget):.0f} s wall")
        msg = json.loads(line)
        if "timeout" in msg:
            cpu = float(msg["timeout"])
            raise GraderTimeout(f"{op} comparison used up its {budget:.2f} s CPU budget", cpu)
        return Answer(msg["r"], float(msg["cpu"]))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class _Template:
    """The warm fork server: started once per host process, forks helpers on request."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [_PACKAGE_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tts_eval.grader._worker", str(theirs.fileno())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.ctl = ours
        assert self.proc.stdout is not None
        line = _Lines(self.proc.stdout.fileno()).readline(time.monotonic() + STARTUP_TIMEOUT_S)
        if not line or not line.startswith("ready"):
            self.close()
            raise GraderTimeout(f"grader template process did not start (said {line!r})")
        logger.debug("grader template process started (warm-up %s s)", line.split()[-1])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def spawn(self) -> _Helper:
        ours, theirs = socket.socketpair()
        try:
            socket.send_fds(self.ctl, [b"F"], [theirs.fileno()])
        except OSError as e:
            ours.close()
            raise GraderTimeout(f"grader template process gone: {e}") from e
        finally:
            theirs.close()
        return _Helper(ours, time.monotonic() + SPAWN_TIMEOUT_S)

    def kill(self, pid: int) -> None:
        try:
            self.ctl.send(f"K{pid}".encode())
        except OSError:
            pass  # the template is gone; the helper exits when its socket closes

    def close(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001 - best effort on an already dead process
            pass
        self.ctl.close()


class _Pool:
    """Idle helpers plus the template they are forked from."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.idle: list[_Helper] = []
        self.count = 0  # idle + busy + being forked
        self.cond = threading.Condition()
        self._template: _Template | None = None
        self._template_lock = threading.Lock()

    def template(self) -> _Template:
        with self._template_lock:
            if _exiting:
                raise GraderTimeout("grader not started: the process is exiting")
            if self._template is None or not self._template.alive():
                if self._template is not None:
                    self._template.close()
                self._template = None
                self._template = _Template()
            return self._template

    def _spawn(self) -> _Helper:
        try:
            return self.template().spawn()
        except GraderTimeout:
            with self._template_lock:  # a broken template is restarted on the next spawn
                if self._template is not None and not self._template.alive():
                    self._template.close()
                    self._template = None
            raise

    def acquire(self, fresh: bool) -> _Helper:
        """An idle helper, or a newly forked one (always, when ``fresh``)."""
        deadline = time.monotonic() + WAIT_LIMIT_S
        with self.cond:
            while True:
                if self.idle and not fresh:
                    return self.idle.pop()
                if self.count < MAX_HELPERS:
                    self.count += 1
                    break
                if self.idle:  # fresh and full: retire an idle helper to make room
                    self._retire(self.idle.pop(0))
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GraderTimeout("no grader helper free in time")
                self.cond.wait(left)
        try:
            return self._spawn()
        except BaseException:
            with self.cond:
                self.count -= 1
                self.cond.notify_all()
            raise

    def _retire(self, helper: _Helper) -> None:
        helper.close()
        tpl = self._template
        if tpl is not None:
            tpl.kill(helper.pid)

    def release(self, helper: _Helper, healthy: bool) -> None:
        with self.cond:
            if healthy:
                self.idle.append(helper)
            else:
                self._retire(helper)
                self.count -= 1
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            idle, self.idle = self.idle, []
            self.count -= len(idle)
            for h in idle:
                self._retire(h)
        with self._template_lock:
            if self._template is not None:
                self._template.close()
                self._template = None


_pool: _Pool | None = None
_pool_lock = threading.Lock()
_exiting = False  # set at interpreter exit (_at_exit): nothing starts any more


def _get_pool() -> _Pool:
    global _pool
    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid():
            _pool = _Pool()  # a forked child must not share its parent's sockets
        return _pool


def run(op: str, a: str, b: str, cpu_budget_s: float, fresh: bool = False) -> Answer:
    """Run ``symbolic.run_op(op, a, b)`` in a helper, within ``cpu_budget_s`` of its CPU time.

    ``fresh``: use a newly forked helper (the template's warm state, no history). Raises
    :class:`GraderTimeout` (with the CPU seconds spent) when the comparison cannot finish.
    """
    pool = _get_pool()
    try:
        helper = pool.acquire(fresh)
    except (OSError, RuntimeError, ValueError) as e:
        raise GraderTimeout(f"no grader helper: {e}") from e
    healthy = False
    try:
        answer = helper.ask(op, a, b, cpu_budget_s)
        healthy = True
        return answer
    finally:
        pool.release(helper, healthy)


def call(op: str, a: str, b: str, timeout: float) -> object:
    """``run(op, a, b, timeout).value``: ``timeout`` is in seconds of the helper's CPU time."""
    return run(op, a, b, timeout).value


def prestart(timeout: float = STARTUP_TIMEOUT_S) -> bool:
    """Start this process's template and ``PRESTART_HELPERS`` helpers now; False if that fails.

    Optional: the grader starts them on first use anyway. ``timeout`` is accepted for
    compatibility; start-up is bounded by ``STARTUP_TIMEOUT_S`` and ``SPAWN_TIMEOUT_S``. A
    start cut short because the process is exiting (a run that stopped on an error while this
    ran in the background) is logged at debug level only: nothing follows that error's line.
    """
    del timeout
    pool = _get_pool()
    helpers = []
    try:
        for _ in range(min(PRESTART_HELPERS, MAX_HELPERS)):
            helpers.append(pool.acquire(fresh=False))
    except (GraderTimeout, OSError, RuntimeError) as exc:
        if _exiting:
            logger.debug("grader warm-up stopped: the process is exiting (%s)", exc)
        else:
            logger.warning("grader helper processes failed to start", exc_info=True)
        return False
    finally:
        for h in helpers:
            pool.release(h, healthy=True)
    return True


def shutdown() -> None:
    """Stop this process's idle helpers and its template (they also exit when it does)."""
    with _pool_lock:
        pool = _pool
    if pool is not None and pool.pid == os.getpid():
        pool.close()


def _at_exit() -> None:
    """At interpreter exit: no new template from now on, then :func:`shutdown`."""
    global _exiting
    _exiting = True
    shutdown()


atexit.register(_at_exit)
