"""Pure confidence scores of a trace from the policy's own token log-probabilities, and the votes
and stop tests built on them (scorers that stand in for a PRM: no PRM FLOPs).

Inputs are the :class:`~tts_eval.types.TokenLogprobs` that engines return when a request sets
``SamplingParams.logprobs = k``: per generated token, the top-``k`` log-probabilities of the
model's distribution at temperature 1 (raw, before temperature or top-p).

DeepConf (Fu et al. 2025, "Deep Think with Confidence", arXiv:2508.15260):

- token confidence ``C_i = -(1/k) sum_{j<=k} log P_i(j)`` over the top ``k`` tokens at position
  ``i`` (:func:`token_confidence`; high = a peaked distribution). The authors' code averages the
  entries of vLLM's per-position dict, which also holds the generated token when it is outside the
  top ``k``; here it is the paper's top ``k`` only.
- group confidence: the mean of ``C`` over a sliding window of ``window`` tokens, one per full
  window (:func:`group_confidences`; a trace shorter than the window has one group, its mean, as in
  the authors' code). A trace's score (:class:`TraceScore`): its lowest group confidence, the mean
  of its lowest ``bottom`` share of groups ("bottom 10%"), its tail confidence (the mean ``C`` of
  its last ``tail`` tokens) or its mean ``C``. The paper's window and tail are 2048 tokens.
- confidence-filtered voting (:func:`confidence_filtered_vote`): keep the traces whose score is at
  least the ``100 - keep_percent`` percentile of the scores (linear interpolation, numpy's default
  and the authors' ``np.percentile``; DeepConf-low keeps 10%, -high 90%), then a vote weighted by
  the scores.
- online (:func:`online_threshold`, :func:`first_low_confidence`): the threshold is that percentile
  of a first wave's scores; a later trace stops after the first token at which its group
  confidence over a full window falls below it.

Self-certainty (Kang et al. 2025, "Scalable Best-of-N Selection for Large Language Models via
Self-Certainty", arXiv:2502.18581): the mean over tokens of ``KL(U || P_i) = -log V - (1/V)
sum_j log P_i(j)``, the divergence of the token distribution from uniform over the vocabulary
(:func:`self_certainty`). From top-``k`` log-probabilities it is computed on the top ``k``
renormalised, ``KL(U_k || P_i restricted to the top k)``: exact when ``k`` is the whole
vocabulary, otherwise the same divergence over the ``k`` tokens that carry most of the mass
(the tail's individual probabilities are unknown from top-``k`` output).

In place of a PRM (``self_score=KIND``, ``prm=self``; :class:`SelfScorer`): searches keep, per
generated token, the value the kind reads (:func:`token_value`: DeepConf's token confidence, or
the token's self-certainty) and a step's score is the kind's score (:func:`score_values`) of the
solution's tokens up to the end of the generation request that closed the step: its prefix in the
step-level searches (one request per step), the whole solution for every step of a sample drawn
in one request (best-of-N). The kinds: ``lowest_group_confidence``, ``bottom_group_confidence``
(lowest 10% of groups), ``tail_confidence`` (both over ``confidence_window`` tokens),
``mean_confidence`` and ``self_certainty``. They are >= 0 and not probabilities (higher: more
confident); no PRM tokens are counted.

Conventions: an empty trace scores 0.0 (no confidence; all these scores are >= 0). Only eligible
candidates (:func:`~tts_eval.search.voting.is_eligible`) vote; answers are grouped by an
:class:`~tts_eval.search.voting.AnswerGrouper`, with the weighted vote's tie rules.

What this module does not do: request log-probabilities (engines), stop generation (strategies
read :func:`first_low_confidence`), or choose defaults for a run (settings).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from tts_eval.search.config import SELF_SCORES
from tts_eval.search.voting import AnswerGrouper, is_eligible, weighted_vote_by
from tts_eval.types import Candidate, PRMOutput, PRMRequest, TokenLogprobs

SCORE_KINDS = ("lowest_group", "bottom_group", "tail", "mean", "self_certainty")
# ``self_score`` setting -> TraceScore kind
SELF_SCORE_KINDS = dict(zip(SELF_SCORES, SCORE_KINDS, strict=True))
DEFAULT_SELF_SCORE = "lowest_group_confidence"  # DeepConf's trace score
BOTTOM_SHARE = 0.1  # DeepConf's "bottom 10%" groups


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_percent(name: str, value: float) -> None:
    if not isinstance(value, int | float) or not 0 < value <= 100:
        raise ValueError(f"{name} must be in (0, 100], got {value!r}")


@dataclass(frozen=True)
class TraceScore:
    """How a trace's token log-probabilities become one score (module docstring).

    ``kind``: ``lowest_group`` (DeepConf's lowest group confidence), ``bottom_group`` (mean of the
    lowest ``bottom`` share of group confidences, at least one), ``tail`` (mean token confidence of
    the last ``tail`` tokens), ``mean`` (mean token confidence) or ``self_certainty``.
    """

    kind: str = "lowest_group"
    window: int = 2048
    tail: int = 2048
    bottom: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in SCORE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(SCORE_KINDS)}; got {self.kind!r}")
        _positive_int("window", self.window)
        _positive_int("tail", self.tail)
        if not isinstance(self.bottom, int | float) or not 0 < self.bottom <= 1:
            raise ValueError(f"bottom must be in (0, 1], got {self.bottom!r}")


def token_confidence(entry: TokenLogprobs) -> float:
    """DeepConf's ``-mean`` of the top-``k`` log-probabilities at one position."""
    if not entry.top_logprobs:
        raise ValueError(
            "token confidence needs the top-k log-probabilities; request logprobs >= 1, got 0"
        )
    return -math.fsum(entry.top_logprobs) / len(entry.top_logprobs)


