"""PNG figures: ``tts-eval plot`` (one report) and ``tts-eval compare`` (a leaderboard).

From a report (``tts_eval.workflow.report.build_report``), :func:`plot_report` writes:

- ``accuracy_vs_budget.png``: accuracy against n (log2 axis), one line per strategy with its 95%
  interval as error bars, and optional horizontal reference lines (``--ref "Llama-3.1-8B CoT=49.8"``,
  accuracy in percent);
- ``accuracy_vs_tokens.png``: accuracy against mean generated (policy) tokens per problem, with
  the same error bars;
- ``accuracy_by_level.png``: one panel per difficulty level, accuracy against n.

From a leaderboard (``tts_eval.workflow.compare.build_leaderboard``), :func:`plot_comparison`
writes:

- ``compare_accuracy_vs_flops.png``: accuracy against FLOPs per problem (log axis, true FLOPs: not
  shifted) for every system whose compute is known (the others are named in a note); systems of one
  budget (baselines) are points with their interval, the baseline's FLOPs a dotted vertical line;
- ``compare_accuracy_vs_budget.png``: accuracy against n for the systems with several budgets; the
  others are horizontal lines with a light band for their interval;
- ``compare_accuracy_by_level.png``: accuracy by MATH level of every system at its best budget
  (bars with their intervals and values; no bar where a system has no problem of that level).

Readability: each line has its own colour, marker and line style, and lines of a budget axis are
shifted slightly along the (log) x axis so that equal curves and their error bars stay visible;
comparison legends sit under the axes (long system labels never cover the data); markers at 0% or
100% are drawn whole;
accuracy axes are fixed at 0-100% unless ``zoom=True`` (``--zoom``) fits them to the data; titles
name the task and the short names of the policy and PRM; legends name the curves or systems.
Comparison titles give the number of problems in all and, where systems cover different numbers,
their range per system (``arith (12 problems, 4-12 per system)``); a system that does not cover
every problem says how many it does in its legend entry (``4 of 12 problems``). Log axes of tokens
and FLOPs are labelled with plain numbers (``20``, ``1,500``, ``200k``, ``3T``), never ``2x10^1``.
``pass@n`` (coverage) is left out of report figures unless ``oracle=True``. matplotlib is
imported lazily with the Agg backend (no display needed). :func:`report_figures` and
:func:`comparison_figures` return the open figures (for inspection) without writing them.

What this module does not do: compute estimates (``report``/``estimate``/``compare``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tts_eval.errors import DataError, MissingDependencyError
from tts_eval.files import atomic_open

logger = logging.getLogger(__name__)

MATPLOTLIB_HINT = "tts-eval plot needs matplotlib: pip install 'tts-scaling-eval[plot]'"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
LINESTYLES = ("-", "--", "-.", ":")
# Horizontal spread between the lines of one figure, in decades (log10) of the x axis.
DODGE_DECADES = 0.025


def parse_ref(text: str) -> tuple[str, float]:
    """``"label=49.8"`` -> ``("label", 49.8)``; one-line error otherwise."""
    label, sep, value = text.rpartition("=")
    try:
        number = float(value)
    except ValueError:
        number = None
    if not sep or not label.strip() or number is None or not 0 <= number <= 100:
        raise DataError(
            f'--ref {text!r} is invalid; accepted: "LABEL=ACCURACY" with accuracy in percent '
            '(e.g. "Llama-3.1-8B CoT=49.8")'
        )
    return label.strip(), number


# Above this, tick labels of a log axis shorten with an SI suffix (k, M, G, T, P).
PLAIN_UP_TO = 100_000
SI_SUFFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def plain_number(x: float) -> str:
    """A log-axis tick label without exponents: ``20``, ``1,500``, ``0.5``, and above
    :data:`PLAIN_UP_TO` a suffix: ``200k``, ``1.5M``, ``3T`` (FLOPs)."""
    if x >= PLAIN_UP_TO:
        for scale, suffix in SI_SUFFIXES:
            if x >= scale:
                return f"{x / scale:.3g}{suffix}"
    if x >= 1:
        return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.3g}"
    return f"{x:.3g}"


def plain_log_ticks(axis: Any) -> None:
    """Label a log ``axis`` (``ax.xaxis``) with :func:`plain_number` where matplotlib would write
    ``2x10^1``; which ticks get a label is still matplotlib's choice (its log formatters decide,
    e.g. minor ticks only on short ranges). Call after ``set_xscale("log")``."""
    from matplotlib import ticker

    class Plain(ticker.Formatter):
        def __init__(self, chooser: Any) -> None:
            self.chooser = chooser

        def set_axis(self, axis: Any) -> None:
            super().set_axis(axis)
            self.chooser.set_axis(axis)

        def set_locs(self, locs: Any) -> None:
            super().set_locs(locs)
            self.chooser.set_locs(locs)

        def __call__(self, x: float, pos: int | None = None) -> str:
            return plain_number(x) if x > 0 and self.chooser(x, pos) else ""

    axis.set_major_formatter(Plain(axis.get_major_formatter()))
    axis.set_minor_formatter(Plain(axis.get_minor_formatter()))


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError(MATPLOTLIB_HINT) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(report: Mapping[str, Any], what: str) -> str:
    from tts_eval.params import short_name

    task = report.get("task") or "task"
    parts = [f"{task}: {what}"]
    if report.get("policy"):
        parts.append(f"policy {short_name(report['policy'])}")
    if report.get("prm"):
        parts.append(f"PRM {short_name(report['prm'])}")
    return "\n".join([parts[0], ", ".join(parts[1:])]) if len(parts) > 1 else parts[0]


def _curves(report: Mapping[str, Any], oracle: bool) -> dict[str, list[Mapping[str, Any]]]:
    from tts_eval.workflow.report import row_name

    curves: dict[str, list[Mapping[str, Any]]] = {}
    for row in report["rows"]:
        if row["curve"] == "pass@n" and not oracle:
            continue
        curves.setdefault(row_name(row), []).append(row)
    return {k: sorted(v, key=lambda r: r["n"]) for k, v in curves.items()}


def series_style(i: int) -> dict[str, Any]:
    """Colour, marker and line style of the i-th series of a figure (all three cycle apart)."""
    return {
        "color": f"C{i % 10}",
        "marker": MARKERS[i % len(MARKERS)],
        "linestyle": LINESTYLES[(i // 2) % len(LINESTYLES)],
    }


def _dodge(i: int, count: int) -> float:
    """Multiplicative x shift of series i of ``count`` on a log axis (centred on 1)."""
    return 10 ** ((i - (count - 1) / 2) * DODGE_DECADES)


def _errorbars(ax, xs, rows, label: str, style: Mapping[str, Any], cell=lambda r: r) -> None:
    ys = [100 * cell(r)["accuracy"] for r in rows]
    low = [max(0.0, y - 100 * cell(r)["ci_low"]) for y, r in zip(ys, rows, strict=True)]
    high = [max(0.0, 100 * cell(r)["ci_high"] - y) for y, r in zip(ys, rows, strict=True)]
    options = {"capsize": 3, "elinewidth": 1, "markersize": 6, "linewidth": 1.5, **style}
    options.setdefault("clip_on", False)  # markers at 0% or 100% are not cut in half
    ax.errorbar(xs, ys, yerr=[low, high], label=label, **options)


def _style(ax, xlabel: str, zoom: bool) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, alpha=0.3)
    if not zoom:
        ax.set_ylim(0, 100)


def _legend(ax, count: int) -> None:
    if count > 4:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    else:
        ax.legend(loc="best", fontsize="small")


def report_figures(
    report: Mapping[str, Any],
    refs: Sequence[tuple[str, float]] = (),
    *,
    oracle: bool = False,
    zoom: bool = False,
) -> dict[str, Any]:
    """The figures of ``report`` by file name (open matplotlib figures; see the docstring)."""
    plt = _pyplot()
    curves = _curves(report, oracle)
    if not curves:
        raise DataError("the report has no rows to plot")
    styles = {name: series_style(i) for i, name in enumerate(curves)}
    count = len(curves)
    figures = {}

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, (name, rows) in enumerate(curves.items()):
        _errorbars(ax, [r["n"] * _dodge(i, count) for r in rows], rows, name, styles[name])
    for i, (label, value) in enumerate(refs):
        ax.axhline(value, linestyle=":", linewidth=1.5, color=f"C{(count + i) % 10}", label=label)
    ax.set_xscale("log", base=2)
    budgets = sorted({r["n"] for rows in curves.values() for r in rows})
    ax.set_xticks(budgets, [str(n) for n in budgets])
    _style(ax, "test-time budget n (generations per problem, log2)", zoom)
    ax.set_title(_title(report, "accuracy vs test-time budget"))
    _legend(ax, count + len(refs))
    figures["accuracy_vs_budget.png"] = fig

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, (name, rows) in enumerate(curves.items()):
        xs = [max(r["policy_tokens"], 1e-9) * _dodge(i, count) for r in rows]
        _errorbars(ax, xs, rows, name, styles[name])
    for i, (label, value) in enumerate(refs):
        ax.axhline(value, linestyle=":", linewidth=1.5, color=f"C{(count + i) % 10}", label=label)
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis)
    _style(ax, "generated policy tokens per problem (log)", zoom)
    ax.set_title(_title(report, "accuracy vs tokens spent"))
    _legend(ax, count + len(refs))
    figures["accuracy_vs_tokens.png"] = fig

    levels = sorted(
        {lv for rows in curves.values() for r in rows for lv in r["by_level"]},
        key=lambda s: (len(s), s),
    )
    if levels:
        cols = min(len(levels), 3)
        rows_n = -(-len(levels) // cols)
        fig, axes = plt.subplots(
            rows_n, cols, figsize=(4.5 * cols, 3.8 * rows_n), squeeze=False, sharey=True
        )
        for ax, level in zip(axes.flat, levels, strict=False):
            for i, (name, rows) in enumerate(curves.items()):
                pts = [r for r in rows if level in r["by_level"]]
                if pts:
                    _errorbars(
                        ax,
                        [r["n"] * _dodge(i, count) for r in pts],
                        pts,
                        name,
                        styles[name],
                        cell=lambda r, level=level: r["by_level"][level],
                    )
            ax.set_xscale("log", base=2)
            ax.set_xticks(budgets, [str(n) for n in budgets])
            _style(ax, "budget n (log2)", zoom)
            ax.set_title(f"level {level}")
        for ax in list(axes.flat)[len(levels) :]:
            ax.axis("off")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(max(1, len(labels)), 4))
        fig.suptitle(_title(report, "accuracy by difficulty level"))
        fig.tight_layout(rect=(0, 0.08 + 0.03 * (len(labels) // 4), 1, 1))
        figures["accuracy_by_level.png"] = fig
    return figures


def plot_report(
    report: Mapping[str, Any],
    out_dir: str | os.PathLike,
    refs: Sequence[tuple[str, float]] = (),
    *,
    oracle: bool = False,
    zoom: bool = False,
) -> list[Path]:
    """Write the figures of ``report`` under ``out_dir``; return their paths."""
    figures = report_figures(report, refs, oracle=oracle, zoom=zoom)
    return _save_all(figures, out_dir)


def _legend_below(ax, count: int, last: str | None = None) -> None:
    """A legend under the axes: long system labels never cover the data; entry ``last`` (a
    reference line, listed first by matplotlib) goes after the systems."""
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i] == last)
    ax.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=1 if count <= 6 else 2,
        fontsize="small",
        frameon=False,
    )


def _coverage(board: Mapping[str, Any]) -> dict[str, int]:
    """Problems each system stands on (leaderboards of before version 2 did not record them)."""
    return {s["label"]: s["problems"] for s in board["systems"] if s.get("problems") is not None}


def _board_title(board: Mapping[str, Any], what: str) -> str:
    """``task (N problems): what``; when systems cover different numbers of problems,
    ``task (N problems, 4-12 per system): what`` (each legend entry then says its own)."""
    total = board["problems"]
    counts = set(_coverage(board).values())
    if counts and counts != {total}:
        low, high = min(counts), max(counts)
        each = f"{low}" if low == high else f"{low}-{high}"
        return f"{board.get('task') or 'task'} ({total} problems, {each} per system): {what}"
    return f"{board.get('task') or 'task'} ({total} problems): {what}"


def system_legend(board: Mapping[str, Any], label: str, *extra: str) -> str:
    """A system's legend entry: its label, then ``extra`` and, when it does not cover every
    problem of the board, how many it covers: ``CoT (n=1, 4 of 12 problems)``."""
    count = _coverage(board).get(label)
    parts = list(extra)
    if count is not None and count != board["problems"]:
        parts.append(f"{count} of {board['problems']} problems")
    return f"{label} ({', '.join(parts)})" if parts else label


def _system_rows(board: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
    """Each system's rows (by budget), systems in leaderboard order."""
    return {
        s["label"]: sorted((r for r in board["rows"] if r["system"] == s["label"]), key=_n)
        for s in board["systems"]
    }


