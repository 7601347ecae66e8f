"""``tts-eval report``: accuracy@n per strategy with 95% CIs, by level and subject, and tokens.

:func:`estimate_results` turns loaded results (``tts_eval.workflow.results``) into per-problem
accuracies per (curve, n) (``tts_eval.workflow.estimate``); :func:`build_report` aggregates them
into a JSON-ready report (mean accuracy, percentile-bootstrap interval over problems, the same per
MATH level and subject, mean policy and PRM tokens per problem); :func:`to_markdown` renders it.

With a compute-optimal routing table (``--table``, or ``compute_optimal_table.json`` in the
results folder, written by ``tts-eval fit-compute-optimal``) the report adds the curve
``compute_optimal (fitted)``: each problem is binned by its difficulty (from the sweep's
``best_of_n`` run) and scored with the strategy the table routes its bin to at that budget. Fitted
and scored on the same problems, that curve is optimistic; a real ``compute_optimal`` run in the
sweep is reported as its own curve.

Settings groups (``tts_eval.workflow.results.settings_groups``): runs of different search settings
in one folder (e.g. swept at ``temperature=0.8`` and again at ``0.5``) are estimated separately;
every row carries ``settings`` (the settings that differ between the groups, e.g.
``temperature=0.5``; empty when there is one group) and ``settings_digest``, and the markdown names
such rows ``best_of_n [temperature=0.5]``. :func:`estimate_results` (what ``fit-compute-optimal``
fits from) takes one group: ``group=`` a digest (or its prefix), required when there are several.

Diagnostics: ``report["diagnostics"]`` counts per run the problems whose candidates never contain
the step delimiter (``undelimited_problems``; ``steps_without_delimiter`` sums the candidates),
those with no finished candidate and those with an empty response
(:mod:`tts_eval.search.diagnostics`; recomputed from the candidates for version 1 records); the
markdown lists the runs where any is non-zero.

Grading uses ``tts_eval.grader.is_equiv`` and answer grouping ``tts_eval.grader.MathAnswerSpec``
unless other ones are handed in.

What this module does not do: run searches or draw figures.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tts_eval.errors import DataError
from tts_eval.search import get_spec, strategy_names
from tts_eval.search.spec import curve_name
from tts_eval.types import AnswerSpec
from tts_eval.workflow.estimate import (
    FITTED,
    CurvePoint,
    EstimateSettings,
    Grader,
    ProblemInfo,
    accuracy_by,
    accuracy_cell,
    collect_points,
    curve_sort_key,
    difficulty_scores,
    estimate_run,
    problem_info,
)
from tts_eval.workflow.results import (
    Results,
    SettingsGroup,
    describe_groups,
    read_table_notes,
    settings_groups,
)

logger = logging.getLogger(__name__)

REPORT_FORMAT = "tts-eval/report"
REPORT_VERSION = 2
TABLE_FILE = "compute_optimal_table.json"
DIAGNOSTIC_COUNTS = (
    "problems",
    "undelimited_problems",
    "steps_without_delimiter",
    "no_finished_candidate",
    "empty_response",
)


@dataclass(frozen=True)
class Estimates:
    """Per-problem accuracy per (curve, n), the problems, and their difficulty (when known)."""

    points: Mapping[tuple[str, int], CurvePoint]
    problems: Mapping[str, ProblemInfo]
    difficulty: Mapping[str, float]


def _default_grading(
    spec: AnswerSpec | None, is_correct: Callable[[str, str], bool] | None
) -> tuple[AnswerSpec, Callable[[str, str], bool]]:
    if spec is None or is_correct is None:
        from tts_eval.grader import MathAnswerSpec, is_equiv

        spec = spec or MathAnswerSpec()
        is_correct = is_correct or is_equiv
    return spec, is_correct


def _estimate_runs(
    results: Results, keys: Sequence[str], grader: Grader, settings: EstimateSettings
) -> Estimates:
    points: list[CurvePoint] = []
    problems: dict[str, ProblemInfo] = {}
    difficulty: dict[str, float] = {}
    for key in sorted(keys):
        records = results.runs[key]
        for record in records:
            info = problem_info(record)
            problems.setdefault(info.uid, info)
        points.extend(estimate_run(records, key, grader.spec, grader, settings))
        if records and _scores_samples(records[0]):
            difficulty = {**difficulty_scores(records), **difficulty}
    return Estimates(collect_points(points), problems, difficulty)


def _scores_samples(record: Mapping[str, Any]) -> bool:
    """Whether a run's candidates are independent PRM-scored samples (a compute-optimal probe's
    difficulty can be read off them; the strategy's spec says, given the run's settings)."""
    strategy = str(record.get("strategy"))
    settings = record.get("settings") or {}
    return strategy in strategy_names() and get_spec(strategy).scores_samples_of(settings)


def choose_group(results: Results, group: str | None) -> SettingsGroup | None:
    """The settings group ``group`` (a digest or its prefix), or the only one when ``None``."""
    groups = settings_groups(results)
    if group is None:
        if len(groups) > 1:
            raise DataError(
                f"results {results.source} hold runs of {len(groups)} search settings "
                f"({describe_groups(groups)}); estimate one at a time: pick one with "
                "--settings DIGEST (group=DIGEST)"
            )
        return groups[0] if groups else None
    found = [g for g in groups if g.digest.startswith(group)]
    if len(found) != 1:
        raise DataError(
            f"results {results.source}: settings {group!r} "
            f"{'matches no' if not found else 'matches more than one'} settings group; "
            f"accepted: {describe_groups(groups) or 'none (no records yet)'}"
        )
    return found[0]


def estimate_results(
    results: Results,
    spec: AnswerSpec | None = None,
    is_correct: Callable[[str, str], bool] | None = None,
    settings: EstimateSettings | None = None,
    group: str | None = None,
) -> Estimates:
    """Per-problem accuracies of every curve one settings group serves (see ``estimate``)."""
    settings = settings or EstimateSettings()
    spec, is_correct = _default_grading(spec, is_correct)
    chosen = choose_group(results, group)
    estimates = _estimate_runs(
        results, chosen.runs if chosen else (), Grader(spec, is_correct), settings
    )
    if not estimates.points:
        raise DataError(f"results {results.source} hold no trace records yet")
    return estimates


def fitted_points(estimates: Estimates, table: Any) -> list[CurvePoint]:
    """The ``compute_optimal (fitted)`` curve: each problem scored by its routed strategy."""
    if not estimates.difficulty:
        logger.warning(
            "no run of PRM-scored samples (best_of_n) in the results: cannot bin problems for "
            "the fitted curve"
        )
        return []
    out = []
    for n in table.budgets:
        point = CurvePoint(FITTED, n, table.source, FITTED, n)
        complete = True
        for uid, score in estimates.difficulty.items():
            route = table.route(table.bin_of(score), n)
            curve = curve_name(get_spec(route.strategy), dict(route.overrides))
            source = estimates.points.get((curve, n))
            if source is None or uid not in source.accuracy:
                complete = False
                break
            point.accuracy[uid] = source.accuracy[uid]
            point.policy_tokens[uid] = source.policy_tokens[uid]
            point.prm_tokens[uid] = source.prm_tokens[uid]
        if complete and point.accuracy:
            out.append(point)
        elif not complete:
            logger.info(
                "fitted compute-optimal curve: no estimate of every routed strategy "
                "at n=%d; that budget is left out",
                n,
            )
    return out


def _by(point: CurvePoint, problems: Mapping[str, ProblemInfo], attr: str, iters: int, seed: int):
    return accuracy_by(point.accuracy, lambda uid: getattr(problems[uid], attr), iters, seed)


def _rows(
    estimates: Estimates,
    group: SettingsGroup,
    extra: Sequence[CurvePoint],
    iters: int,
    seed: int,
) -> list[dict[str, Any]]:
    rows = []
    points = [*estimates.points.values(), *extra]
    for point in sorted(points, key=lambda p: (curve_sort_key(p.curve), p.n)):
        values = list(point.accuracy.values())
        if not values:
            continue
        rows.append(
            {
                "curve": point.curve,
                "n": point.n,
                "settings": group.label,
                "settings_digest": group.digest,
                **accuracy_cell(values, iters, seed),
                "policy_tokens": math.fsum(point.policy_tokens.values()) / len(values),
                "prm_tokens": math.fsum(point.prm_tokens.values()) / len(values),
                "run": point.run_key,
                "by_level": _by(point, estimates.problems, "level", iters, seed),
                "by_subject": _by(point, estimates.problems, "subject", iters, seed),
            }
        )
    return rows


def build_report(
    results: Results,
    spec: AnswerSpec | None = None,
    is_correct: Callable[[str, str], bool] | None = None,
    *,
    settings: EstimateSettings | None = None,
    bootstrap_iters: int = 2000,
    table: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The JSON-ready report of ``results``, every settings group (see the module docstring)."""
    if (
        isinstance(bootstrap_iters, bool)
        or not isinstance(bootstrap_iters, int)
        or (bootstrap_iters < 0)
    ):
        raise DataError(f"bootstrap_iters must be an integer >= 0, got {bootstrap_iters!r}")
    settings = settings or EstimateSettings()
    spec, is_correct = _default_grading(spec, is_correct)
    grader = Grader(spec, is_correct)
    table_path = table
    if table_path is None and results.source and Path(results.source).is_dir():
        candidate = Path(results.source) / TABLE_FILE
        table_path = candidate if candidate.is_file() else None
    loaded_table = None
    if table_path is not None:
        from tts_eval.search import load_table

        loaded_table = load_table(table_path)
    groups = settings_groups(results)
    rows: list[dict[str, Any]] = []
    problems: set[str] = set()
    for group in groups:
        estimates = _estimate_runs(results, group.runs, grader, settings)
        problems.update(estimates.problems)
        fitted = fitted_points(estimates, loaded_table) if loaded_table is not None else []
        rows += _rows(estimates, group, fitted, bootstrap_iters, settings.seed)
    if not rows:
        raise DataError(f"results {results.source} hold no trace records yet")
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "task": results.task,
        "policy": results.policy,
        "prm": results.prm,
        "source": results.source,
        "problems": len(problems),
        "confidence": 0.95,
        "bootstrap_iters": bootstrap_iters,
        "estimate": {
            "max_exact": settings.max_exact,
            "draws": settings.draws,
            "seed": settings.seed,
        },
        "compute_optimal_table": None if table_path is None else os.fspath(table_path),
        "compute_optimal_table_notes": [] if table_path is None else read_table_notes(table_path),
        "settings_groups": [
            {
                "digest": g.digest,
                "label": g.label,
                "settings": dict(g.settings),
                "runs": list(g.runs),
            }
            for g in groups
        ],
        "rows": rows,
        "diagnostics": run_diagnostics(results),
        "workers": _workers(results),
    }


