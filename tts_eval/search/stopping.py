"""Pure early-stopping rules for sampling: read the answers drawn so far, say whether to stop.

A rule reads one problem's answer groups in sample order (the group ids that
:class:`~tts_eval.search.voting.AnswerGrouper` gives, numbered by first appearance; ``None`` where a
sample has no eligible answer) and returns a :class:`StopDecision`. Strategies draw samples in
waves and ask the rule after each wave (``../shared/DESIGN.md``, "Adaptive compute").

- :class:`AdaptiveConsistency` (Aggarwal et al. 2023, "Let's Sample Step by Step:
  Adaptive-Consistency for Efficient Reasoning and Coding with LLMs", EMNLP 2023): with answer
  counts ``c_1 >= c_2 >= ...``, stop when the posterior probability that the leading answer is the
  majority of the answer distribution reaches ``threshold`` (the paper's default 0.95).
  ``prior="beta"`` (the paper's default criterion): ``P(p > 1/2)`` for ``p ~ Beta(c_1 + 1, c_2 + 1)``,
  computed exactly (:func:`beta_majority_probability`). ``prior="dirichlet"``: ``P(p_1 > p_j for
  every j)`` for ``p ~ Dirichlet(c_1 + 1, ..., c_K + 1)`` over all answer groups seen
  (:func:`dirichlet_majority_probability`: a deterministic one-dimensional quadrature, no sampling).
  The authors' code estimates that integral by Monte Carlo over the 5 most common answers; here all
  groups take part. With fewer than 3 groups the Dirichlet rule is the Beta rule (as in the
  authors' code; with 2 groups the two are the same integral).
- :class:`EarlyStoppingConsistency` (ESC; Li et al. 2024, "Escape Sky-high Cost: Early-stopping
  Self-Consistency for Multi-step Reasoning", ICLR 2024): samples fall into consecutive,
  non-overlapping windows of ``window`` samples (samples ``0..w-1``, ``w..2w-1``, ...); stop as soon
  as one complete window's answers are all the same (zero entropy). With waves of ``window``
  samples this is the paper's procedure exactly; with other wave sizes the rule still fires at the
  first unanimous aligned window among the answers it is given (``StopDecision.at`` says which).

Answers that are ``None`` (no eligible answer: unfinished, or nothing extracted) never vote, as in
:mod:`tts_eval.search.voting`: Adaptive-Consistency counts only the samples with an answer, and an
ESC window holding a ``None`` is not unanimous. A problem whose samples never answer therefore runs
its whole budget, as without a rule. Ties for the lead go to the group appearing first (the
majority vote's rule).

What this module does not do: draw samples, group answers (``voting.AnswerGrouper``), or choose
the answer after stopping (the strategy votes over the samples drawn).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

PRIORS = ("beta", "dirichlet")


@dataclass(frozen=True)
class AdaptiveConsistency:
    """Adaptive-Consistency's rule (module docstring): stop when ``P(leader is the majority) >=
    threshold`` under the ``prior`` posterior."""

    threshold: float = 0.95
    prior: str = "beta"

    def __post_init__(self) -> None:
        if not isinstance(self.threshold, int | float) or not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(PRIORS)}; got {self.prior!r}")


@dataclass(frozen=True)
class EarlyStoppingConsistency:
    """ESC's rule (module docstring): stop at the first complete window of ``window`` samples whose
    answers are all the same."""

    window: int = 5

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 2:
            raise ValueError(f"window must be an integer >= 2, got {self.window!r}")


StoppingRule = AdaptiveConsistency | EarlyStoppingConsistency


@dataclass(frozen=True)
class StopDecision:
    """What a rule made of the answers so far.

    ``stop``: whether to stop drawing samples. ``at``: the number of samples after which the rule
    fired (ESC: the end of the first unanimous window; Adaptive-Consistency: all samples read), None
    when it did not. ``leader``: the leading answer group (None without answers). ``probability``:
    Adaptive-Consistency's posterior probability that the leader is the majority (None for ESC).
    ``reason``: one line for the trace.
    """

    stop: bool
    at: int | None
    leader: int | None
    probability: float | None
    reason: str


def answer_counts(groups: Sequence[int | None]) -> list[tuple[int, int]]:
    """``(group, count)`` of the answered samples, largest count first, ties by first appearance."""
    counts = Counter(g for g in groups if g is not None)
    first = {}
    for index, g in enumerate(groups):
        if g is not None and g not in first:
            first[g] = index
    return sorted(counts.items(), key=lambda item: (-item[1], first[item[0]]))


def beta_majority_probability(c1: int, c2: int) -> float:
    """``P(p > 1/2)`` for ``p ~ Beta(c1 + 1, c2 + 1)``, exactly.

    For integer parameters ``P(Beta(a, b) <= x) = P(Binomial(a + b - 1, x) >= a)``, so with
    ``n = c1 + c2 + 1`` the probability is ``sum_{j <= c1} C(n, j) / 2**n`` (integers, one rounding).
    """
    if c1 < 0 or c2 < 0:
        raise ValueError(f"counts must be >= 0, got c1={c1}, c2={c2}")
    n = c1 + c2 + 1
    return sum(math.comb(n, j) for j in range(c1 + 1)) / 2**n


# Gauss-Legendre rule on each of QUAD_PANELS equal panels: the Dirichlet integrand is smooth, and
# 64 panels x 24 nodes reproduce exact rational values to ~1e-13 (tests/test_search_stopping.py).
QUAD_NODES = 24
QUAD_PANELS = 64


@lru_cache(maxsize=1)
def _legendre_rule() -> tuple[tuple[float, float], ...]:
    """Nodes and weights of the ``QUAD_NODES``-point Gauss-Legendre rule on [-1, 1] (Newton's
    method on the Legendre recurrence; deterministic)."""
    n = QUAD_NODES
    rule = []
    for i in range(1, n + 1):
        x = math.cos(math.pi * (i - 0.25) / (n + 0.5))
        for _ in range(100):
            p0, p1 = 1.0, x
            for m in range(2, n + 1):
                p0, p1 = p1, ((2 * m - 1) * x * p1 - (m - 1) * p0) / m
            dp = n * (x * p1 - p0) / (x * x - 1)
            step = p1 / dp
            x -= step
            if abs(step) < 1e-16:
                break
        p0, p1 = 1.0, x
        for m in range(2, n + 1):
            p0, p1 = p1, ((2 * m - 1) * x * p1 - (m - 1) * p0) / m
        dp = n * (x * p1 - p0) / (x * x - 1)
        rule.append((x, 2 / ((1 - x * x) * dp * dp)))
    return tuple(rule)


def _gamma_cdf(a: int, x: float) -> float:
    """``P(Gamma(a, 1) <= x)`` for an integer shape ``a >= 1``: ``1 - e^-x sum_{i<a} x^i / i!``
    (below the mode, the complementary series ``e^-x sum_{i>=a} x^i / i!`` keeps precision)."""
    if x <= 0:
        return 0.0
    log_x = math.log(x)
    if x < a:  # sum_{i >= a} e^-x x^i / i!, terms decreasing from i = a
        total, i = 0.0, a
        term = math.exp(-x + i * log_x - math.lgamma(i + 1))
        while term > 1e-17 * max(total, 1e-300) or i < a + 1:
            total += term
            i += 1
            term *= x / i
        return min(total, 1.0)
    # 1 - sum_{i < a} e^-x x^i / i!, terms increasing up to i = a - 1: summed from the top down
    total, i = 0.0, a - 1
    term = math.exp(-x + i * log_x - math.lgamma(i + 1))
    while i >= 0 and term > 1e-17 * max(total, 1e-300):
        total += term
        term *= i / x
        i -= 1
    return max(0.0, 1.0 - total)


def dirichlet_majority_probability(counts: Sequence[int]) -> float:
    """``P(p_0 > p_j for all j > 0)`` for ``p ~ Dirichlet(counts[0] + 1, ..., counts[-1] + 1)``.

    With ``p_j = G_j / sum(G)`` for independent ``G_j ~ Gamma(counts[j] + 1, 1)``, this is
    ``int_0^inf f_0(x) prod_{j>0} F_j(x) dx`` (``f``/``F``: the Gamma densities and distribution
    functions), a smooth one-dimensional integral, computed by composite Gauss-Legendre over
    ``[0, U]`` with ``U`` far in the tail of ``G_0`` (the part beyond is below 1e-15).
    Deterministic; ``counts[0]`` need not be the largest.
    """
    if not counts:
        raise ValueError("counts must name at least one answer group")
    if any(c < 0 for c in counts):
        raise ValueError(f"counts must be >= 0, got {list(counts)}")
    a = counts[0] + 1
    others = Counter(c + 1 for c in counts[1:])  # shape -> how many groups have it
    if not others:
        return 1.0
    upper = a + 12 * math.sqrt(a) + 40
    width = upper / QUAD_PANELS
    log_norm = math.lgamma(a)
    total = 0.0
    for panel in range(QUAD_PANELS):
        mid = (panel + 0.5) * width
        for node, weight in _legendre_rule():
            x = mid + 0.5 * width * node
            density = math.exp((a - 1) * math.log(x) - x - log_norm)
            cdfs = 1.0
            for shape, times in others.items():
                cdfs *= _gamma_cdf(shape, x) ** times
                if cdfs == 0.0:
                    break
            total += 0.5 * width * weight * density * cdfs
    return min(1.0, max(0.0, total))


def majority_probability(groups: Sequence[int | None], prior: str = "beta") -> float:
    """Adaptive-Consistency's posterior probability that the leading answer is the majority."""
    ranked = answer_counts(groups)
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {', '.join(PRIORS)}; got {prior!r}")
    if not ranked:
        return 0.0
    counts = [count for _, count in ranked]
    if prior == "dirichlet" and len(counts) >= 3:
        return dirichlet_majority_probability(counts)
    return beta_majority_probability(counts[0], counts[1] if len(counts) > 1 else 0)


