"""Best-of-N: ``n`` full samples, the finished ones scored by the PRM, then a selection rule.

``selection=naive`` picks the single best-scored eligible candidate; ``selection=weighted``
(default) picks the answer group with the largest sum of aggregated scores (``agg``). Sampling is
shared with majority voting (same seed, same samples); see :class:`majority.SamplingWork`. So a
run also yields the majority curve (its samples voted without the PRM), and a sweep that runs
best-of-N needs no majority run. Early stopping (``stop=adaptive|esc``, ``wave``; the rule reads the
answers, the PRM scores the finished samples once the problem stopped) is majority's
(:class:`majority.SamplingOptions`); a run with a rule yields its own curve only.

What this module does not do: step-level search (``beam_search``, ``dvts``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tts_eval.search import voting
from tts_eval.search._driver import Work
from tts_eval.search.majority import (
    SamplingOptions,
    SamplingWork,
    largest_budget,
    sampling_curves,
    stopped_curves,
)
from tts_eval.search.spec import Curve, StrategySpec, register_strategy
from tts_eval.types import AnswerSpec, Problem

if TYPE_CHECKING:
    from tts_eval.search.config import SearchConfig


def make_work(
    problem: Problem, config: SearchConfig, answers: AnswerSpec, grouper: voting.AnswerGrouper
) -> Work:
    return SamplingWork(
        problem,
        config,
        answers,
        grouper,
        strategy="best_of_n",
        use_prm=True,
        selection=config.selection,
    )


def curves(n: int, settings: Mapping[str, Any]) -> list[Curve]:
    return stopped_curves(SPEC, n, settings) or sampling_curves(n, "best_of_n")


SPEC = register_strategy(
    StrategySpec(
        name="best_of_n",
        summary="n samples, PRM-weighted or best single answer",
        make_work=make_work,
        needs_prm=True,
        reads=("agg", "selection"),
        options=SamplingOptions,
        plan=largest_budget,
        curves=curves,
        scores_samples=True,
        one_request=True,
    )
)