def _n(row: Mapping[str, Any]) -> int:
    return int(row["n"])


def _flops_figure(plt, board: Mapping[str, Any], styles, zoom: bool):
    """Accuracy vs FLOPs per problem: curves, one-budget systems as points with their interval.
    Not dodged (the x axis is a measurement); systems of unknown compute are named in a note."""
    fig, ax = plt.subplots(figsize=(8, 5))
    unknown = []
    drawn = 0
    for label, rows in _system_rows(board).items():
        known = [r for r in rows if r["flops"] is not None and r["flops"] > 0]
        if not known:
            unknown.append(label)
            continue
        style = dict(styles[label])
        if len(known) == 1:
            style.update(linestyle="none", markersize=9)
        _errorbars(ax, [r["flops"] for r in known], known, system_legend(board, label), style)
        drawn += 1
    base = board.get("baseline")
    line = None
    if base and base.get("flops"):
        line = f"compute of the baseline, {base['system']} (n={base['n']})"
        ax.axvline(base["flops"], color="grey", linestyle=":", linewidth=1, label=line)
    ax.set_xscale("log")
    plain_log_ticks(ax.xaxis)
    _style(ax, "compute per problem (FLOPs, policy + PRM, log)", zoom)
    ax.set_title(_board_title(board, "accuracy vs compute per problem"))
    unknown = [system_legend(board, label) for label in unknown]
    if unknown:
        logger.warning("compute unknown, left out of the FLOPs figure: %s", "; ".join(unknown))
        ax.text(
            0.01,
            0.99,
            "compute unknown (not shown): " + "; ".join(unknown),
            transform=ax.transAxes,
            va="top",
            fontsize="small",
            color="grey",
        )
    if drawn:
        _legend_below(ax, drawn + bool(line), last=line)
    return fig


