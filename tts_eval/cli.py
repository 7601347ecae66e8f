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


# name -> (help, handler taking the remaining argv)
COMMANDS: dict[str, tuple[str, Callable[[Sequence[str]], int]]] = {
    "eval": ("run an lm-eval evaluation (arguments as for `lm_eval run`)", _eval),
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
