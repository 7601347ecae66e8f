"""Accuracy@n per problem from trace records, and bootstrap confidence intervals.

The curves a run yields are its strategy's (``StrategySpec.curves``, :class:`tts_eval.search.Curve`):
for the built-in strategies (``N`` a run's budget, ``M`` its beam width, ``n`` every power of two
the run can serve):

- a ``best_of_n`` run gives ``best_of_n`` (its own ``selection``/``agg``), ``majority`` (the same
  samples voted without the PRM) and ``pass@n`` (coverage: whether any of ``n`` samples is
  correct, the unbiased estimator of :func:`tts_eval.search.voting.pass_at_k`), for n <= N;
- a ``majority`` run gives ``majority`` and ``pass@n`` for n <= N;
- a ``dvts`` run gives ``dvts`` for n = M, 2M, ... <= N from whole subtrees (``Candidate.group``);
- any other run gives its own curve at n = N only. A run whose strategy's own options differ from
  their defaults names them in its curve (``particle_gibbs (pg_iterations=4)``,
  ``dvts (beam_width=8)``; :func:`tts_eval.search.spec.curve_name`). Records of a strategy that is
  not registered give their own curve at n = N.

Exchangeable estimates average the selection's correctness over subsets of the samples
(subtrees for dvts): ALL ``C(N, n)`` subsets when there are at most ``max_exact`` of them (exact),
otherwise ``draws`` random subsets (not the first ``n``) from a generator seeded by
``(seed, uid, curve, n)``. At n = N the run's own recorded selection is used. Selection reuses
:mod:`tts_eval.search.voting`. Tokens at n < N are the run's tokens scaled by n/N, the expected
cost of ``n`` exchangeable samples. Curves that use no PRM (``majority``, ``pass@n``) cost no PRM
tokens even when read off a ``best_of_n`` run (whose PRM tokens belong to its ``best_of_n``
curve); their policy tokens are the sampled ones.

When several runs serve the same (curve, n), a run of that strategy at exactly n wins, otherwise
the run with the largest budget.

Confidence intervals: percentile bootstrap over problems (resampling the per-problem accuracies,
``iters`` times, fixed seed).

What this module does not do: render tables or figures (``report``, ``plot``).
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tts_eval.errors import DataError
from tts_eval.search import Curve, get_spec, strategy_names
from tts_eval.search.majority import COVERAGE
from tts_eval.types import AnswerSpec, Candidate, SearchResult

logger = logging.getLogger(__name__)

FITTED = "compute_optimal (fitted)"  # the curve a fitted routing table would give


def curve_order() -> tuple[str, ...]:
    """Curves in report order: the registered strategies, the fitted table, coverage."""
    return (*strategy_names(), FITTED, COVERAGE)


def prm_free_curves() -> tuple[str, ...]:
    """Curves that select without a PRM (charged no PRM tokens): those of strategies that need
    none, and coverage."""
    return (*(name for name in strategy_names() if not get_spec(name).needs_prm), COVERAGE)


@dataclass(frozen=True)
class EstimateSettings:
    """How accuracy@n is estimated; see the module docstring."""

    max_exact: int = 256
    draws: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_exact", "draws"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DataError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass
class CurvePoint:
    """Per-problem accuracy (in [0, 1]) and tokens of one curve at one budget."""

    curve: str
    n: int
    run_key: str
    run_strategy: str
    run_n: int
    # The strategy a compute-optimal table would route to for this curve (None: not routable).
    route: str | None = None
    accuracy: dict[str, float] = field(default_factory=dict)
    policy_tokens: dict[str, float] = field(default_factory=dict)
    prm_tokens: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ProblemInfo:
    uid: str
    gold: str
    level: str | None
    subject: str | None


def problem_info(record: Mapping[str, Any]) -> ProblemInfo:
    doc = record.get("doc") or {}
    if "answer" not in doc:
        raise DataError(
            f"trace record {record.get('uid')} has no gold answer (doc.answer); "
            "records must be written with the task's document (result_record(..., doc=doc))"
        )
    level = doc.get("level")
    return ProblemInfo(
        str(record["uid"]),
        str(doc["answer"]),
        None if level is None else str(level),
        None if doc.get("subject") is None else str(doc["subject"]),
    )


def subsets(total: int, k: int, key: str, settings: EstimateSettings) -> list[tuple[int, ...]]:
    """All k-subsets of ``range(total)`` when few enough, else ``draws`` seeded random ones."""
    if not 1 <= k <= total:
        raise ValueError(f"subset size must be in 1..{total}, got {k}")
    if math.comb(total, k) <= settings.max_exact:
        return list(itertools.combinations(range(total), k))
    rng = random.Random(f"{settings.seed}/{key}")
    return [tuple(sorted(rng.sample(range(total), k))) for _ in range(settings.draws)]


class Grader:
    """Correctness of answers against gold answers, cached per (canonical answer, gold)."""

    def __init__(self, spec: AnswerSpec, is_correct: Callable[[str, str], bool]) -> None:
        self.spec = spec
        self.is_correct = is_correct
        self._cache: dict[tuple[str, str], bool] = {}

    def __call__(self, answer: str | None, gold: str) -> bool:
        if answer is None:
            return False
        key = (self.spec.canonical(answer), gold)
        verdict = self._cache.get(key)
        if verdict is None:
            verdict = self._cache[key] = bool(self.is_correct(answer, gold))
        return verdict


def _subset_accuracy(
    result: SearchResult,
    items: Sequence[Sequence[int]],
    k: int,
    choose: Callable[[Sequence[Candidate]], int | None],
    correct: Sequence[bool],
    key: str,
    settings: EstimateSettings,
) -> float:
    hits = 0
    chosen = subsets(len(items), k, key, settings)
    for subset in chosen:
        members = [i for item in subset for i in items[item]]
        pick = choose([result.candidates[i] for i in members])
        hits += pick is not None and correct[members[pick]]
    return hits / len(chosen)


def _items(result: SearchResult, groups: bool) -> list[list[int]]:
    """The exchangeable items of a result: single candidates, or whole groups (subtrees)."""
    if not groups:
        return [[i] for i in range(len(result.candidates))]
    by_group: dict[int, list[int]] = {}
    for i, c in enumerate(result.candidates):
        by_group.setdefault(c.group, []).append(i)
    return [by_group[g] for g in sorted(by_group)]


def run_curves(strategy: str, settings: Mapping[str, Any]) -> list[Curve]:
    """The curves a run of ``strategy`` with these (recorded) search settings yields: its spec's,
    or its own curve at its budget for a strategy that is not registered."""
    n = int(settings["n"])
    if strategy not in strategy_names():
        return [Curve(strategy, (n,))]
    return get_spec(strategy).curves_of(n, settings)


def estimate_run(
    records: Sequence[Mapping[str, Any]],
    key: str,
    spec: AnswerSpec,
    grader: Grader,
    settings: EstimateSettings,
) -> list[CurvePoint]:
    """Every curve point one run serves (see the module docstring)."""
    from tts_eval.search import voting
    from tts_eval.traces import result_from_record

    if not records:
        return []
    grouper = voting.AnswerGrouper(spec)
    strategy = str(records[0]["strategy"])
    run_settings = dict(records[0].get("settings") or {})
    run_n = int(run_settings["n"])
    curves = run_curves(strategy, run_settings)
    points = {
        (curve.name, n): (curve, CurvePoint(curve.name, n, key, strategy, run_n, curve.route))
        for curve in curves
        for n in curve.budgets
    }
    for record in records:
        info = problem_info(record)
        result = result_from_record(record)
        correct = [voting.is_eligible(c) and grader(c.answer, info.gold) for c in result.candidates]
        for (name, n), (curve, point) in points.items():
            scale = n / run_n
            point.policy_tokens[info.uid] = result.cost.policy_tokens * scale
            prm_tokens = result.cost.prm_tokens if curve.prm else 0
            point.prm_tokens[info.uid] = prm_tokens * scale
            if curve.coverage:
                total = len(result.candidates)
                point.accuracy[info.uid] = (
                    voting.pass_at_k(total, sum(correct), n) if total >= n else float(any(correct))
                )
            elif n == run_n and curve.own:
                point.accuracy[info.uid] = float(
                    result.selected is not None and correct[result.selected]
                )
            elif curve.choose is not None:
                items = _items(result, curve.groups)
                k = n * len(items) // run_n
                if k < 1 or k > len(items):
                    continue
                choose = curve.choose

                def pick(cs: Sequence[Candidate], choose=choose) -> int | None:
                    return choose(cs, grouper, run_settings)

                point.accuracy[info.uid] = _subset_accuracy(
                    result, items, k, pick, correct, f"{info.uid}/{name}/{n}", settings
                )
            else:
                point.accuracy[info.uid] = float(
                    result.selected is not None and correct[result.selected]
                )
    return [point for _, point in points.values()]


def collect_points(points: Sequence[CurvePoint]) -> dict[tuple[str, int], CurvePoint]:
    """One point per (curve, n): a direct run (strategy at exactly n) wins, then the larger run."""

    def rank(point: CurvePoint) -> tuple[bool, int]:
        return (point.run_strategy == point.curve and point.run_n == point.n, point.run_n)

    best: dict[tuple[str, int], CurvePoint] = {}
    for point in points:
        slot = (point.curve, point.n)
        if slot not in best or rank(point) > rank(best[slot]):
            best[slot] = point
    return best


def bootstrap_ci(
    values: Sequence[float], iters: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling them)."""
    import numpy as np

    if not values:
        return (math.nan, math.nan)
    data = np.asarray(values, dtype=float)
    if iters < 1 or data.min() == data.max():
        return (float(data.mean()), float(data.mean()))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(iters, len(data)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return (float(low), float(high))


def accuracy_cell(values: Sequence[float], iters: int, seed: int) -> dict[str, Any]:
    """Mean accuracy of per-problem ``values``, its bootstrap interval and the problem count."""
    low, high = bootstrap_ci(values, iters=iters, seed=seed)
    return {
        "accuracy": math.fsum(values) / len(values),
        "ci_low": low,
        "ci_high": high,
        "problems": len(values),
    }


def accuracy_by(
    accuracy: Mapping[str, float],
    label_of: Callable[[str], str | None],
    iters: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """:func:`accuracy_cell` per label (e.g. MATH level) of the problems; problems without one
    are left out; labels in natural order ("2" before "10")."""
    groups: dict[str, list[float]] = {}
    for key, value in accuracy.items():
        label = label_of(key)
        if label is not None:
            groups.setdefault(label, []).append(value)
    return {
        label: accuracy_cell(groups[label], iters, seed)
        for label in sorted(groups, key=lambda s: (len(s), s))
    }


def difficulty_scores(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each problem's expected compute_optimal probe score, from a PRM-scored sampling run.

    The probe score (``tts_eval.search.compute_optimal.probe_score``) is the mean aggregated score
    of the probe samples, unfinished ones counting 0.0; over all ``N`` samples of a ``best_of_n``
    run this is its expectation for any probe size.
    """
    from tts_eval.search.compute_optimal import probe_score
    from tts_eval.traces import result_from_record

    out = {}
    for record in records:
        agg = str((record.get("settings") or {}).get("agg", "last"))
        out[str(record["uid"])] = probe_score(result_from_record(record), agg)
    return out


def curve_sort_key(curve: str) -> tuple[int, str]:
    """Report order of a curve: by its strategy (named options follow it), then by name."""
    order = curve_order()
    base = curve if curve in order else curve.split(" (", 1)[0]
    return (order.index(base) if base in order else len(order), curve)