def token_confidences(logprobs: Sequence[TokenLogprobs]) -> list[float]:
    """:func:`token_confidence` of every position of a trace."""
    return [token_confidence(entry) for entry in logprobs]


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def group_confidences(confidences: Sequence[float], window: int) -> list[float]:
    """Means of every full sliding window of ``window`` token confidences (one per window end);
    a trace shorter than ``window`` gives its mean, an empty one nothing."""
    _positive_int("window", window)
    n = len(confidences)
    if n == 0:
        return []
    if n < window:
        return [_mean(confidences)]
    return _window_means(confidences, window)


def _window_means(confidences: Sequence[float], window: int) -> list[float]:
    """Means of the full windows, from prefix sums (O(n) for any window; the online stop test
    reads the same numbers, so a trace is stopped online exactly when a window scores below)."""
    prefix = [0.0, *itertools.accumulate(float(c) for c in confidences)]
    return [(prefix[end] - prefix[end - window]) / window for end in range(window, len(prefix))]


def lowest_group_confidence(confidences: Sequence[float], window: int) -> float:
    """DeepConf's lowest group confidence of a trace (0.0 when empty)."""
    groups = group_confidences(confidences, window)
    return min(groups) if groups else 0.0


def bottom_group_confidence(confidences: Sequence[float], window: int, bottom: float) -> float:
    """Mean of the lowest ``max(1, floor(bottom x groups))`` group confidences (0.0 when empty)."""
    if not 0 < bottom <= 1:
        raise ValueError(f"bottom must be in (0, 1], got {bottom!r}")
    groups = sorted(group_confidences(confidences, window))
    if not groups:
        return 0.0
    return _mean(groups[: max(1, int(len(groups) * bottom))])


def tail_confidence(confidences: Sequence[float], tail: int) -> float:
    """Mean token confidence of the last ``tail`` tokens (all of a shorter trace; 0.0 if empty)."""
    _positive_int("tail", tail)
    return _mean(confidences[-tail:])


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


def token_self_certainty(entry: TokenLogprobs) -> float:
    """``KL(U_k || p)`` with ``p`` the top ``k`` renormalised: ``-log k - mean_j log p_j``."""
    k = len(entry.top_logprobs)
    if k < 2:
        raise ValueError(
            f"self-certainty needs at least 2 top log-probabilities per token; request "
            f"logprobs >= 2, got {k}"
        )
    norm = _logsumexp(entry.top_logprobs)
    return -math.log(k) - math.fsum(v - norm for v in entry.top_logprobs) / k


def self_certainty(logprobs: Sequence[TokenLogprobs]) -> float:
    """Kang et al.'s self-certainty of a trace: the mean of :func:`token_self_certainty`."""
    return _mean([token_self_certainty(entry) for entry in logprobs])


