"""The batched round loop shared by every strategy, and per-problem cost attribution.

Each problem of a request batch is a :class:`Work`: a small state machine that, in each round,
may ask for generations and then for PRM scores. A round collects the generation requests of all
problems into ONE ``engine.generate`` call, hands each problem its outputs, then collects all PRM
requests into ONE ``prm.score`` call. So a beam-search or DVTS iteration costs one engine call and
one PRM call whatever the number of problems (plus one engine call per lookahead step), and
problems running different strategies (compute_optimal) still share the calls.

Cost attribution: policy tokens, prompt tokens, cached prompt tokens and PRM tokens are exact per
problem (they are reported per request). The wall time of a batched call is split among the
problems in it by their share of its tokens (prompt + generated tokens for the engine, processed
tokens for the PRM; equal shares when a call reports no tokens at all).

What this module does not do: decide what to generate or keep (the strategy modules).
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from tts_eval.types import (
    AnswerSpec,
    Cost,
    GenerationOutput,
    GenerationRequest,
    PolicyEngine,
    PRMOutput,
    PRMRequest,
    Problem,
    ProcessRewardModel,
    SearchResult,
)

if TYPE_CHECKING:
    from tts_eval.search.config import SearchConfig
    from tts_eval.search.voting import AnswerGrouper

logger = logging.getLogger(__name__)

_Request = TypeVar("_Request", GenerationRequest, PRMRequest)
_Output = TypeVar("_Output", GenerationOutput, PRMOutput)


class Work(abc.ABC):
    """The search state of one problem (one instance per problem, driven by :func:`drive`).

    A strategy whose settings live in an options class names it in ``options_type``; the
    config's options are then checked to be of that class and kept as ``self.options``.
    """

    options_type: ClassVar[type | None] = None
    options: Any

    def __init__(
        self,
        problem: Problem,
        config: SearchConfig,
        answers: AnswerSpec,
        grouper: AnswerGrouper,
    ) -> None:
        self.problem = problem
        self.config = config
        self.answers = answers
        self.grouper = grouper
        if self.options_type is not None:
            if not isinstance(config.options, self.options_type):
                raise TypeError(
                    f"{type(self).__name__} runs with {self.options_type.__name__}, got "
                    f"{type(config.options).__name__} (strategy={config.strategy!r})"
                )
            self.options = config.options

    @property
    @abc.abstractmethod
    def done(self) -> bool: ...

    @abc.abstractmethod
    def generation_requests(self) -> list[GenerationRequest]:
        """Requests for this round (empty when this problem does not generate now)."""

    @abc.abstractmethod
    def on_generated(self, outputs: list[GenerationOutput]) -> None:
        """Outputs of the requests last returned by :meth:`generation_requests`, in order."""

    @abc.abstractmethod
    def prm_requests(self) -> list[PRMRequest]:
        """Scoring requests for this round (empty when this problem does not score now)."""

    @abc.abstractmethod
    def on_scored(self, outputs: list[PRMOutput]) -> None:
        """Outputs of the requests last returned by :meth:`prm_requests`, in order."""

    @abc.abstractmethod
    def result(self, cost: Cost) -> SearchResult: ...


def _split_time(seconds: float, weights: list[int]) -> list[float]:
    total = sum(weights)
    if total <= 0:
        return [seconds / len(weights)] * len(weights)
    return [seconds * w / total for w in weights]


def _check_outputs(kind: str, got: int, expected: int) -> None:
    if got != expected:
        raise ValueError(
            f"{kind} returned {got} outputs for {expected} requests; expected one each"
        )


class _Costs:
    def __init__(self, size: int) -> None:
        self.policy = [0] * size
        self.prompt = [0] * size
        self.cached = [0] * size
        self.prm = [0] * size
        self.seconds = [0.0] * size

    def cost(self, i: int) -> Cost:
        return Cost(self.policy[i], self.prompt[i], self.cached[i], self.prm[i], self.seconds[i])

    def charge_time(self, indices: Sequence[int], seconds: float, weights: list[int]) -> None:
        """Split the ``seconds`` of one batched call among works ``indices`` by ``weights``."""
        for i, share in zip(indices, _split_time(seconds, weights), strict=True):
            self.seconds[i] += share


def _collect(
    works: Sequence[Work], requests_of: Callable[[Work], list[_Request]]
) -> tuple[list[tuple[int, int]], list[_Request]]:
    """The requests of every work not done, flattened, and (work index, count) per asking work."""
    owners: list[tuple[int, int]] = []
    flat: list[_Request] = []
    for i, work in enumerate(works):
        if work.done:
            continue
        requests = requests_of(work)
        if requests:
            owners.append((i, len(requests)))
            flat.extend(requests)
    return owners, flat


def _split(
    outputs: list[_Output], owners: list[tuple[int, int]]
) -> list[tuple[int, list[_Output]]]:
    """The outputs of one flattened call cut back into (work index, its outputs), in order."""
    chunks = []
    pos = 0
    for i, count in owners:
        chunks.append((i, outputs[pos : pos + count]))
        pos += count
    return chunks


def _generate_round(works: Sequence[Work], engine: PolicyEngine, costs: _Costs) -> int:
    owners, flat = _collect(works, lambda work: work.generation_requests())
    if not flat:
        return 0
    start = time.perf_counter()
    outputs = list(engine.generate(flat))
    elapsed = time.perf_counter() - start
    _check_outputs("engine.generate", len(outputs), len(flat))
    for request, output in zip(flat, outputs, strict=True):
        if len(output.completions) != request.params.n:
            raise ValueError(
                f"engine.generate returned {len(output.completions)} completions for a request "
                f"with n={request.params.n}"
            )
    chunks = _split(outputs, owners)
    weights = []
    for i, chunk in chunks:
        generated = sum(len(c.token_ids) for out in chunk for c in out.completions)
        prompt = sum(out.prompt_tokens for out in chunk)
        costs.policy[i] += generated
        costs.prompt[i] += prompt
        costs.cached[i] += sum(out.cached_prompt_tokens or 0 for out in chunk)
        weights.append(prompt + generated)
    costs.charge_time([i for i, _ in chunks], elapsed, weights)
    for i, chunk in chunks:
        works[i].on_generated(chunk)
    logger.debug(
        "generate: %d requests from %d problems, %d tokens, %.3fs",
        len(flat),
        len(owners),
        sum(weights),
        elapsed,
    )
    return len(flat)


def _score_round(works: Sequence[Work], prm: ProcessRewardModel | None, costs: _Costs) -> int:
    owners, flat = _collect(works, lambda work: work.prm_requests())
    if not flat:
        return 0
    if prm is None:
        raise ValueError("this search needs a process reward model (prm=...), but none was given")
    start = time.perf_counter()
    outputs = list(prm.score(flat))
    elapsed = time.perf_counter() - start
    _check_outputs("prm.score", len(outputs), len(flat))
    for request, output in zip(flat, outputs, strict=True):
        if len(output.step_scores) != len(request.steps):
            raise ValueError(
                f"prm.score returned {len(output.step_scores)} step scores for a request with "
                f"{len(request.steps)} steps; expected one per step"
            )
    chunks = _split(outputs, owners)
    weights = []
    for i, chunk in chunks:
        tokens = sum(out.tokens_processed for out in chunk)
        costs.prm[i] += tokens
        weights.append(tokens)
    costs.charge_time([i for i, _ in chunks], elapsed, weights)
    for i, chunk in chunks:
        works[i].on_scored(chunk)
    logger.debug(
        "score: %d requests from %d problems, %d tokens, %.3fs",
        len(flat),
        len(owners),
        sum(weights),
        elapsed,
    )
    return len(flat)


def drive(
    works: Sequence[Work],
    engine: PolicyEngine,
    prm: ProcessRewardModel | None,
    *,
    progress: bool = False,
    desc: str = "search",
) -> list[SearchResult]:
    """Run all ``works`` to completion in batched rounds; one result per work, in order."""
    costs = _Costs(len(works))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=desc, unit="round", leave=False)
    rounds = 0
    try:
        while not all(work.done for work in works):
            generated = _generate_round(works, engine, costs)
            scored = _score_round(works, prm, costs)
            rounds += 1
            if not generated and not scored and not all(work.done for work in works):
                raise RuntimeError(f"{desc}: a round made no request but problems are not done")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(active=sum(not work.done for work in works))
    finally:
        if bar is not None:
            bar.close()
    logger.info("%s: %d problems in %d rounds", desc, len(works), rounds)
    return [work.result(costs.cost(i)) for i, work in enumerate(works)]
