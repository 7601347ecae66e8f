"""One-line :class:`tts_eval.errors.EngineError` for a backend that fails inside ``generate``.

Both engines validate requests first (``ValueError``) and translate out-of-memory into
:class:`tts_eval.errors.OutOfMemoryError`; anything else a backend raises while generating
(a crashed vLLM engine core, a failing forward pass) becomes an :class:`EngineError` built by
:func:`engine_error`, which names the engine and the request(s) it was running. A request is named
by its index in the ``generate`` call (requests carry no problem id), its prompt length, ``n`` and
``seed``.

What this module does not do: catch anything, retry, or restart an engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tts_eval.errors import EngineError
from tts_eval.types import GenerationRequest

_MAX_CAUSE_CHARS = 300
_MAX_LISTED = 5


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (shortened), or just the type when it says nothing."""
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else ""
    if len(line) > _MAX_CAUSE_CHARS:
        line = line[: _MAX_CAUSE_CHARS - 3] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def indices_text(indices: Sequence[int]) -> str:
    """``3``, ``0-7`` (a run) or ``2, 5, 9 (+4 more)``."""
    if len(indices) == 1:
        return str(indices[0])
    if len(indices) > 2 and list(indices) == list(range(indices[0], indices[-1] + 1)):
        return f"{indices[0]}-{indices[-1]}"
    shown = ", ".join(str(i) for i in indices[:_MAX_LISTED])
    more = len(indices) - _MAX_LISTED
    return f"{shown} (+{more} more)" if more > 0 else shown


def requests_text(requests: Sequence[GenerationRequest], indices: Sequence[int]) -> str:
    """Which request(s) of the call were running, with what prompt length, n and seed."""
    total = len(requests)
    if not indices:
        return f"a call of {total} requests"
    if len(indices) == 1:
        i = indices[0]
        p = requests[i].params
        return (
            f"request {i} of {total} (prompt of {len(requests[i].prompt_ids)} tokens, "
            f"n={p.n}, seed={p.seed})"
        )
    lengths = [len(requests[i].prompt_ids) for i in indices]
    longest = indices[max(range(len(indices)), key=lengths.__getitem__)]
    return (
        f"requests {indices_text(indices)} of {total} (prompts of {min(lengths)}-{max(lengths)} "
        f"tokens; longest: request {longest})"
    )


def engine_error(
    backend: str,
    pretrained: str,
    requests: Sequence[GenerationRequest],
    indices: Iterable[int],
    exc: BaseException,
    hint: str = "",
) -> EngineError:
    """The one-line error of ``exc`` raised while ``backend`` ran ``requests[indices]``."""
    running = sorted(set(indices))
    message = (
        f"policy engine backend={backend} pretrained={pretrained} failed on "
        f"{requests_text(requests, running)}: {first_line(exc)}"
    )
    if hint:
        message += f"; {hint}"
    return EngineError(" ".join(message.splitlines()))
