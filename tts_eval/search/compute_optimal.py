"""Compute-optimal search: pick a strategy per problem from its estimated difficulty.

Difficulty probe: ``probe_n`` whole solutions are sampled (one request, seeded from
``(seed, uid, "probe")``) and the finished ones scored by the PRM. The probe score is the mean
over ALL probe samples of their aggregated score (``agg``), a sample that did not finish counting
0.0. Higher probe score = easier problem. The score is binned by ``bin_edges`` (ascending
thresholds in [0, 1]) into bins ``1 .. len(bin_edges) + 1``: bin 1 holds the easiest problems
(score >= the last edge), the last bin the hardest (score < the first edge). The probe is spent in
addition to the routed strategy's budget (its tokens are in the problem's ``Cost``); its samples
are not part of the result's candidates (their scores are in ``settings["probe_scores"]``).

Routing table (JSON), one entry per (bin, budget) where ``budget`` is the run's ``n``::

    {"format": "tts-eval/compute-optimal-table", "version": 1,
     "probe_n": 4, "bin_edges": [0.2, 0.4, 0.6, 0.8],
     "entries": [{"bin": 1, "budget": 16, "strategy": "beam_search", "beam_width": 4,
                  "lookahead": 0, "selection": "weighted", "agg": "last"}, ...]}

``strategy`` is one of majority, best_of_n, beam_search, dvts; ``beam_width``, ``lookahead``,
``selection``, ``agg`` are optional overrides of the run's settings. Every budget listed must
have an entry for every bin, and each entry must make a valid :class:`SearchConfig` at
``n=budget``. The built-in default (:func:`default_table`) follows the published finding: beam
search at small budgets (n <= 16) and on hard problems (bins 4-5), DVTS at larger budgets on
easy/medium problems (bins 1-3), for budgets 1, 2, 4, ..., 1024. Its bin edges are a heuristic,
not calibrated for any particular PRM: fit a table from a sweep for real use.

All problems of a batch share the engine/PRM calls (the routed strategies run side by side in the
same batched rounds).

What this module does not do: fit tables from sweeps (the reporting tools).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tts_eval.search import voting
from tts_eval.search._driver import Work
from tts_eval.search.config import AGGREGATIONS, SELECTIONS, SearchConfig
from tts_eval.search.majority import SamplingWork
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

TABLE_FORMAT = "tts-eval/compute-optimal-table"
TABLE_VERSION = 1
ROUTED_STRATEGIES = ("majority", "best_of_n", "beam_search", "dvts")
_TOP_KEYS = ("format", "version", "probe_n", "bin_edges", "entries")
_ENTRY_KEYS = ("bin", "budget", "strategy", "beam_width", "lookahead", "selection", "agg")
_OVERRIDES = ("beam_width", "lookahead", "selection", "agg")


@dataclass(frozen=True)
class Route:
    """The strategy settings a (bin, budget) cell routes to."""

    strategy: str
    overrides: tuple[tuple[str, object], ...] = ()

    def config_for(self, base: SearchConfig) -> SearchConfig:
        return dataclasses.replace(
            base, strategy=self.strategy, compute_optimal_table=None, **dict(self.overrides)
        )


@dataclass(frozen=True)
class ComputeOptimalTable:
    probe_n: int
    bin_edges: tuple[float, ...]
    routes: Mapping[tuple[int, int], Route]
    source: str = "default"

    @property
    def num_bins(self) -> int:
        return len(self.bin_edges) + 1

    @property
    def budgets(self) -> tuple[int, ...]:
        return tuple(sorted({budget for _, budget in self.routes}))

    def bin_of(self, score: float) -> int:
        """1 (easiest) .. num_bins (hardest): one more than the number of edges above ``score``."""
        return 1 + sum(1 for edge in self.bin_edges if score < edge)

    def check_budget(self, n: int) -> None:
        if n not in self.budgets:
            raise ValueError(
                f"compute_optimal_table ({self.source}) has no entries for n={n}; "
                f"budgets in the table: {', '.join(map(str, self.budgets))}"
            )

    def route(self, bin_: int, n: int) -> Route:
        self.check_budget(n)
        return self.routes[(bin_, n)]


def _fail(source: str, where: str, message: str) -> None:
    raise ValueError(f"compute_optimal_table {source}: {where} {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_table(data: Any, source: str = "<dict>") -> ComputeOptimalTable:
    """Validate a routing table given as decoded JSON; every error is one line."""
    if not isinstance(data, dict):
        _fail(source, "top level", f"must be a JSON object with keys {', '.join(_TOP_KEYS)}")
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        _fail(source, "top level", f"has unknown keys {unknown}; accepted: {', '.join(_TOP_KEYS)}")
    if data.get("format") != TABLE_FORMAT:
        _fail(source, "format", f"must be {TABLE_FORMAT!r}, got {data.get('format')!r}")
    if data.get("version") != TABLE_VERSION:
        _fail(source, "version", f"must be {TABLE_VERSION}, got {data.get('version')!r}")
    probe_n = data.get("probe_n")
    if not _is_int(probe_n) or probe_n < 1:
        _fail(source, "probe_n", f"must be an integer >= 1, got {probe_n!r}")
    edges = data.get("bin_edges")
    if (
        not isinstance(edges, list)
        or not all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in edges)
        or any(not 0 <= e <= 1 for e in edges)
        or any(a >= b for a, b in zip(edges, edges[1:], strict=False))
    ):
        _fail(source, "bin_edges", f"must be a strictly increasing list in [0, 1], got {edges!r}")
    num_bins = len(edges) + 1
    entries = data.get("entries")
    if not isinstance(entries, list) or not entries:
        _fail(source, "entries", "must be a non-empty list of objects")
    routes: dict[tuple[int, int], Route] = {}
    for i, entry in enumerate(entries):
        where = f"entries[{i}]"
        if not isinstance(entry, dict):
            _fail(source, where, "must be an object")
        unknown = sorted(set(entry) - set(_ENTRY_KEYS))
        if unknown:
            _fail(source, where, f"has unknown keys {unknown}; accepted: {', '.join(_ENTRY_KEYS)}")
        bin_, budget, strategy = entry.get("bin"), entry.get("budget"), entry.get("strategy")
        if not _is_int(bin_) or not 1 <= bin_ <= num_bins:
            _fail(source, f"{where}.bin", f"must be an integer in 1..{num_bins}, got {bin_!r}")
        if not _is_int(budget) or budget < 1:
            _fail(source, f"{where}.budget", f"must be an integer >= 1, got {budget!r}")
        if strategy not in ROUTED_STRATEGIES:
            _fail(
                source,
                f"{where}.strategy",
                f"must be one of {', '.join(ROUTED_STRATEGIES)}, got {strategy!r}",
            )
        if "selection" in entry and entry["selection"] not in SELECTIONS:
            _fail(source, f"{where}.selection", f"must be one of {', '.join(SELECTIONS)}")
        if "agg" in entry and entry["agg"] not in AGGREGATIONS:
            _fail(source, f"{where}.agg", f"must be one of {', '.join(AGGREGATIONS)}")
        if (bin_, budget) in routes:
            _fail(source, where, f"duplicates the entry for bin={bin_}, budget={budget}")
        route = Route(strategy, tuple((k, entry[k]) for k in _OVERRIDES if k in entry))
        try:
            route.config_for(SearchConfig(n=budget))
        except ValueError as exc:
            _fail(source, where, f"is not a valid search at n={budget}: {exc}")
        routes[(bin_, budget)] = route
    for budget in sorted({b for _, b in routes}):
        missing = [b for b in range(1, num_bins + 1) if (b, budget) not in routes]
        if missing:
            _fail(source, "entries", f"lack bins {missing} for budget={budget}")
    return ComputeOptimalTable(probe_n, tuple(float(e) for e in edges), routes, source)


def default_table() -> dict[str, Any]:
    """The built-in routing table as JSON-ready data (see the module docstring)."""
    entries = []
    for exponent in range(11):
        budget = 2**exponent
        for bin_ in range(1, 6):
            strategy = "beam_search" if budget <= 16 or bin_ >= 4 else "dvts"
            entries.append(
                {"bin": bin_, "budget": budget, "strategy": strategy, "beam_width": min(4, budget)}
            )
    return {
        "format": TABLE_FORMAT,
        "version": TABLE_VERSION,
        "probe_n": 4,
        "bin_edges": [0.2, 0.4, 0.6, 0.8],
        "entries": entries,
    }


@lru_cache(maxsize=32)
def _load_cached(path: str, mtime_ns: int) -> ComputeOptimalTable:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"compute_optimal_table {path}: not valid JSON ({exc})") from None
    return parse_table(data, path)


@lru_cache(maxsize=1)
def _default() -> ComputeOptimalTable:
    return parse_table(default_table(), "built-in default")


def load_table(path: str | os.PathLike[str] | None) -> ComputeOptimalTable:
    """The table at ``path`` (validated), or the built-in default for ``None``."""
    if path is None:
        return _default()
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"compute_optimal_table={os.fspath(path)}: no such file")
    return _load_cached(str(p), p.stat().st_mtime_ns)


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

    def __init__(
        self,
        problem: Problem,
        config: SearchConfig,
        answers: AnswerSpec,
        grouper: voting.AnswerGrouper,
    ) -> None:
        from tts_eval.search.run import make_work

        self._make_work = make_work
        self.problem = problem
        self.config = config
        self.answers = answers
        self.grouper = grouper
        self.table = load_table(config.compute_optimal_table)
        probe_config = dataclasses.replace(
            config,
            strategy="best_of_n",
            n=self.table.probe_n,
            lookahead=0,
            compute_optimal_table=None,
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
        inner_config = route.config_for(self.config)
        self.info = {
            "routed_strategy": route.strategy,
            "routed_settings": dict(route.overrides),
            "difficulty_bin": bin_,
            "probe_score": score,
            "probe_scores": sample_scores(probe, self.config.agg),
        }
        self.inner = self._make_work(self.problem, inner_config, self.answers, self.grouper)

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
        }
        return dataclasses.replace(inner, strategy="compute_optimal", settings=settings)


def make_work(
    problem: Problem, config: SearchConfig, answers: AnswerSpec, grouper: voting.AnswerGrouper
) -> Work:
    return ComputeOptimalWork(problem, config, answers, grouper)