def adaptive_consistency(groups: Sequence[int | None], rule: AdaptiveConsistency) -> StopDecision:
    """:class:`AdaptiveConsistency` on the answers so far (module docstring)."""
    ranked = answer_counts(groups)
    if not ranked:
        return StopDecision(False, None, None, None, "adaptive: no answers yet")
    probability = majority_probability(groups, rule.prior)
    stop = probability >= rule.threshold
    counts = ",".join(str(c) for _, c in ranked)
    reason = (
        f"adaptive ({rule.prior}): P(leader is the majority)={probability:.4f} "
        f"{'>=' if stop else '<'} {rule.threshold:g} with answer counts {counts} of "
        f"{len(groups)} samples"
    )
    return StopDecision(stop, len(groups) if stop else None, ranked[0][0], probability, reason)


def early_stopping_consistency(
    groups: Sequence[int | None], rule: EarlyStoppingConsistency
) -> StopDecision:
    """:class:`EarlyStoppingConsistency` on the answers so far (module docstring)."""
    w = rule.window
    ranked = answer_counts(groups)
    leader = ranked[0][0] if ranked else None
    for end in range(w, len(groups) + 1, w):
        window = groups[end - w : end]
        if window[0] is not None and all(g == window[0] for g in window):
            reason = f"esc: samples {end - w + 1}-{end} (window {w}) all give the same answer"
            return StopDecision(True, end, window[0], None, reason)
    complete = len(groups) // w
    reason = f"esc: none of {complete} complete window(s) of {w} samples is unanimous"
    return StopDecision(False, None, leader, None, reason)


def decide(groups: Sequence[int | None], rule: StoppingRule) -> StopDecision:
    """Apply ``rule`` to the answer groups of one problem's samples, in sample order."""
    if isinstance(rule, AdaptiveConsistency):
        return adaptive_consistency(groups, rule)
    if isinstance(rule, EarlyStoppingConsistency):
        return early_stopping_consistency(groups, rule)
    raise TypeError(
        f"rule must be an AdaptiveConsistency or EarlyStoppingConsistency, got {type(rule)}"
    )