def trace_score(logprobs: Sequence[TokenLogprobs], score: TraceScore) -> float:
    """One trace's score under ``score`` (module docstring)."""
    if score.kind == "self_certainty":
        return self_certainty(logprobs)
    confidences = token_confidences(logprobs)
    if score.kind == "lowest_group":
        return lowest_group_confidence(confidences, score.window)
    if score.kind == "bottom_group":
        return bottom_group_confidence(confidences, score.window, score.bottom)
    if score.kind == "tail":
        return tail_confidence(confidences, score.tail)
    return _mean(confidences)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` by linear interpolation between the two nearest
    ranks (numpy's default ``method="linear"``)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q!r}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    lo = math.floor(position)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (position - lo)


def _check_scores(candidates: Sequence[Candidate], scores: Sequence[float]) -> None:
    if len(scores) != len(candidates):
        raise ValueError(f"{len(scores)} scores for {len(candidates)} candidates")
    bad = next((s for s in scores if not math.isfinite(s)), None)
    if bad is not None:
        raise ValueError(f"scores must be finite, got {bad!r}")


def confidence_filtered_vote(
    candidates: Sequence[Candidate],
    grouper: AnswerGrouper,
    scores: Sequence[float],
    keep_percent: float = 10.0,
) -> int | None:
    """DeepConf's filtered vote: index of the selected candidate, None when none is eligible.

    Among the eligible candidates, those whose score is at least the ``100 - keep_percent``
    percentile of their scores (:func:`percentile`; ties at the threshold stay) vote, each with its
    score as weight, by :func:`~tts_eval.search.voting.weighted_vote_by` (ties: the larger group,
    then the group appearing first; within the group the highest score, then the lowest index).
    """
    _check_percent("keep_percent", keep_percent)
    _check_scores(candidates, scores)
    eligible = [i for i, c in enumerate(candidates) if is_eligible(c)]
    if not eligible:
        return None
    threshold = percentile([scores[i] for i in eligible], 100 - keep_percent)
    kept = [i for i in eligible if scores[i] >= threshold]
    chosen = weighted_vote_by([candidates[i] for i in kept], grouper, [scores[i] for i in kept])
    return None if chosen is None else kept[chosen]


def online_threshold(warmup_scores: Sequence[float], keep_percent: float = 10.0) -> float:
    """DeepConf online: the stop threshold from a first wave's trace scores, their
    ``100 - keep_percent`` percentile (DeepConf-low: keep 10%, the 90th percentile)."""
    _check_percent("keep_percent", keep_percent)
    if not warmup_scores:
        raise ValueError("warmup_scores must hold the scores of at least one trace")
    return percentile(warmup_scores, 100 - keep_percent)


def first_low_confidence(confidences: Sequence[float], window: int, threshold: float) -> int | None:
    """DeepConf online stop: the number of tokens after which the trace stops, i.e. the end of the
    first full window whose group confidence is below ``threshold``; None if none is (a trace
    shorter than ``window`` never stops)."""
    _positive_int("window", window)
    if len(confidences) < window:
        return None
    for end, mean in enumerate(_window_means(confidences, window), start=window):
        if mean < threshold:
            return end
    return None


def token_value(entry: TokenLogprobs, self_score: str) -> float:
    """The per-token value a ``self_score`` kind reads: the token's self-certainty for
    ``self_certainty``, its DeepConf token confidence for the others."""
    if self_score == "self_certainty":
        return token_self_certainty(entry)
    return token_confidence(entry)


def score_values(values: Sequence[float], self_score: str, window: int) -> float:
    """A trace's ``self_score`` from its per-token values (:func:`token_value`); ``window`` is the
    group window and the tail length."""
    kind = SELF_SCORE_KINDS.get(self_score)
    if kind is None:
        raise ValueError(f"self_score must be one of {', '.join(SELF_SCORES)}; got {self_score!r}")
    if kind == "lowest_group":
        return lowest_group_confidence(values, window)
    if kind == "bottom_group":
        return bottom_group_confidence(values, window, BOTTOM_SHARE)
    if kind == "tail":
        return tail_confidence(values, window)
    return _mean(values)  # mean confidence, or self-certainty (the mean of its token values)


class SelfScorer:
    """A :class:`~tts_eval.types.ProcessRewardModel` that scores steps with the policy's own
    confidence (module docstring): step ``i`` scores :func:`score_values` of the request's
    ``token_values[:step_token_ends[i]]``; no PRM tokens are processed."""

    tokenizer = None
    device = None

    def __init__(self, self_score: str, window: int) -> None:
        if self_score not in SELF_SCORES:
            raise ValueError(
                f"self_score must be one of {', '.join(SELF_SCORES)}; got {self_score!r}"
            )
        _positive_int("window", window)
        self.self_score = self_score
        self.window = window

    def score(self, requests: Sequence[PRMRequest]) -> list[PRMOutput]:
        out = []
        for request in requests:
            values, ends = request.token_values, request.step_token_ends
            if values is None or ends is None or len(ends) != len(request.steps):
                raise ValueError(
                    "self-scoring needs each request's token values and step ends (a search run "
                    "with self_score set and log-probabilities from the engine)"
                )
            scores = tuple(score_values(values[:end], self.self_score, self.window) for end in ends)
            out.append(PRMOutput(scores, 0))
        return out

    def close(self) -> None:
        """Nothing to free."""
