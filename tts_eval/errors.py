"""Errors tts-eval raises on purpose, beyond ``ValueError`` for bad arguments.

What this module does not do: catch anything; the engines and PRMs translate their backends'
errors into these at the edge, with one line that names the argument to change.
"""

from __future__ import annotations


class OutOfMemoryError(RuntimeError):
    """A batch did not fit in device memory; the message names the knob that makes it smaller."""


class EngineError(RuntimeError):
    """A policy engine failed while generating (a backend crash, not a bad argument).

    One line naming the engine (backend and model), the request(s) it was running (index in the
    ``generate`` call, prompt length, n and seed) and the backend's own error; the original
    exception is its ``__cause__``.
    """


class OutputError(RuntimeError):
    """A result file could not be written (a full disk, a folder that is not writable): one line
    naming the file, the system's reason and the option that chooses another place. Nothing
    truncated is left under the file's name (see :mod:`tts_eval.files`)."""


def torch_oom_types() -> tuple[type[BaseException], ...]:
    """The exception types torch raises when an allocation fails (imports torch)."""
    import torch

    types: list[type[BaseException]] = []
    for holder, name in ((torch, "OutOfMemoryError"), (torch.cuda, "OutOfMemoryError")):
        cls = getattr(holder, name, None)
        if isinstance(cls, type) and cls not in types:
            types.append(cls)
    return tuple(types)


def free_device_memory() -> None:
    """Collect garbage and return cached accelerator memory to the driver (after a model is
    dropped); nothing to do when torch was never imported."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
