"""Step splitting and step-text normalisation shared by every PRM adapter.

A solution is a sequence of steps separated by a delimiter ("\\n\\n" by default). ``split_steps``
turns a solution text into steps; ``clean_step`` is the one normalisation every adapter applies to
each step it formats, so a step is scored the same way whether it came from ``split_steps`` or from
a strategy that kept the delimiter attached to the step.

What this module does not do: decide where a policy's generation stops, or tokenise anything.
"""

from __future__ import annotations

DEFAULT_DELIMITER = "\n\n"


def clean_step(step: str) -> str:
    """Strip surrounding whitespace (the delimiter included) from one step."""
    return step.strip()


def split_steps(text: str, delimiter: str = DEFAULT_DELIMITER) -> tuple[str, ...]:
    """Split a solution into cleaned, non-empty steps.

    Empty pieces (a trailing delimiter, doubled delimiters, whitespace-only chunks) are dropped, so
    ``"a\\n\\nb\\n\\n"`` gives ``("a", "b")`` and never an empty trailing step.
    """
    if not delimiter:
        raise ValueError("delimiter must be a non-empty string, got ''")
    pieces = (clean_step(piece) for piece in text.split(delimiter))
    return tuple(piece for piece in pieces if piece)