def _budget_figure(plt, board: Mapping[str, Any], styles, zoom: bool):
    """Accuracy vs budget n; systems of one budget are a dotted line with a light interval band."""
    fig, ax = plt.subplots(figsize=(8, 5))
    by_system = _system_rows(board)
    curves = [label for label, rows in by_system.items() if len(rows) > 1]
    for i, label in enumerate(curves):
        rows = by_system[label]
        xs = [r["n"] * _dodge(i, len(curves)) for r in rows]
        _errorbars(ax, xs, rows, system_legend(board, label), styles[label])
    for label, rows in by_system.items():
        if len(rows) == 1:
            (row,) = rows
            color = styles[label]["color"]
            ax.axhline(
                100 * row["accuracy"],
                color=color,
                linestyle=":",
                linewidth=1.5,
                clip_on=False,
                label=system_legend(board, label, f"n={row['n']}"),
            )
            ax.axhspan(100 * row["ci_low"], 100 * row["ci_high"], color=color, alpha=0.1, lw=0)
    budgets = sorted({r["n"] for label in curves for r in by_system[label]}) or [1]
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(n) for n in budgets])
    _style(ax, "test-time budget n (generations per problem, log2)", zoom)
    ax.set_title(_board_title(board, "accuracy vs test-time budget"))
    _legend_below(ax, len(by_system))
    return fig


