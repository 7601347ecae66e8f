"""The ``tts-eval`` command.

``tts-eval eval <lm_eval run arguments>`` runs lm-eval's own ``run`` command after registering the
``tts`` model and the tts-eval tasks explicitly (for environments where the import hook is off).
Further subcommands (sweeps, reports, plots) are added to :data:`COMMANDS`.

What this module does not do: implement evaluation itself; each subcommand delegates.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def _eval(argv: Sequence[str]) -> int:
    from tts_eval import plugin

    plugin.register()
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", "run", *argv]
    cli_evaluate()
    return 0


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
}


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
    return COMMANDS[argv[0]][1](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
