"""The project's vocabulary: the two service protocols and the frozen records that flow between them.

Everything here is plain data or a ``typing.Protocol``; nothing imports torch, transformers, vllm
or lm_eval. Strategies in ``tts_eval.search`` are written against these names only, real
engines (``tts_eval.engines``) and PRMs (``tts_eval.prm``) implement them, and test fakes satisfy
the same protocols.

What this module does not do: tokenisation, chat templates, answer grading, sampling.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

# --------------------------------------------------------------------------------------------
# Policy engine
# --------------------------------------------------------------------------------------------


class FinishReason(str, enum.Enum):
    """Why a completion stopped. Engines must tell these three apart exactly."""

    STEP = "step"  # a stop string (the step delimiter) was produced
    EOS = "eos"  # the model emitted an end-of-sequence / stop token
    LENGTH = "length"  # cut off at max_tokens (never a finished solution)


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings of one generation request.

    ``seed`` makes the request reproducible on its own: two engines given the same request and
    seed return the same completions regardless of what else shares the batch.

    ``logprobs``: None (the default) asks for no log-probabilities, and engines compute none; an
    integer ``k >= 0`` asks every completion for :class:`TokenLogprobs` at each generated token:
    the generated token's log-probability and the ``k`` most likely tokens' (``k = 0``: the
    generated token's only). An engine that cannot return ``k`` of them refuses the request with
    a one-line ``ValueError`` before generating.
    """

    n: int = 1
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 2048
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.logprobs is not None and (
            isinstance(self.logprobs, bool)
            or not isinstance(self.logprobs, int)
            or self.logprobs < 0
        ):
            raise ValueError(
                f"logprobs must be None (none) or an integer >= 0 (top-k per token), "
                f"got {self.logprobs!r}"
            )


@dataclass(frozen=True)
class GenerationRequest:
    """Continue ``prompt_ids`` (templated prompt + the partial solution's token ids)."""

    prompt_ids: tuple[int, ...]
    params: SamplingParams


@dataclass(frozen=True, slots=True)
class TokenLogprobs:
    """Log-probabilities (natural log) at one generated position.

    They are the model's own next-token distribution: the log-softmax of the raw logits, at
    temperature 1, before temperature, top-p, penalties or any other processing of the request
    (vLLM's default ``logprobs_mode="raw_logprobs"``), whatever the request sampled with. That is
    the distribution DeepConf's token confidence and self-certainty are defined on
    (:mod:`tts_eval.search.confidence`).

    ``logprob`` is the generated token's; ``top_ids`` / ``top_logprobs`` are the ``k`` most likely
    tokens and theirs, most likely first (equal log-probabilities: lower id first, among the tokens
    the backend returned: which of several tokens tied at the ``k``-th place make the cut is the
    backend's choice). The generated token is among them only when it is in the top ``k``.
    """

    logprob: float
    top_ids: tuple[int, ...] = ()
    top_logprobs: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.top_ids) != len(self.top_logprobs):
            raise ValueError(
                f"top_ids and top_logprobs must have one entry per token, got "
                f"{len(self.top_ids)} and {len(self.top_logprobs)}"
            )


@dataclass(frozen=True)
class Completion:
    """One sampled continuation.

    ``token_ids`` are exactly the generated tokens (appending them to the prompt continues the
    solution); ``text`` is their decoding. When ``finish_reason`` is STEP the text contains the stop
    string (possibly followed by the remainder of the token that completed it).

    ``logprobs``: None unless the request asked for them (``SamplingParams.logprobs``); then one
    :class:`TokenLogprobs` per entry of ``token_ids`` (the EOS token included), in order.
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    logprobs: tuple[TokenLogprobs, ...] | None = None

    def __post_init__(self) -> None:
        if self.logprobs is not None and len(self.logprobs) != len(self.token_ids):
            raise ValueError(
                f"logprobs must have one entry per generated token: {len(self.logprobs)} for "
                f"{len(self.token_ids)} tokens"
            )


@dataclass(frozen=True)
class GenerationOutput:
    """All ``n`` completions of one request, plus what the prompt cost.

    Every completion queries the prompt, so ``prompt_tokens`` is the prompt length x ``n``;
    ``cached_prompt_tokens`` of those were served from a cache (vLLM's prefix cache, a sibling's
    prefill) and the rest were prefilled (``engines.counters``).
    """

    completions: tuple[Completion, ...]
    prompt_tokens: int  # queried: prompt length x n
    cached_prompt_tokens: int | None = None  # None: the engine cannot tell


@runtime_checkable
class PolicyEngine(Protocol):
    """Batched step generation. Implementations: ``engines.hf``, ``engines.vllm``,
    ``engines.openai``, test fakes.

    ``tokenizer``: the policy's tokenizer (renders chat text; None for an engine without one, a
    test fake). ``max_model_len``: the policy's context length, prompt + completion (None:
    unknown). ``device``: where the policy runs (``cpu``, ``cuda:0``, ...; None: not in this
    process). ``close()`` frees what the engine holds (idempotent).
    """

    tokenizer: Any
    max_model_len: int | None
    device: str | None

    def render_prompt(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        """Chat-template ``messages`` (with the generation prompt) into token ids."""
        ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        """One output per request, in order."""
        ...

    def close(self) -> None:
        """Free the engine's models and memory; it cannot generate afterwards."""
        ...