def _level_figure(plt, board: Mapping[str, Any], styles, zoom: bool):
    """Accuracy by MATH level of every system at its best budget: bars with their intervals and
    values; a level a system has no problem of gets no bar (not a 0% one). ``None`` without
    levels."""
    by_system = _system_rows(board)
    best = {
        s["label"]: next(r for r in by_system[s["label"]] if r["n"] == s["best_n"])
        for s in board["systems"]
    }
    levels = sorted({lv for r in best.values() for lv in r["by_level"]}, key=lambda s: (len(s), s))
    if not levels:
        return None
    count = len(best)
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(levels) * count), 5))
    width = 0.8 / count
    for i, (label, row) in enumerate(best.items()):
        cells = [(j, row["by_level"][lv]) for j, lv in enumerate(levels) if lv in row["by_level"]]
        ys = [100 * c["accuracy"] for _, c in cells]
        err = [
            [max(0.0, y - 100 * c["ci_low"]) for y, (_, c) in zip(ys, cells, strict=True)],
            [max(0.0, 100 * c["ci_high"] - y) for y, (_, c) in zip(ys, cells, strict=True)],
        ]
        bars = ax.bar(
            [j + (i - (count - 1) / 2) * width for j, _ in cells],
            ys,
            width=width,
            yerr=err,
            capsize=2,
            color=styles[label]["color"],
            hatch=("", "//", "..", "xx")[i // 10 % 4],
            label=system_legend(board, label, f"n={row['n']}"),
        )
        ax.bar_label(bars, fmt="%.0f", fontsize="x-small", padding=2)
    ax.set_xticks(range(len(levels)), [f"level {lv}" for lv in levels])
    _style(ax, "MATH difficulty level", zoom)
    ax.grid(False, axis="x")
    ax.set_title(  # pad: room for the values written on 100% bars
        _board_title(board, "accuracy by level, each system at its best budget"), pad=14
    )
    _legend_below(ax, count)
    return fig


def comparison_figures(board: Mapping[str, Any], *, zoom: bool = False) -> dict[str, Any]:
    """The figures of a leaderboard by file name (open matplotlib figures; see the docstring)."""
    plt = _pyplot()
    styles = {s["label"]: series_style(i) for i, s in enumerate(board["systems"])}
    figures = {
        "compare_accuracy_vs_flops.png": _flops_figure(plt, board, styles, zoom),
        "compare_accuracy_vs_budget.png": _budget_figure(plt, board, styles, zoom),
        "compare_accuracy_by_level.png": _level_figure(plt, board, styles, zoom),
    }
    return {name: fig for name, fig in figures.items() if fig is not None}


def plot_comparison(
    board: Mapping[str, Any], out_dir: str | os.PathLike, *, zoom: bool = False
) -> list[Path]:
    """Write the figures of a leaderboard under ``out_dir``; return their paths."""
    return _save_all(comparison_figures(board, zoom=zoom), out_dir)


def budgets_figure(report: Mapping[str, Any]) -> Any:
    """Accuracy vs budget of ``tts-eval demo``'s rows (method, n, mean, ci), one series per
    method, on a base-2 log axis with plain tick labels."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    methods: dict[str, list[Mapping[str, Any]]] = {}
    for row in report["rows"]:
        methods.setdefault(row["method"], []).append(row)
    ticks = sorted({int(row["n"]) for row in report["rows"]})
    for i, (method, rows) in enumerate(methods.items()):
        style = series_style(i)
        xs = [r["n"] * _dodge(i, len(methods)) for r in rows]
        ys = [100 * r["mean"] for r in rows]
        err = [
            [y - 100 * r["ci"][0] for y, r in zip(ys, rows, strict=True)],
            [100 * r["ci"][1] - y for y, r in zip(ys, rows, strict=True)],
        ]
        ax.errorbar(xs, ys, yerr=err, capsize=3, label=method, **style)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_ylim(0, 100)
    ax.set_xlabel("budget n")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(
        f"{Path(str(report['policy'])).name} on arith ({report['problems']} problems), "
        f"PRM {Path(str(report['prm'])).name}",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    return fig


def _save_all(figures: Mapping[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    plt = _pyplot()
    out = Path(out_dir)
    paths = []
    for name, fig in figures.items():
        path = out / name
        try:
            with atomic_open(path, "wb", option="--out") as f:
                fig.savefig(
                    f, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight"
                )
        finally:
            plt.close(fig)
        logger.info("wrote %s", path)
        paths.append(path)
    return paths
