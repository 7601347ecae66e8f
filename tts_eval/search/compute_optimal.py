"""Compute-optimal search: pick a strategy per problem from its estimated difficulty.

Difficulty probe: ``probe_n`` whole solutions are sampled (one request, seeded from
``(seed, uid, "probe")``) and the finished ones scored by the PRM. The probe score is the mean
over ALL probe samples of their aggregated score (``agg``), a sample that did not finish counting
0.0. Higher probe score = easier problem. The score is binned by ``bin_edges`` (ascending
thresholds in [0, 1]) into bins ``1 .. len(bin_edges) + 1``: bin 1 holds the easiest problems
(score >= the last edge), the last bin the hardest (score < the first edge). The probe is spent in
addition to the routed strategy's budget (its tokens are in the problem's ``Cost``); its samples
are not part of the result's candidates (their scores are in ``settings["probe_scores"]``).

When every bin routes to the same strategy and settings at the run's budget (a one-bin table, e.g.
one fitted from a sweep whose problems all scored alike), the difficulty cannot change the route:
the probe is skipped (no tokens spent on it), ``settings["probe_skipped"]`` is true and
``difficulty_bin``/``probe_score`` are ``None``.

The result's settings are the routed search's (its ``beam_width``, ``selection``, ... as run),
with ``strategy``/``n`` of the compute_optimal run, the routing (``routed_strategy``,
``routed_settings``, ``difficulty_bin``, ``probe_score``, ``probe_scores``) and
``requested_settings``: the compute_optimal run's own search settings, identical for every problem
of the run (what groups its records into one run, ``tts_eval.workflow.results``).

The routing table (one entry per (bin, budget), where ``budget`` is the run's ``n``) is an option
(:class:`ComputeOptimalOptions`: ``compute_optimal_table``, and the tree options ``beam_width`` and
``lookahead`` that routes to tree strategies inherit); its format, validation and built-in default
are in :mod:`tts_eval.search.routing`. Every route of the run's budget is checked against the run's
settings when the configuration is built (one line before any model loads).

All problems of a batch share the engine/PRM calls (the routed strategies run side by side in the
same batched rounds).

What this module does not do: parse tables (``routing``) or fit them from sweeps
(``tts_eval.workflow.fit``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from tts_eval.search import voting
from tts_eval.search._driver import Work
from tts_eval.search._tree import TreeOptions
from tts_eval.search.config import SearchConfig
from tts_eval.search.majority import SamplingWork
from tts_eval.search.routing import Route, load_table
from tts_eval.search.spec import StrategySpec, get_spec, register_strategy
from tts_eval.settings import invalid
from tts_eval.types import (
    AnswerSpec,
    Cost,
    GenerationOutput,
    GenerationRequest,
    PRMOutput,
    PRMRequest,
    Problem,
    SearchResult,
)

PROBE_STRATEGY = "best_of_n"  # how the probe samples and scores


@dataclass(frozen=True)
class ComputeOptimalOptions(TreeOptions):
    """``compute_optimal_table`` (a JSON routing table; None: the built-in default) and the tree
    options the routes inherit; the table's budgets and routes are checked against the run."""

    compute_optimal_table: str | None = dataclasses.field(default=None, metadata={"curve": False})

    def __post_init__(self) -> None:
        super().__post_init__()
        table = self.compute_optimal_table
        if table is not None and (not isinstance(table, (str, os.PathLike)) or not str(table)):
            raise invalid("compute_optimal_table", table, "a path to a JSON routing table")

    def check(self, config: SearchConfig) -> None:
        table = load_table(self.compute_optimal_table)
        table.check_budget(config.n)
        table.check_routes(config)


def sample_scores(result: SearchResult, agg: str) -> list[float]:
    """The aggregated score of each probe sample, in order (an unfinished sample scores 0.0)."""
    return [voting.aggregate(c.step_scores, agg) if c.finished else 0.0 for c in result.candidates]


def probe_score(result: SearchResult, agg: str) -> float:
    """Mean aggregated score over all probe samples (unfinished samples count 0.0)."""
    if not result.candidates:
        return 0.0
    return sum(sample_scores(result, agg)) / len(result.candidates)


class ComputeOptimalWork(Work):
    """Probe, route, then delegate every round to the routed strategy's work."""

    options_type = ComputeOptimalOptions
    options: ComputeOptimalOptions

    def __init__(
        self,
        problem: Problem,
        config: SearchConfig,
        answers: AnswerSpec,
        grouper: voting.AnswerGrouper,
    ) -> None:
        super().__init__(problem, config, answers, grouper)
        self.table = load_table(self.options.compute_optimal_table)
        probe_config = SearchConfig(
            **{**config.shared(), "strategy": PROBE_STRATEGY, "n": self.table.probe_n}
        )
        self.probe = SamplingWork(
            problem,
            probe_config,
            answers,
            grouper,
            strategy="probe",
            use_prm=True,
            selection="naive",
            purpose="probe",
        )
        self.inner: Work | None = None
        self.info: dict[str, object] = {}
        routes = {self.table.route(b, config.n) for b in range(1, self.table.num_bins + 1)}
        if len(routes) == 1:
            self._start(routes.pop(), None, None, [])

    def _start(
        self, route: Route, bin_: int | None, score: float | None, scores: list[float]
    ) -> None:
        inner_config = route.config_for(self.config)
        self.info = {
            "routed_strategy": route.strategy,
            "routed_settings": dict(route.overrides),
            "difficulty_bin": bin_,
            "probe_score": score,
            "probe_scores": scores,
            "probe_skipped": bin_ is None,
        }
        make = get_spec(inner_config.strategy).make_work
        self.inner = make(self.problem, inner_config, self.answers, self.grouper)

    @property
    def current(self) -> Work:
        return self.probe if self.inner is None else self.inner

    @property
    def done(self) -> bool:
        return self.inner is not None and self.inner.done

    def _route_if_probed(self) -> None:
        if self.inner is not None or not self.probe.done:
            return
        probe = self.probe.result(Cost())
        score = probe_score(probe, self.config.agg)
        bin_ = self.table.bin_of(score)
        route = self.table.route(bin_, self.config.n)
        self._start(route, bin_, score, sample_scores(probe, self.config.agg))

    def generation_requests(self) -> list[GenerationRequest]:
        self._route_if_probed()
        return self.current.generation_requests()

    def on_generated(self, outputs: list[GenerationOutput]) -> None:
        self.current.on_generated(outputs)

    def prm_requests(self) -> list[PRMRequest]:
        self._route_if_probed()
        return self.current.prm_requests()

    def on_scored(self, outputs: list[PRMOutput]) -> None:
        self.current.on_scored(outputs)

    def result(self, cost: Cost) -> SearchResult:
        assert self.inner is not None
        inner = self.inner.result(cost)
        settings = {
            **inner.settings,
            **self.info,
            "strategy": "compute_optimal",
            "n": self.config.n,
            "compute_optimal_table": self.table.source,
            "requested_settings": self.config.settings(),
        }
        return dataclasses.replace(inner, strategy="compute_optimal", settings=settings)


def make_work(
    problem: Problem, config: SearchConfig, answers: AnswerSpec, grouper: voting.AnswerGrouper
) -> Work:
    return ComputeOptimalWork(problem, config, answers, grouper)


SPEC = register_strategy(
    StrategySpec(
        name="compute_optimal",
        summary="per-problem strategy from a difficulty probe",
        make_work=make_work,
        needs_prm=True,
        routable=False,
        options=ComputeOptimalOptions,
        self_scored=False,
        undelimited_effect="the routed searches could not branch and the PRM scored each "
        "solution as a single step",
    )
)
