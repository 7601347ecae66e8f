"""The ``tts-eval`` command.

``tts-eval eval <lm_eval run arguments>`` runs lm-eval's own ``run`` command after registering the
``tts`` model and the tts-eval tasks explicitly (for environments where the import hook is off).
Further subcommands (sweeps, reports, plots) are added to :data:`COMMANDS`.

Errors and interruptions, for every subcommand:

* tts-eval's own errors (:data:`ONE_LINE_ERRORS`: every :class:`tts_eval.errors.TTSEvalError`:
  a bad setting's :class:`~tts_eval.errors.SettingError`, a bad file or record's
  :class:`~tts_eval.errors.DataError`, a missing file, a missing dependency with its install
  hint, an unsupported request, a batch out of memory, a backend crash, a result file that cannot
  be written) and an ``OSError`` of a disk that cannot take a file (full, read-only, over a size
  limit: :data:`DISK_ERRNOS`) print ONE line, ``tts-eval <command>: error: <message>``, and exit
  2. Anything else is a bug and prints its traceback. ``TTS_EVAL_TRACEBACK=1`` shows the traceback
  of every error, for every command.
* SIGINT (Ctrl-C) and SIGTERM unwind the command: whatever it opened is closed on the way out (a
  sweep's searcher, the searchers ``tts-eval eval`` models opened; so vLLM's engine-core
  processes stop and memory is freed), one line says it was interrupted, and the exit status is
  130 (SIGINT) or 143 (SIGTERM). A second signal while that runs exits at once.
  :class:`Interrupted` is a ``KeyboardInterrupt``: libraries that stop a blocking call on Ctrl-C
  (Ray's ``ray.get`` / ``ray.wait`` check for exactly that type and raise a fresh
  ``KeyboardInterrupt``) stop it on SIGTERM too; the signal's number is remembered here, so either
  exception gives the right line and exit status.

What this module does not do: implement evaluation itself; each subcommand delegates.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from tts_eval.errors import TRACEBACK_ENV, TTSEvalError, one_line, reported_in_one_line

logger = logging.getLogger(__name__)

# Errors that tts-eval raises on purpose with a one-line message naming what to change.
ONE_LINE_ERRORS: tuple[type[BaseException], ...] = (TTSEvalError,)
# OSErrors of a disk that cannot take a file, from any writer (one line, like OutputError).
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
__all__ = ["ONE_LINE_ERRORS", "TRACEBACK_ENV", "main", "one_line", "run_command"]
SIGNALS = (signal.SIGINT, signal.SIGTERM)
# What to do after an interruption, per command (default: nothing to add).
AFTER_INTERRUPT = {
    "sweep": "re-run the same command to resume",
    "label": "re-run the same command to resume",
    "train-prm": "re-run the same command to resume from the last checkpoint",
    "eval": "re-run the same command to start again",
}


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived. Not an ``Exception``, so ``except Exception`` blocks on the way
    out let it pass while ``finally`` blocks (closing searchers) run; a ``KeyboardInterrupt``, so
    C extensions that turn Ctrl-C into a clean exit from a blocking wait (Ray's) do so for SIGTERM
    as well (a plain ``SystemError`` otherwise)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# The signal :func:`_raise_interrupted` last turned into an exception (a library may re-raise it as
# a plain KeyboardInterrupt, which alone would read as SIGINT).
_received: list[int] = []


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    for sig in SIGNALS:  # a second signal during the clean-up ends the process at once
        signal.signal(sig, _exit_now)
    raise Interrupted(signum)


def _exit_now(signum: int, frame: FrameType | None) -> None:
    os._exit(128 + signum)


def install_signal_handlers() -> None:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` in the main thread."""
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, _raise_interrupted)


def interrupting_signal() -> int:
    """The signal behind a ``KeyboardInterrupt``: the last one this module's handler received,
    else SIGINT (Python's own Ctrl-C handler)."""
    return _received[-1] if _received else int(signal.SIGINT)


