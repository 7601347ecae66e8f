"""The runtime: what loads the models of a run and searches with them, behind one protocol.

A :class:`Searcher` renders chat prompts with the policy's template, searches batches of problems
with the settings each call brings (``search(problems, search_config)``), and frees everything it
holds on ``close()``. :func:`open_searcher` builds the one a :class:`~tts_eval.settings.TTSConfig`
asks for: a :class:`~tts_eval.runtime.local.LocalSearcher` (models in this process) or, with
``data_parallel_size > 1``, a :class:`~tts_eval.runtime.ray.RaySearcher` (K Ray actors; Ray is
imported only then). ``TTSLM`` and ``tts-eval sweep`` talk only to this protocol, so one loaded
searcher serves every run of a sweep, locally or on a cluster.

What this package does not do: parse settings (``tts_eval.settings``), search
(``tts_eval.search``) or talk to lm-eval (``tts_eval.lm_model``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from tts_eval.config import TTSConfig
from tts_eval.search import SearchConfig
from tts_eval.types import Problem, SearchResult


@runtime_checkable
class Searcher(Protocol):
    """Something that searches: loaded models (here or on workers) behind three calls, and what
    ``TTSLM`` reads of the policy: ``tokenizer`` (the policy's, for rendering chat text; None when
    the searcher has none, e.g. a test fake) and ``max_model_len`` (the policy's context length,
    prompt + completion; None when unknown).
    """

    tokenizer: Any
    max_model_len: int | None

    def render_prompt(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Token ids of a chat, rendered with the policy's chat template and generation prompt."""
        ...

    def search(
        self, problems: Sequence[Problem], config: SearchConfig, *, progress: bool = False
    ) -> list[SearchResult]:
        """Search every problem with ``config``; one result each, in the order given."""
        ...

    def close(self) -> None:
        """Free the models' memory (and any workers); the searcher cannot search afterwards."""
        ...


def open_searcher(config: TTSConfig) -> Searcher:
    """Check and load what ``config`` describes: in-process, or on Ray for K >= 2 workers."""
    if config.data_parallel_size > 1:
        from tts_eval.runtime.ray import RaySearcher

        return RaySearcher.from_config(config)
    from tts_eval.runtime.local import LocalSearcher

    return LocalSearcher.from_config(config)


__all__ = ["Searcher", "open_searcher"]