def run_diagnostics(results: Results) -> dict[str, dict[str, int]]:
    """Per run: problems, and how many are undelimited / have no finished candidate / an empty
    response, plus the candidates without the delimiter (see the module docstring)."""
    from tts_eval.search.diagnostics import diagnostics_of, undelimited
    from tts_eval.traces import result_from_record

    out = {}
    for key, records in results.runs.items():
        counts = dict.fromkeys(DIAGNOSTIC_COUNTS, 0)
        for record in records:
            result = result_from_record(record)
            diag = diagnostics_of(result)
            counts["problems"] += 1
            counts["undelimited_problems"] += undelimited(result, diag)
            counts["steps_without_delimiter"] += int(diag["steps_without_delimiter"])
            counts["no_finished_candidate"] += bool(diag["no_finished_candidate"])
            counts["empty_response"] += bool(diag["empty_response"])
        if records:
            out[key] = counts
    return out


def _workers(results: Results) -> dict[str, list[dict[str, Any]]]:
    """Per-worker throughput of the runs that were spread over Ray workers (data_parallel_size>1)."""
    from tts_eval.runtime.throughput import worker_throughput

    out = {}
    for key, records in results.runs.items():
        rows = worker_throughput(records)
        if rows:
            out[key] = rows
    return out


def pct(x: float | None) -> str:
    """An accuracy in [0, 1] as a percentage with one decimal; ``n/a`` when unknown."""
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def row_name(row: Mapping[str, Any]) -> str:
    """A row's curve, with its settings group's label when the report has several groups."""
    label = row.get("settings") or ""
    return f"{row['curve']} [{label}]" if label else str(row["curve"])


