"""Entry point of a grader helper process (started by ``bounded``; not for direct use).

Reads one JSON request ``[op, a, b]`` per line on stdin, writes ``{"r": result}`` per line on
stdout; ``result`` is None when the comparison raised. Exits when stdin closes.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints of libraries must not corrupt the protocol
    from tts_eval.grader import symbolic

    symbolic.warm_up()  # load sympy and the LaTeX parser before saying ready
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            op, a, b = json.loads(line)
            result = symbolic.run_op(op, a, b)
        except Exception:  # noqa: BLE001 - a failed comparison answers None, never kills the helper
            result = None
        out.write(json.dumps({"r": result}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
