"""DeepConf: votes filtered and weighted by the policy's own confidence (Fu et al. 2025, "Deep
Think with Confidence", arXiv:2508.15260); no PRM.

Offline (default): ``n`` samples drawn as majority voting draws them (one request seeded from
``(seed, uid, "sample")``, so they are majority's samples), each asking for the top
``confidence_topk`` log-probabilities per token. A sample's confidence is its trace score
(``self_score``, default ``lowest_group_confidence`` over ``confidence_window`` tokens;
:mod:`tts_eval.search.confidence`). Among the eligible samples those at or above the
``100 - keep_percent`` percentile of the scores vote, each weighted by its score
(:func:`~tts_eval.search.confidence.confidence_filtered_vote`; ``keep_percent=10`` is
DeepConf-low, ``90`` DeepConf-high).

Online (``deepconf_online=true``): a first wave of ``wave`` samples (unset: ``n // 4``, at least
1) is drawn whole; the stop threshold is the ``100 - keep_percent`` percentile of their lowest
group confidences (:func:`~tts_eval.search.confidence.online_threshold`). The other samples are
drawn ``online_chunk`` tokens at a time (the first chunk of all of them in one request, seeded as
majority's samples ``wave..n-1``; each later chunk one request per sample, seeded from ``(seed,
uid, "deepconf", i, chunk)``); after each chunk a sample whose group confidence over a full
window has fallen below the threshold anywhere stops (it is cut, never votes, and keeps what it
wrote; what it generated after that token within the chunk is spent all the same: the chunk is
the granularity at which generation can stop). Every sample that was not stopped votes, weighted
by its lowest group confidence (the paper's online vote; no further filter). Online runs need
``self_score`` unset or ``lowest_group_confidence``.

Trace (``settings``): ``confidence`` (each sample's score), offline ``kept`` (indices that voted),
online ``threshold``, ``warmup`` and ``stopped_at`` (per sample, the token count at which it
stopped, None if it did not). A stopped sample's candidate is unfinished with finish reason
LENGTH. A run yields its own curve at ``n`` only.

What this module does not do: score with a PRM, or stop drawing samples (``majority``'s
``stop=``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tts_eval.search import voting
from tts_eval.search._common import (
    Node,
    completion_values,
    derive_seed,
    extend,
    step_request,
    to_candidate,
)
from tts_eval.search._driver import Work
from tts_eval.search.confidence import (
    DEFAULT_SELF_SCORE,
    confidence_filtered_vote,
    first_low_confidence,
    online_threshold,
    percentile,
    score_values,
)
from tts_eval.search.spec import (
    Curve,
    StrategyOptions,
    StrategySpec,
    curve_name,
    register_strategy,
)
from tts_eval.settings import check_float, check_int, invalid
from tts_eval.types import (
    AnswerSpec,
    Completion,
    Cost,
    FinishReason,
    GenerationOutput,
    GenerationRequest,
    PRMOutput,
    PRMRequest,
    Problem,
    SearchResult,
)

if TYPE_CHECKING:
    from tts_eval.search.config import SearchConfig

ONLINE_SCORE = "lowest_group_confidence"  # what the online threshold and stop test read


@dataclass(frozen=True)
class DeepConfOptions(StrategyOptions):
    """``keep_percent`` in (0, 100] (the share of samples that votes, offline; the threshold's
    percentile, online), ``deepconf_online``, and for online runs ``wave`` (the calibration
    wave, at most ``n``) and ``online_chunk`` (tokens per generation request after it)."""

    keep_percent: float = 10.0
    deepconf_online: bool = False
    wave: int | None = None
    online_chunk: int = 256

    def __post_init__(self) -> None:
        check_float("keep_percent", self.keep_percent, "a number in (0, 100]", _percent)
        if not isinstance(self.deepconf_online, bool):
            raise invalid("deepconf_online", self.deepconf_online, "true or false")
        if self.wave is not None:
            check_int("wave", self.wave, 1)
        check_int("online_chunk", self.online_chunk, 1)
        if not self.deepconf_online:
            for key, default in (("wave", None), ("online_chunk", 256)):
                if getattr(self, key) != default:
                    raise invalid(key, getattr(self, key), "only with deepconf_online=true")

    def check(self, config: SearchConfig) -> None:
        if self.wave is not None and self.wave > config.n:
            raise invalid("wave", self.wave, f"an integer in 1..n={config.n} (a wave fits n)")
        score = config.self_score
        if self.deepconf_online and score not in (None, ONLINE_SCORE):
            raise invalid("self_score", score, f"{ONLINE_SCORE} with deepconf_online=true")

    def warmup(self, n: int) -> int:
        return self.wave if self.wave is not None else max(1, n // 4)


def _percent(value: float) -> bool:
    return 0 < value <= 100


@dataclass
class _Sample:
    """One online sample generated chunk by chunk."""

    text: str = ""
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[Any, ...] = ()
    reason: FinishReason = FinishReason.LENGTH
    stopped_at: int | None = None
    done: bool = False
    values: list[float] = field(default_factory=list)


class DeepConfWork(Work):
    """DeepConf on one problem (module docstring)."""

    options_type = DeepConfOptions
    options: DeepConfOptions

    def __init__(
        self,
        problem: Problem,
        config: SearchConfig,
        answers: AnswerSpec,
        grouper: voting.AnswerGrouper,
    ) -> None:
        super().__init__(problem, config, answers, grouper)
        self.kind = config.self_score or DEFAULT_SELF_SCORE
        self.base = derive_seed(config.seed, problem.uid, "sample")
        self.online = self.options.deepconf_online
        self.warmup = self.options.warmup(config.n) if self.online else config.n
        self.nodes: list[Node] = []
        self.samples: list[_Sample] = []  # online samples after the warm-up
        self.threshold: float | None = None
        self.chunks = 0
        self._asking: list[int] = []
        self._stage = "warmup"

    @property
    def done(self) -> bool:
        return self._stage == "done"

    def _score(self, values: Sequence[float]) -> float:
        return score_values(values, self.kind, self.config.confidence_window)

    def generation_requests(self) -> list[GenerationRequest]:
        config = self.config
        if self._stage == "warmup":
            return [
                step_request(self.problem, (), config, n=self.warmup, seed=self.base, final=True)
            ]
        if self._stage != "online":
            return []
        if not self.samples:  # the first chunk of every other sample, seeded as majority's
            self.samples = [_Sample() for _ in range(config.n - self.warmup)]
            self._asking = list(range(len(self.samples)))
            seed = self.base + self.warmup
            return [self._chunk_request((), len(self.samples), seed)]
        self._asking = [j for j, s in enumerate(self.samples) if not s.done]
        return [
            self._chunk_request(
                self.samples[j].token_ids,
                1,
                derive_seed(
                    config.seed, self.problem.uid, "deepconf", self.warmup + j, self.chunks
                ),
            )
            for j in self._asking
        ]

    def _chunk_request(self, token_ids: tuple[int, ...], n: int, seed: int) -> GenerationRequest:
        request = step_request(self.problem, token_ids, self.config, n=n, seed=seed, final=True)
        chunk = min(request.params.max_tokens, self.options.online_chunk)
        params = dataclasses.replace(request.params, max_tokens=chunk)
        return dataclasses.replace(request, params=params)

    def on_generated(self, outputs: list[GenerationOutput]) -> None:
        config = self.config
        if self._stage == "warmup":
            root = Node(lineage=())
            self.nodes = [
                extend(root, c, index=i, config=config, answers=self.answers)
                for i, c in enumerate(outputs[0].completions)
            ]
            if not self.online or self.warmup >= config.n:
                self._stage = "done"
                return
            scores = [self._score(node.token_values) for node in self.nodes]
            self.threshold = online_threshold(scores, self.options.keep_percent)
            self._stage = "online"
            return
        completions = (
            list(outputs[0].completions)
            if self.chunks == 0
            else [o.completions[0] for o in outputs]
        )
        for j, completion in zip(self._asking, completions, strict=True):
            self._append(self.samples[j], completion)
        self.chunks += 1
        if all(s.done for s in self.samples):
            self._finish()

    def _append(self, sample: _Sample, completion: Completion) -> None:
        sample.text += completion.text
        sample.token_ids += tuple(completion.token_ids)
        sample.logprobs += tuple(completion.logprobs or ())
        sample.reason = completion.finish_reason
        sample.values.extend(completion_values(completion, self.config))
        assert self.threshold is not None
        window = self.config.confidence_window
        low = first_low_confidence(sample.values, window, self.threshold)
        if low is not None:
            sample.stopped_at, sample.done = low, True
            return
        budget_left = len(sample.token_ids) < self.config.max_tokens
        sample.done = completion.finish_reason is not FinishReason.LENGTH or not budget_left

    def _finish(self) -> None:
        root = Node(lineage=())
        for j, sample in enumerate(self.samples):
            reason = FinishReason.LENGTH if sample.stopped_at is not None else sample.reason
            merged = Completion(sample.text, sample.token_ids, reason, sample.logprobs or None)
            node = extend(
                root, merged, index=self.warmup + j, config=self.config, answers=self.answers
            )
            self.nodes.append(node)
        self._stage = "done"

    def prm_requests(self) -> list[PRMRequest]:
        return []

    def on_scored(self, outputs: list[PRMOutput]) -> None:
        raise AssertionError("deepconf asks for no PRM scores")

    def result(self, cost: Cost) -> SearchResult:
        candidates = tuple(to_candidate(n, self.config, self.answers) for n in self.nodes)
        scores = [self._score(node.token_values) for node in self.nodes]
        extra: dict[str, Any] = {"confidence": scores}
        if self.online:
            weights = scores
            selected = voting.weighted_vote_by(candidates, self.grouper, weights)
            stopped = [None] * self.warmup + [s.stopped_at for s in self.samples]
            extra.update(threshold=self.threshold, warmup=self.warmup, stopped_at=stopped)
        else:
            keep = self.options.keep_percent
            selected = confidence_filtered_vote(candidates, self.grouper, scores, keep)
            extra["kept"] = kept_indices(candidates, scores, keep)
        return SearchResult(
            uid=self.problem.uid,
            strategy="deepconf",
            candidates=candidates,
            selected=selected,
            cost=cost,
            settings={**self.config.settings(), **extra},
        )


def kept_indices(candidates: Sequence[Any], scores: Sequence[float], keep: float) -> list[int]:
    """The eligible candidates that the filtered vote keeps (at or above the percentile)."""
    eligible = [i for i, c in enumerate(candidates) if voting.is_eligible(c)]
    if not eligible:
        return []
    threshold = percentile([scores[i] for i in eligible], 100 - keep)
    return [i for i in eligible if scores[i] >= threshold]


def make_work(
    problem: Problem, config: SearchConfig, answers: AnswerSpec, grouper: voting.AnswerGrouper
) -> Work:
    return DeepConfWork(problem, config, answers, grouper)


def curves(n: int, settings: Mapping[str, Any]) -> list[Curve]:
    return [Curve(curve_name(SPEC, settings), (n,), prm=False, route=None)]


SPEC = register_strategy(
    StrategySpec(
        name="deepconf",
        summary="n samples, vote filtered and weighted by the policy's confidence (Fu et al. 2025)",
        make_work=make_work,
        needs_prm=False,
        routable=False,
        reads=(),
        options=DeepConfOptions,
        curves=curves,
        undelimited_effect=None,
        needs_logprobs=True,
    )
)
