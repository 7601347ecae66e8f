"""The compute-optimal routing table: its JSON format, validation and built-in default.

A table says, per difficulty bin and budget, which strategy (and settings) ``strategy=
compute_optimal`` runs a problem with (:mod:`tts_eval.search.compute_optimal` probes and routes;
``tts-eval fit-compute-optimal`` writes tables, :mod:`tts_eval.workflow.fit`)::

    {"format": "tts-eval/compute-optimal-table", "version": 1,
     "probe_n": 4, "bin_edges": [0.2, 0.4, 0.6, 0.8],
     "entries": [{"bin": 1, "budget": 16, "strategy": "beam_search", "beam_width": 4,
                  "lookahead": 0, "selection": "weighted", "agg": "last"}, ...]}

``strategy`` is a routable strategy of the registry (:func:`tts_eval.search.spec.routable_names`);
an entry may override ``selection``, ``agg`` and the options of routable strategies
(``beam_width``, ``lookahead``). Every budget listed must have an entry for every bin, and each
entry must make a valid search at ``n=budget``. Bin 1 holds the easiest problems (probe score >=
the last edge). :meth:`ComputeOptimalTable.check_routes` checks every route of a budget against a
run's own settings (what the route inherits), so a table that cannot run with them is refused
before anything loads.

What this module does not do: probe or route problems (``compute_optimal``), or fit tables.
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

from tts_eval.errors import DataError, SettingError
from tts_eval.search.config import AGGREGATIONS, SELECTIONS, SearchConfig
from tts_eval.search.spec import get_spec, option_defaults, routable_names
from tts_eval.settings import invalid

TABLE_FORMAT = "tts-eval/compute-optimal-table"
TABLE_VERSION = 1
TABLE_KEY = "compute_optimal_table"  # the model_args key naming a table
_TABLE_KEYS = ("format", "version", "probe_n", "bin_edges", "entries")
_SHARED_OVERRIDES = ("selection", "agg")


def override_keys() -> tuple[str, ...]:
    """What an entry may set besides bin, budget and strategy: ``selection``, ``agg`` and the
    options of routable strategies."""
    own = [k for name in routable_names() for k in get_spec(name).option_names]
    return (*dict.fromkeys(own), *_SHARED_OVERRIDES)


def entry_keys() -> tuple[str, ...]:
    return ("bin", "budget", "strategy", *override_keys())


@dataclass(frozen=True)
class Route:
    """The strategy settings a (bin, budget) cell of a routing table sends problems to."""

    strategy: str
    overrides: tuple[tuple[str, object], ...] = ()

    def config_for(self, base: SearchConfig) -> SearchConfig:
        """The search a problem of ``base`` (a compute_optimal configuration) is routed to: the
        base's shared settings and the options the routed strategy reads, then the overrides; an
        option of the base the routed strategy does not read must be at its default."""
        carried = {
            f.name: getattr(base.options, f.name)
            for f in dataclasses.fields(base.options)
            if f.name != TABLE_KEY
        }
        shared = {k: v for k, v in base.settings().items() if k not in carried and k != TABLE_KEY}
        return SearchConfig(
            **{**shared, **carried, "strategy": self.strategy, **dict(self.overrides)}
        )


@dataclass(frozen=True)
class ComputeOptimalTable:
    """A validated routing table (see the module docstring)."""

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
            raise invalid(
                "n",
                n,
                f"a budget of compute_optimal_table ({self.source}): "
                f"{', '.join(map(str, self.budgets))}",
            )

    def route(self, bin_: int, n: int) -> Route:
        self.check_budget(n)
        return self.routes[(bin_, n)]

    def check_routes(self, base: SearchConfig) -> None:
        """Every route at ``base.n`` must run with ``base``'s settings: one-line
        :class:`SettingError` naming the setting, the bin and where it is routed otherwise."""
        for bin_ in range(1, self.num_bins + 1):
            route = self.route(bin_, base.n)
            try:
                route.config_for(base)
            except SettingError as exc:
                where = (
                    f"compute_optimal_table ({self.source}) routes bin {bin_} at n={base.n} to "
                    f"strategy={route.strategy}"
                )
                if exc.key in get_spec(route.strategy).option_names or exc.key not in (
                    option_defaults()
                ):
                    accepted = f"{exc.accepted} ({where})"
                else:  # an option of the run that the routed strategy does not read
                    default = option_defaults()[exc.key]
                    accepted = (
                        f"{default} (its default) with strategy=compute_optimal here: {where}, "
                        f"which does not read {exc.key}"
                    )
                raise SettingError(exc.key, exc.value, accepted, scope=exc.scope) from None


def _table_error(source: str, where: str, message: str) -> DataError:
    return DataError(f"compute_optimal_table {source}: {where} {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_table(data: Any, source: str = "<dict>") -> ComputeOptimalTable:
    """Validate a routing table given as decoded JSON; every error is one line."""
    if not isinstance(data, dict):
        raise _table_error(source, "top level", f"must be an object with {', '.join(_TABLE_KEYS)}")
    unknown = sorted(set(data) - set(_TABLE_KEYS))
    if unknown:
        raise _table_error(
            source, "top level", f"has unknown keys {unknown}; accepted: {', '.join(_TABLE_KEYS)}"
        )
    if data.get("format") != TABLE_FORMAT:
        raise _table_error(
            source, "format", f"must be {TABLE_FORMAT!r}, got {data.get('format')!r}"
        )
    if data.get("version") != TABLE_VERSION:
        raise _table_error(
            source, "version", f"must be {TABLE_VERSION}, got {data.get('version')!r}"
        )
    probe_n = data.get("probe_n")
    if not _is_int(probe_n) or probe_n < 1:
        raise _table_error(source, "probe_n", f"must be an integer >= 1, got {probe_n!r}")
    edges = data.get("bin_edges")
    if (
        not isinstance(edges, list)
        or not all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in edges)
        or any(not 0 <= e <= 1 for e in edges)
        or any(a >= b for a, b in zip(edges, edges[1:], strict=False))
    ):
        raise _table_error(
            source, "bin_edges", f"must be a strictly increasing list in [0, 1], got {edges!r}"
        )
    num_bins = len(edges) + 1
    entries = data.get("entries")
    if not isinstance(entries, list) or not entries:
        raise _table_error(source, "entries", "must be a non-empty list of objects")
    routes: dict[tuple[int, int], Route] = {}
    for i, entry in enumerate(entries):
        routes.update(_parse_entry(source, f"entries[{i}]", entry, num_bins, routes))
    for budget in sorted({b for _, b in routes}):
        missing = [b for b in range(1, num_bins + 1) if (b, budget) not in routes]
        if missing:
            raise _table_error(source, "entries", f"lack bins {missing} for budget={budget}")
    return ComputeOptimalTable(probe_n, tuple(float(e) for e in edges), routes, source)


def _parse_entry(
    source: str, where: str, entry: Any, num_bins: int, routes: Mapping[tuple[int, int], Route]
) -> dict[tuple[int, int], Route]:
    if not isinstance(entry, dict):
        raise _table_error(source, where, "must be an object")
    accepted = entry_keys()
    unknown = sorted(set(entry) - set(accepted))
    if unknown:
        raise _table_error(
            source, where, f"has unknown keys {unknown}; accepted: {', '.join(accepted)}"
        )
    bin_, budget, strategy = entry.get("bin"), entry.get("budget"), entry.get("strategy")
    if not _is_int(bin_) or not 1 <= bin_ <= num_bins:
        raise _table_error(
            source, f"{where}.bin", f"must be an integer in 1..{num_bins}, got {bin_!r}"
        )
    if not _is_int(budget) or budget < 1:
        raise _table_error(source, f"{where}.budget", f"must be an integer >= 1, got {budget!r}")
    if strategy not in routable_names():
        raise _table_error(
            source,
            f"{where}.strategy",
            f"must be one of {', '.join(routable_names())}, got {strategy!r}",
        )
    for key, choices in (("selection", SELECTIONS), ("agg", AGGREGATIONS)):
        if key in entry and entry[key] not in choices:
            raise _table_error(source, f"{where}.{key}", f"must be one of {', '.join(choices)}")
    if (bin_, budget) in routes:
        raise _table_error(source, where, f"duplicates the entry for bin={bin_}, budget={budget}")
    route = Route(strategy, tuple((k, entry[k]) for k in override_keys() if k in entry))
    try:
        SearchConfig(strategy=strategy, n=budget, **dict(route.overrides))
    except ValueError as exc:
        raise _table_error(source, where, f"is not a valid search at n={budget}: {exc}") from None
    return {(bin_, budget): route}


def default_table() -> dict[str, Any]:
    """The built-in routing table as JSON-ready data.

    It follows the published finding: beam search at small budgets (n <= 16) and on hard problems
    (bins 4-5), DVTS at larger budgets on easy/medium problems (bins 1-3), for budgets 1, 2, 4,
    ..., 1024. Its bin edges are a heuristic, not calibrated for any particular PRM: fit a table
    from a sweep for real use (``tts-eval fit-compute-optimal``).
    """
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
        raise DataError(f"compute_optimal_table {path}: not valid JSON ({exc})") from None
    return parse_table(data, path)


@lru_cache(maxsize=1)
def _default_table() -> ComputeOptimalTable:
    return parse_table(default_table(), "built-in default")


def load_table(path: str | os.PathLike[str] | None) -> ComputeOptimalTable:
    """The table at ``path`` (validated), or the built-in default for ``None``."""
    if path is None:
        return _default_table()
    p = Path(path)
    if not p.is_file():
        raise invalid(TABLE_KEY, os.fspath(path), "an existing JSON file")
    return _load_cached(str(p), p.stat().st_mtime_ns)