def _breakdown(report: Mapping[str, Any], field: str, title: str) -> list[str]:
    labels = sorted(
        {label for row in report["rows"] for label in row[field]}, key=lambda s: (len(s), s)
    )
    if not labels:
        return []
    lines = [
        f"## Accuracy by {title} (%)",
        "",
        "| strategy | n | " + " | ".join(labels) + " |",
        "|---|---:|" + "---:|" * len(labels),
    ]
    for row in report["rows"]:
        cells = [
            pct(row[field][label]["accuracy"]) if label in row[field] else "" for label in labels
        ]
        lines.append(f"| {row_name(row)} | {row['n']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _group_lines(report: Mapping[str, Any]) -> list[str]:
    groups = report.get("settings_groups") or []
    if len(groups) < 2:
        return []
    lines = [
        f"These results hold runs of {len(groups)} search settings; each is estimated on its own "
        "and its rows are labelled [with the settings that differ]:",
        "",
    ]
    lines += [f"- `{g['digest']}`: {g['label']} (runs {', '.join(g['runs'])})" for g in groups]
    return [*lines, ""]


def _diagnostic_lines(report: Mapping[str, Any]) -> list[str]:
    runs = {
        key: counts
        for key, counts in (report.get("diagnostics") or {}).items()
        if any(counts[name] for name in DIAGNOSTIC_COUNTS[1:])
    }
    if not runs:
        return []
    lines = [
        "## Diagnostics",
        "",
        "Problems whose candidates never contain the step delimiter (each solution one step), "
        "with no finished candidate, or with an empty response (nothing selectable).",
        "",
        "| run | problems | undelimited | candidates without delimiter | no finished candidate "
        "| empty response |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, c in runs.items():
        lines.append(
            f"| {key} | {c['problems']} | {c['undelimited_problems']} | "
            f"{c['steps_without_delimiter']} | {c['no_finished_candidate']} | "
            f"{c['empty_response']} |"
        )
    return [*lines, ""]


def _worker_lines(report: Mapping[str, Any]) -> list[str]:
    workers = report.get("workers") or {}
    if not workers:
        return []
    lines = [
        "## Throughput per worker",
        "",
        "| run | worker | node | problems | policy tokens | busy s | problems/s |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for key, rows in workers.items():
        for row in rows:
            lines.append(
                f"| {key} | {row['worker']} | {row['node']} | {row['problems']} | "
                f"{row['policy_tokens']} | {row['busy_s']:.1f} | {row['problems_per_s']:.2f} |"
            )
    return [*lines, ""]


def to_markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown tables: overall, by level, by subject."""
    who = ", ".join(
        f"{k}: {report[k]}" for k in ("task", "policy", "prm") if report.get(k) is not None
    )
    lines = [
        f"# Test-time compute report ({who})",
        "",
        f"{report['problems']} problems; accuracy in %, {int(report['confidence'] * 100)}% "
        f"percentile-bootstrap interval over problems ({report['bootstrap_iters']} resamples); "
        "tokens are means per problem.",
        "",
        "| strategy | n | accuracy | 95% CI | problems | policy tokens | PRM tokens |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row_name(row)} | {row['n']} | {pct(row['accuracy'])} | "
            f"[{pct(row['ci_low'])}, {pct(row['ci_high'])}] | {row['problems']} | "
            f"{row['policy_tokens']:.0f} | {row['prm_tokens']:.0f} |"
        )
    lines.append("")
    notes = report.get("compute_optimal_table_notes") or []
    if notes:
        lines += [f"Notes of the fitted table {report['compute_optimal_table']}:", ""]
        lines += [f"- {note}" for note in notes] + [""]
    lines += _group_lines(report)
    lines += _breakdown(report, "by_level", "level")
    lines += _breakdown(report, "by_subject", "subject")
    lines += _diagnostic_lines(report)
    lines += _worker_lines(report)
    return "\n".join(lines)
