"""Progress of one ``generate`` call: a tqdm bar on stderr, shared by both backends.

An engine's ``progress`` attribute decides whether a call shows a bar: ``True`` always, ``False``
never, ``None`` (the default) only once the call has run for :data:`PROGRESS_DELAY_S` seconds, so
the many short calls of a search stay quiet and a long round (minutes of decoding) is visible.
:class:`GenerationProgress` is the bar of the transformers engine: it counts finished completions
and shows requests done, tokens generated and tokens per second; the vLLM engine hands the same
choice to vLLM's own bar (:func:`tqdm_factory`).

What this module does not do: touch logging (the bar writes to ``sys.stderr`` only) or decide
anything about generation.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

# A call shorter than this never shows a bar when ``progress`` is None.
PROGRESS_DELAY_S = 2.0


def bar_options(progress: bool | None) -> dict[str, Any] | None:
    """tqdm keyword arguments for an engine's ``progress`` setting; None when no bar is wanted."""
    if progress is False:
        return None
    return {
        "file": sys.stderr,
        "delay": 0.0 if progress else PROGRESS_DELAY_S,
        "dynamic_ncols": True,
    }


def tqdm_factory(progress: bool | None) -> bool | Callable[..., Any]:
    """vLLM's ``use_tqdm`` argument for an engine's ``progress`` setting."""
    options = bar_options(progress)
    if options is None:
        return False
    from tqdm import tqdm

    return partial(tqdm, **options)


class GenerationProgress:
    """A bar over the completions of one call, with requests done, tokens and tokens/s."""

    def __init__(self, requests: Iterable[int], progress: bool | None, desc: str) -> None:
        from tqdm import tqdm

        self._left = Counter(requests)  # request index -> completions not finished yet
        self._requests = len(self._left)
        self._done = 0
        self._tokens = 0
        self._t0 = time.perf_counter()
        options = bar_options(progress)
        self.bar = tqdm(
            total=sum(self._left.values()),
            desc=desc,
            unit="seq",
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
            miniters=0,  # refresh on time alone: most decoding steps finish no completion
            disable=options is None,
            **(options or {}),
        )

    def __enter__(self) -> GenerationProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def tokens(self) -> int:
        """Tokens generated so far in this call."""
        return self._tokens

    def update(self, tokens: int, finished: Iterable[int] = ()) -> None:
        """Count ``tokens`` new tokens and the completions (by request index) just finished."""
        self._tokens += tokens
        rows = 0
        for request in finished:
            rows += 1
            self._left[request] -= 1
            if self._left[request] == 0:
                self._done += 1
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        self.bar.set_postfix_str(
            f"req {self._done}/{self._requests}, {self._tokens} tok, "
            f"{self._tokens / elapsed:.1f} tok/s",
            refresh=False,
        )
        self.bar.update(rows)  # redraws (at most every 0.1 s) even when rows == 0

    def close(self) -> None:
        self.bar.close()