# --------------------------------------------------------------------------------------------
# Process reward model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PRMRequest:
    """Score every step of one (partial) solution to ``problem``.

    ``token_values`` / ``step_token_ends``: what a scorer that reads the policy's own confidence
    needs (``tts_eval.search.confidence.SelfScorer``; a PRM model ignores them): per generated
    token of the solution its confidence value, and per step how many of those tokens its prefix
    spans. None unless the search scores with the policy's confidence (``self_score``). They take
    no part in comparisons or hashing (a request is its problem and steps).
    """

    problem: str
    steps: tuple[str, ...]
    token_values: tuple[float, ...] | None = field(default=None, compare=False, repr=False)
    step_token_ends: tuple[int, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class PRMOutput:
    """One score in [0, 1] per step, and the PRM tokens actually run through the model for it."""

    step_scores: tuple[float, ...]
    tokens_processed: int


@runtime_checkable
class ProcessRewardModel(Protocol):
    """Step scoring. Implementations: the adapters in ``tts_eval.prm``, test fakes."""

    def score(self, requests: Sequence[PRMRequest]) -> list[PRMOutput]:
        """One output per request, in order; ``len(out.step_scores) == len(req.steps)``."""
        ...

    def close(self) -> None:
        """Free the PRM's model and caches; it cannot score afterwards."""
        ...


# --------------------------------------------------------------------------------------------
# Task layer handed to strategies (no answer format is hard-coded inside a search loop)
# --------------------------------------------------------------------------------------------


@runtime_checkable
class AnswerSpec(Protocol):
    """How a task recognises a finished step, extracts an answer and compares two answers."""

    def is_final_step(self, step_text: str) -> bool: ...

    def extract(self, solution_text: str) -> str | None: ...

    def canonical(self, answer: str) -> str:
        """A cheap key; equal keys imply equivalent answers (used to cache grouping)."""
        ...

    def equivalent(self, a: str, b: str) -> bool: ...


@dataclass(frozen=True)
class Problem:
    """One problem of a request batch.

    ``uid`` is stable across runs and workers (lm-eval doc id or dataset id): per-problem seeds
    are derived from it, never from batch position.
    """

    uid: str
    text: str
    prompt_ids: tuple[int, ...]


# --------------------------------------------------------------------------------------------
# Traces
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A (possibly unfinished) solution with its full step trace."""

    steps: tuple[str, ...]
    step_scores: tuple[float, ...]
    finish_reason: FinishReason  # of the last generated step
    finished: bool  # EOS or a final-answer step; never a LENGTH cut-off or an iteration-cap stop
    token_ids: tuple[int, ...] = ()
    answer: str | None = None
    group: int = 0  # dvts subtree / beam lineage id; 0 where unused

    @property
    def text(self) -> str:
        return "".join(self.steps)


@dataclass(frozen=True)
class Cost:
    """What one problem's search ran: policy tokens generated, prompt tokens queried (prompt length
    x n per request) and served from a cache, PRM tokens processed, its share of wall time, and
    the FLOPs all that took (2 x parameters x tokens processed; None when the searcher did not
    know the models' sizes: the lm-eval model fills it in, see ``tts_eval.params.search_flops``)."""

    policy_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    prm_tokens: int = 0
    wall_time_s: float = 0.0
    flops: float | None = None

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.policy_tokens + other.policy_tokens,
            self.prompt_tokens + other.prompt_tokens,
            self.cached_prompt_tokens + other.cached_prompt_tokens,
            self.prm_tokens + other.prm_tokens,
            self.wall_time_s + other.wall_time_s,
            None if self.flops is None or other.flops is None else self.flops + other.flops,
        )

    @property
    def prefilled_prompt_tokens(self) -> int:
        """Prompt tokens actually run through the policy (queried minus served from a cache)."""
        return self.prompt_tokens - self.cached_prompt_tokens


@dataclass(frozen=True)
class SearchResult:
    """Everything one strategy did for one problem."""

    uid: str
    strategy: str
    candidates: tuple[Candidate, ...]
    selected: int | None  # index into candidates; None when nothing was produced
    cost: Cost
    settings: Mapping[str, object] = field(default_factory=dict)

    @property
    def selected_text(self) -> str:
        return "" if self.selected is None else self.candidates[self.selected].text


class TracedText(str):
    """The selected solution text, as returned to lm-eval, carrying its :class:`SearchResult`.

    lm-eval stores model responses as they are returned and hands them to the task's
    ``process_results``; a task that knows about traces (math500) reads ``.trace`` there to compute
    best-of-N style metrics, while every other task simply sees a ``str``.
    """

    trace: SearchResult | None

    def __new__(cls, text: str, trace: SearchResult | None = None) -> TracedText:
        obj = super().__new__(cls, text)
        obj.trace = trace
        return obj

    def __reduce__(self):  # keep the trace through pickling (lm-eval's response cache)
        return (TracedText, (str(self), self.trace))
