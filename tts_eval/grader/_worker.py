"""Entry point of the grader's fork-server process (started by ``bounded``; not for direct use).

``python -m tts_eval.grader._worker <control fd>``: the *template* imports sympy and warms the
LaTeX parser once, says ``ready`` on stdout, then serves its control socket (a Unix datagram
socket inherited from the parent): ``F`` with one passed socket forks a *helper* that serves
comparisons on that socket; ``K <pid>`` kills (and reaps) one of its helpers. It exits when its
stdin closes (the parent is gone). Forking a warm template takes milliseconds, so every helper
starts in the same warm state and a helper can be discarded after any timeout.

A helper reads one JSON request ``[op, a, b, cpu_budget_s]`` per line and answers one line:
``{"r": result, "cpu": s}`` (``result`` None when the comparison raised) or ``{"timeout": s}``
when the comparison used up ``cpu_budget_s`` seconds of *its own CPU time* (not wall time, so
machine load does not change the outcome); it then exits, and the parent uses a fresh helper.
The budget is enforced twice: a profiling timer (``ITIMER_PROF``, CPU time) interrupts Python
code; ``RLIMIT_CPU`` (whole seconds, a little above the budget) makes the kernel kill a helper
stuck in C code. What this module does not do: decide anything about answers (``symbolic``) or
pool helpers (``bounded``). POSIX only.
"""

from __future__ import annotations

import json
import math
import os
import resource
import select
import signal
import socket
import sys
import time

HARD_GRACE_S = 1.0  # RLIMIT_CPU backstop: budget + grace, rounded up to whole seconds
_REARM_S = 0.05  # after expiry the timer fires again every 50 ms of CPU (in case one is swallowed)


class _OutOfCPU(BaseException):
    """Raised by the CPU timer; a BaseException so that ``except Exception`` cannot swallow it."""


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run_budgeted(op: str, a: str, b: str, budget: float) -> dict:
    """One comparison under a CPU budget of this process: its answer line as a dict."""
    from tts_eval.grader import symbolic

    expired = False

    def on_timer(signum, frame):  # noqa: ARG001 - signal handler signature
        nonlocal expired
        expired = True
        raise _OutOfCPU

    start = _cpu_s()
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(start + budget + HARD_GRACE_S)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    signal.signal(signal.SIGPROF, on_timer)
    result = None
    try:
        signal.setitimer(signal.ITIMER_PROF, max(budget, 1e-6), _REARM_S)
        result = symbolic.run_op(op, a, b)
    except _OutOfCPU:
        expired = True
    except Exception:  # noqa: BLE001 - a failed comparison answers None, never kills the helper
        result = None
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
    used = _cpu_s() - start
    if expired or used > budget:  # an interrupt swallowed by library code still counts
        return {"timeout": used}
    return {"r": result, "cpu": used}


def _serve(sock: socket.socket) -> None:
    """A helper's loop: requests in, answers out, until EOF or a timeout."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a kill by RLIMIT_CPU leaves no core file
    sock.sendall(f"ready {os.getpid()}\n".encode())
    for line in sock.makefile("rb"):
        try:
            op, a, b, budget = json.loads(line)
            answer = _run_budgeted(op, a, b, float(budget))
        except Exception:  # noqa: BLE001 - a malformed request answers None
            answer = {"r": None, "cpu": 0.0}
        sock.sendall(json.dumps(answer).encode() + b"\n")
        if "timeout" in answer:
            break  # interrupted sympy may hold half-updated caches: never reuse this helper
    os._exit(0)


def _fork_helper(ctl: socket.socket, fd: int) -> int:
    """Fork one helper serving socket ``fd``; the parent (template) returns the child's pid."""
    pid = os.fork()
    if pid == 0:
        try:
            ctl.close()
            os.close(0)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _serve(socket.socket(fileno=fd))
        finally:
            os._exit(0)
    os.close(fd)
    return pid


def _reap(children: set[int]) -> None:
    for pid in list(children):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            children.discard(pid)


def _kill(children: set[int], pid: int) -> None:
    """Kill one helper; only a not yet reaped child, so a recycled pid is never hit."""
    if pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        children.discard(pid)


def _template(ctl_fd: int) -> None:
    ctl = socket.socket(fileno=ctl_fd)
    children: set[int] = set()
    stdin_fd = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([stdin_fd, ctl], [], [], 1.0)
        _reap(children)
        if stdin_fd in ready and not os.read(stdin_fd, 4096):
            return  # the parent is gone; helpers exit when their sockets close
        if ctl not in ready:
            continue
        msg, fds, _, _ = socket.recv_fds(ctl, 64, 1)
        if msg.startswith(b"F") and fds:
            children.add(_fork_helper(ctl, fds[0]))
        elif msg.startswith(b"K"):
            for fd in fds:
                os.close(fd)
            _kill(children, int(msg[1:]))
        else:
            for fd in fds:
                os.close(fd)


def main() -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints of libraries must not corrupt the protocol
    t0 = time.monotonic()
    from tts_eval.grader import symbolic

    symbolic.warm_up()  # load sympy and the LaTeX parser once; every helper inherits it warm
    out.write(f"ready {time.monotonic() - t0:.3f}\n")
    out.flush()
    _template(int(sys.argv[1]))


if __name__ == "__main__":
    main()
