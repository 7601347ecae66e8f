"""``tts-eval fit-compute-optimal``: the routing table of ``strategy=compute_optimal`` from a sweep.

Difficulty is the one :mod:`tts_eval.search.compute_optimal` routes on: the probe score (mean
aggregated PRM score of the probe samples, unfinished ones counting 0.0; higher = easier). For
each problem it is estimated from the sweep's ``best_of_n`` run (the mean over all its samples,
the expectation of the probe's score), so a sweep needs ``best_of_n`` to be fitted.

Bins: ``bin_edges`` are the quantiles of the problems' scores at 1/B, ..., (B-1)/B (B =
``num_bins``, default 5: difficulty quintiles), rounded to 4 decimals; coinciding edges are merged
(fewer bins). Bin 1 is the easiest (the table's convention).

Cell choice: for every budget some routable curve has an estimate at (a curve whose strategy a
table may route to: ``Curve.route``; majority, best_of_n, beam_search and dvts built in, each
under its own options, e.g. ``dvts (beam_width=8)``), and every bin, the curve with the highest
mean accuracy@n over the bin's problems (:mod:`tts_eval.workflow.estimate`); ties go to fewer
policy tokens, then to the registry order of the strategies. A bin without problems takes the best
curve over all problems at that budget (logged). Entries carry what the routed strategy reads of
the swept run's settings (its own options, e.g. ``beam_width``, and ``selection``/``agg`` when it
reads them), so the table reproduces what was measured. The table is checked with
:func:`tts_eval.search.parse_table` before it is written.

Degenerate fits are not silent. :func:`fit_table` returns a :class:`FittedTable` (the table's plain
JSON dict) whose ``notes`` say what the fit could not measure, each also logged as a WARNING:
difficulty scores that do not separate the problems (fewer bins than asked: one bin when, e.g.,
no sampled solution ever finished, so every score is 0; ``strategy=compute_optimal`` then skips
its probe, see ``tts_eval.search.compute_optimal``), and budgets where every strategy has accuracy
0 (the route there follows the fewest policy tokens, not accuracy). The table format has no place
for free text, so :func:`write_table` writes the notes beside the table, as
``<table stem>.notes.json`` (``tts_eval.workflow.results.table_notes_path``; removed when a refit
has none), and ``tts-eval report`` shows them with the fitted curve.

What this module does not do: run searches or report curves (``report`` shows the fitted curve).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import Any

from tts_eval.errors import DataError
from tts_eval.search import get_spec, routable_names
from tts_eval.search.config import later_defaults
from tts_eval.search.routing import override_keys
from tts_eval.workflow.estimate import CurvePoint
from tts_eval.workflow.report import Estimates

logger = logging.getLogger(__name__)


def quantile_edges(scores: list[float], num_bins: int) -> list[float]:
    """Strictly increasing edges in [0, 1] at the (k/num_bins) quantiles of ``scores``."""
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise DataError(f"num_bins must be an integer >= 1, got {num_bins!r}")
    if not scores:
        raise DataError("no problem has a difficulty score to bin")
    data = sorted(scores)
    edges: list[float] = []
    for k in range(1, num_bins):
        pos = k / num_bins * (len(data) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(data) - 1)
        value = data[lo] + (data[hi] - data[lo]) * (pos - lo)
        value = round(min(1.0, max(0.0, value)), 4)
        if not edges or value > edges[-1]:
            edges.append(value)
    if edges and edges[0] == 0.0:
        edges = edges[1:]  # a 0.0 edge would leave a bin no score can fall into
    return edges


class FittedTable(dict):
    """A fitted routing table: exactly the table's JSON dict, plus ``notes`` (see the module
    docstring); ``json.dumps`` writes the table alone."""

    notes: tuple[str, ...] = ()


def _bin_notes(scores: list[float], edges: list[float], num_bins: int) -> list[str]:
    bins = len(edges) + 1
    if bins >= num_bins:
        return []
    note = (
        f"difficulty scores of the {len(scores)} problems take {len({round(x, 4) for x in scores})} "
        f"distinct value(s) (from {min(scores):.4g} to {max(scores):.4g}): {bins} bin(s) instead "
        f"of {num_bins}"
    )
    if bins == 1:
        note += (
            "; every problem routes alike, so strategy=compute_optimal skips its probe; "
            "a sweep whose best_of_n samples finish with PRM scores would separate them"
        )
    return [note]


def _zero_note(zero_budgets: list[int]) -> list[str]:
    if not zero_budgets:
        return []
    return [
        f"every strategy has accuracy 0 at n={', '.join(map(str, zero_budgets))}: routes there "
        "follow the fewest policy tokens, not measured accuracy"
    ]


def _mean(point: CurvePoint, uids: list[str], field: str) -> float:
    values = getattr(point, field)
    return math.fsum(values[u] for u in uids) / len(uids)


def _entry(strategy: str, run_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The table entry routing to ``strategy`` as the run measured it: the overrides
    (:func:`tts_eval.search.routing.override_keys`) the strategy reads, from the run's settings
    (its own options at their defaults when the run did not record them; options added later
    (:data:`tts_eval.search.spec.LATER_OPTION`) only when not at their default)."""
    spec = get_spec(strategy)
    defaults = spec.default_options()
    later = later_defaults()
    extra: dict[str, Any] = {}
    for key in override_keys():
        if key in spec.option_names:
            value = run_settings.get(key, getattr(defaults, key))
            if key in later and value == later[key]:
                continue  # an option added later, at its default: entries stay as they were
            extra[key] = value
        elif key in spec.reads and key in run_settings:
            extra[key] = run_settings[key]
    return {"strategy": strategy, **extra}


