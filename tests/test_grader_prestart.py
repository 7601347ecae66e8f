"""The grader's background warm-up (``bounded.prestart``, started when ``--model tts`` is built)
says nothing when the process exits under it: a run that stops at start-up with a one-line error
used to print a ``GraderTimeout`` traceback after that line."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# The warm-up is held inside its fork request until the process exits: the exit kills the
# template (bounded's atexit hook), then the request goes on (this script's atexit hook, which
# runs after bounded's) and fails, as it did when a run stopped on an error under load.
EXIT_DURING_WARM_UP = textwrap.dedent(
    """
    import atexit, logging, sys, threading

    go = threading.Event()
    warm_up = None

    def let_the_warm_up_fail():
        go.set()
        warm_up.join(60)
        print("warm-up finished" if not warm_up.is_alive() else "warm-up hung")

    atexit.register(let_the_warm_up_fail)  # before bounded's own hook: runs after it
    logging.basicConfig(level=logging.WARNING)
    from tts_eval.grader import bounded

    held = threading.Event()
    spawn = bounded._Template.spawn

    def held_spawn(self):
        held.set()
        go.wait(60)
        return spawn(self)

    bounded._Template.spawn = held_spawn
    warm_up = threading.Thread(target=bounded.prestart, daemon=True)
    warm_up.start()
    held.wait(120)
    print("tts-eval eval: error: the one line", file=sys.stderr)
    sys.exit(2)
    """
)


def test_an_exit_during_the_warm_up_prints_nothing_after_the_error_line():
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_DURING_WARM_UP], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 2
    assert proc.stdout.strip() == "warm-up finished"  # it did fail after the exit began
    assert proc.stderr.splitlines() == ["tts-eval eval: error: the one line"], proc.stderr


def test_no_template_starts_once_the_process_is_exiting():
    code = (
        "from tts_eval.grader import bounded\n"
        "bounded._at_exit()\n"
        "print(bounded.prestart(), bounded._pool._template)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "None"]
    assert proc.stderr == ""
