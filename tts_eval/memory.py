"""Device memory: what torch raises when an allocation fails, and giving cached memory back.

Shared by the policy engines and the PRM (which translate torch's out-of-memory errors into
:class:`tts_eval.errors.OutOfMemoryError`). Kept apart from :mod:`tts_eval.errors`, which imports
nothing, because these import torch (lazily).

What this module does not do: decide what to do about a failed allocation (the callers do).
"""

from __future__ import annotations


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
