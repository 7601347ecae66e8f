"""Prompt-work counters an engine keeps of what it actually ran, for checking the cost report.

Every completion of a request queries its prompt (vLLM fans a request with ``n`` samples out into
``n`` sequences, each looked up in the prefix cache; the transformers engine runs ``n`` rows). Of
the tokens queried, some are served from a cache (vLLM's prefix cache; in the transformers engine a
sibling row's prefill, copied) and the rest are prefilled (run through the model).
:class:`PromptCounters` accumulates the three totals over an engine's life; the per-request
:class:`~tts_eval.types.GenerationOutput` reports the same quantities (``prompt_tokens`` queried,
``cached_prompt_tokens`` served from a cache), so the traces' totals must equal these counters.

What this module does not do: read vLLM's Prometheus metrics (``VLLMEngine.vllm_counters``) or
time anything.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PromptCounters:
    """Prompt tokens queried, served from a cache and prefilled, summed over calls."""

    queried: int = 0
    cached: int = 0

    @property
    def prefilled(self) -> int:
        return self.queried - self.cached

    def add(self, queried: int, cached: int) -> None:
        if not 0 <= cached <= queried:
            raise ValueError(f"cached prompt tokens {cached} not within [0, queried={queried}]")
        self.queried += queried
        self.cached += cached