def _eval(argv: Sequence[str]) -> int:
    from tts_eval import plugin

    plugin.register()
    from lm_eval.__main__ import cli_evaluate

    from tts_eval.lm_model import close_open_models

    sys.argv = ["lm_eval", "run", *argv]
    try:
        cli_evaluate()
    finally:
        close_open_models()
    return 0


def _learn(name: str) -> Callable[[Sequence[str]], int]:
    def handler(argv: Sequence[str]) -> int:
        from tts_eval.learn import cli as learn_cli

        return getattr(learn_cli, name)(argv)

    return handler


def _workflow(name: str) -> Callable[[Sequence[str]], int]:
    def handler(argv: Sequence[str]) -> int:
        from tts_eval.workflow import cli as workflow_cli

        return getattr(workflow_cli, name)(argv)

    return handler


# name -> (help, handler taking the remaining argv)
COMMANDS: dict[str, tuple[str, Callable[[Sequence[str]], int]]] = {
    "eval": ("run an lm-eval evaluation (arguments as for `lm_eval run`)", _eval),
    "sweep": (
        "run a recipe's strategies x budgets through lm-eval (resumable)",
        _workflow("sweep_main"),
    ),
    "report": (
        "accuracy@n tables with 95%% CIs, by level and subject (markdown, JSON)",
        _workflow("report_main"),
    ),
    "plot": ("PNG figures: accuracy vs budget, vs tokens, by level", _workflow("plot_main")),
    "fit-compute-optimal": (
        "fit the strategy=compute_optimal routing table from a sweep",
        _workflow("fit_main"),
    ),
    "compare": (
        "one leaderboard of sweeps and lm-eval runs at matched compute (FLOPs), with figures",
        _workflow("compare_main"),
    ),
    "demo": (
        "test-time scaling in minutes on this machine (SmolLM2-135M, arith; no hub needed)",
        _workflow("demo_main"),
    ),
    "label": (
        "label the steps of the policy's own solutions by Monte Carlo rollouts (PRM data)",
        _learn("label_main"),
    ),
    "train-prm": (
        "fine-tune a causal LM as a token-classification PRM on step labels",
        _learn("train_main"),
    ),
    "prm-eval": (
        "score a PRM on labelled steps (AUROC, accuracy, ProcessBench F1), no search",
        _learn("prm_eval_main"),
    ),
}


def _after_interrupt(unraisable) -> None:
    """After an interrupt, an object the signal cut off mid-construction (a progress bar, say)
    can fail in its ``__del__`` at exit; that is logged at debug level, not printed after the one
    line that says the run was interrupted."""
    logger.debug("after interrupt: %s in %r", unraisable.exc_value, unraisable.object)


def run_command(name: str, argv: Sequence[str]) -> int:
    """Run subcommand ``name``: one line and an exit status for our errors and for signals."""
    try:
        return COMMANDS[name][1](argv)
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else interrupting_signal()
        after = AFTER_INTERRUPT.get(name)
        print(
            f"tts-eval {name}: interrupted ({signal.Signals(signum).name})"
            + (f"; {after}" if after else ""),
            file=sys.stderr,
        )
        sys.unraisablehook = _after_interrupt
        return 128 + signum
    except ONE_LINE_ERRORS as exc:
        if not reported_in_one_line(exc):
            raise
        print(f"tts-eval {name}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS or os.environ.get(TRACEBACK_ENV):
            raise
        print(f"tts-eval {name}: error: {disk_error_line(exc)}", file=sys.stderr)
        return 2


def disk_error_line(exc: OSError) -> str:
    """One line for an OSError of a disk that cannot take a file (:data:`DISK_ERRNOS`)."""
    from tts_eval.files import os_error_line

    where = f" {exc.filename}" if exc.filename else ""
    return f"cannot write{where}: {os_error_line(exc)}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="tts-eval",
        description="Test-time compute scaling evaluation on lm-evaluation-harness.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, _) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv[0] not in COMMANDS:
        parser.error(f"unknown command {argv[0]!r}; accepted: {', '.join(COMMANDS)}")
    install_signal_handlers()
    return run_command(argv[0], argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