def fit_table(
    estimates: Estimates,
    run_settings: Mapping[str, Mapping[str, Any]],
    *,
    probe_n: int = 4,
    num_bins: int = 5,
) -> dict[str, Any]:
    """The routing table (JSON-ready, validated) fitted from ``estimates``.

    ``run_settings`` maps a run key to that run's search settings (for the entries' overrides).
    """
    from tts_eval.search.routing import (
        TABLE_FORMAT,
        TABLE_VERSION,
        ComputeOptimalTable,
        parse_table,
    )

    if isinstance(probe_n, bool) or not isinstance(probe_n, int) or probe_n < 1:
        raise DataError(f"probe_n must be an integer >= 1, got {probe_n!r}")
    if not estimates.difficulty:
        raise DataError(
            "fit-compute-optimal needs a best_of_n run in the sweep (its PRM-scored samples give "
            "each problem's difficulty); add best_of_n to sweep.strategies"
        )
    edges = quantile_edges(list(estimates.difficulty.values()), num_bins)
    binner = ComputeOptimalTable(probe_n, tuple(edges), {})
    bins: dict[int, list[str]] = {b: [] for b in range(1, len(edges) + 2)}
    for uid, score in estimates.difficulty.items():
        bins[binner.bin_of(score)].append(uid)
    routable = routable_names()
    routed = {
        slot: point
        for slot, point in estimates.points.items()
        if point.route is not None and point.route in routable
    }
    budgets = sorted({n for (_, n) in routed})
    entries = []
    zero_budgets = []
    everyone = sorted(estimates.difficulty)
    for n in budgets:
        options = sorted(
            ((curve, p) for (curve, m), p in routed.items() if m == n),
            key=lambda cp: (routable.index(str(cp[1].route)), cp[0]),
        )
        if all(not any(p.accuracy.values()) for _, p in options):
            zero_budgets.append(n)
        for bin_, members in bins.items():
            uids = members
            if not uids:
                logger.warning("bin %d has no problems; n=%d routes it like all problems", bin_, n)
                uids = everyone
            usable = [(c, p) for c, p in options if all(u in p.accuracy for u in uids)]
            if not usable:
                raise DataError(
                    f"no strategy has an estimate for every problem of bin {bin_} at n={n}; "
                    "finish the sweep (tts-eval sweep <recipe> resumes it) before fitting"
                )
            rank = {curve: i for i, (curve, _) in enumerate(options)}
            curve, point = max(
                usable,
                key=lambda cp: (
                    _mean(cp[1], uids, "accuracy"),
                    -_mean(cp[1], uids, "policy_tokens"),
                    -rank[cp[0]],
                ),
            )
            entry = _entry(str(point.route), run_settings.get(point.run_key, {}))
            entries.append({"bin": bin_, "budget": n, **entry})
    table = FittedTable(
        format=TABLE_FORMAT,
        version=TABLE_VERSION,
        probe_n=probe_n,
        bin_edges=edges,
        entries=entries,
    )
    parse_table(dict(table), "fitted table")
    scores = list(estimates.difficulty.values())
    table.notes = tuple(_bin_notes(scores, edges, num_bins) + _zero_note(zero_budgets))
    for note in table.notes:
        logger.warning("fit-compute-optimal: %s", note)
    return table


def run_settings_of(results: Any) -> dict[str, dict[str, Any]]:
    """Search settings per run key of loaded results (from their first record)."""
    return {
        key: dict(records[0].get("settings") or {})
        for key, records in results.runs.items()
        if records
    }


def write_table(table: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write the table to ``path`` and its notes (if any) beside it; a stale notes file goes."""
    from tts_eval.workflow.results import table_notes_path, write_json_atomic

    write_json_atomic(path, dict(table))
    notes = list(getattr(table, "notes", ()))
    side = table_notes_path(path)
    if notes:
        write_json_atomic(side, {"table": os.fspath(path), "notes": notes})
        logger.warning("the fitted table has %d note(s); see %s", len(notes), side)
    elif side.is_file():
        side.unlink()
