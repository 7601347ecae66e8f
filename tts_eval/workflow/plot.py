"""``tts-eval plot``: PNG figures from a report (``tts_eval.workflow.report.build_report``).

- ``accuracy_vs_budget.png``: accuracy against n (log2 axis), one line per strategy with its 95%
  interval as a band, and optional horizontal reference lines (``--ref "Llama-3.1-8B CoT=49.8"``,
  accuracy in percent);
- ``accuracy_vs_tokens.png``: accuracy against mean generated (policy) tokens per problem;
- ``accuracy_by_level.png``: one panel per difficulty level, accuracy against n.

Titles name the task, policy and PRM. When the report holds several settings groups, each group's
curve is its own line, named like its rows (``best_of_n [temperature=0.5]``). ``pass@n``
(coverage) is left out of the figures unless ``oracle=True``. matplotlib is imported lazily with
the Agg backend (no display needed).

What this module does not do: compute estimates (``report``/``estimate``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MATPLOTLIB_HINT = "tts-eval plot needs matplotlib: pip install 'tts-eval[plot]'"


def parse_ref(text: str) -> tuple[str, float]:
    """``"label=49.8"`` -> ``("label", 49.8)``; one-line error otherwise."""
    label, sep, value = text.rpartition("=")
    try:
        number = float(value)
    except ValueError:
        number = None
    if not sep or not label.strip() or number is None or not 0 <= number <= 100:
        raise ValueError(
            f'--ref {text!r} is invalid; accepted: "LABEL=ACCURACY" with accuracy in percent '
            '(e.g. "Llama-3.1-8B CoT=49.8")'
        )
    return label.strip(), number


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(MATPLOTLIB_HINT) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(report: Mapping[str, Any], what: str) -> str:
    task = report.get("task") or "task"
    policy = report.get("policy")
    prm = report.get("prm")
    parts = [f"{task}: {what}"]
    if policy:
        shown = Path(str(policy)).name if Path(str(policy)).exists() else policy
        parts.append(f"policy {shown}")
    if prm:
        parts.append(f"PRM {prm}")
    return "\n".join([parts[0], ", ".join(parts[1:])]) if len(parts) > 1 else parts[0]


def _curves(report: Mapping[str, Any], oracle: bool) -> dict[str, list[Mapping[str, Any]]]:
    from tts_eval.workflow.report import row_name

    curves: dict[str, list[Mapping[str, Any]]] = {}
    for row in report["rows"]:
        if row["curve"] == "pass@n" and not oracle:
            continue
        curves.setdefault(row_name(row), []).append(row)
    return {k: sorted(v, key=lambda r: r["n"]) for k, v in curves.items()}


def _style(ax, xlabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, alpha=0.3)


def plot_report(
    report: Mapping[str, Any],
    out_dir: str | os.PathLike,
    refs: Sequence[tuple[str, float]] = (),
    *,
    oracle: bool = False,
) -> list[Path]:
    """Write the figures of ``report`` under ``out_dir``; return their paths."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    curves = _curves(report, oracle)
    if not curves:
        raise ValueError("the report has no rows to plot")
    colors = {name: f"C{i}" for i, name in enumerate(curves)}
    paths = []

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, rows in curves.items():
        xs = [r["n"] for r in rows]
        ax.plot(xs, [100 * r["accuracy"] for r in rows], marker="o", label=name, color=colors[name])
        ax.fill_between(
            xs,
            [100 * r["ci_low"] for r in rows],
            [100 * r["ci_high"] for r in rows],
            alpha=0.15,
            color=colors[name],
        )
    for i, (label, value) in enumerate(refs):
        ax.axhline(value, linestyle="--", color=f"C{len(curves) + i}", label=label)
    ax.set_xscale("log", base=2)
    _style(ax, "test-time budget n (generations per problem, log2)")
    ax.set_title(_title(report, "accuracy vs test-time budget"))
    ax.legend(loc="best")
    paths.append(_save(fig, out / "accuracy_vs_budget.png", plt))

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, rows in curves.items():
        xs = [max(r["policy_tokens"], 1e-9) for r in rows]
        ax.plot(xs, [100 * r["accuracy"] for r in rows], marker="o", label=name, color=colors[name])
    for i, (label, value) in enumerate(refs):
        ax.axhline(value, linestyle="--", color=f"C{len(curves) + i}", label=label)
    ax.set_xscale("log")
    _style(ax, "generated policy tokens per problem (log)")
    ax.set_title(_title(report, "accuracy vs tokens spent"))
    ax.legend(loc="best")
    paths.append(_save(fig, out / "accuracy_vs_tokens.png", plt))

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
            for name, rows in curves.items():
                pts = [r for r in rows if level in r["by_level"]]
                if pts:
                    ax.plot(
                        [r["n"] for r in pts],
                        [100 * r["by_level"][level]["accuracy"] for r in pts],
                        marker="o",
                        label=name,
                        color=colors[name],
                    )
            ax.set_xscale("log", base=2)
            _style(ax, "budget n (log2)")
            ax.set_title(f"level {level}")
        for ax in list(axes.flat)[len(levels) :]:
            ax.axis("off")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)))
        fig.suptitle(_title(report, "accuracy by difficulty level"))
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        paths.append(_save(fig, out / "accuracy_by_level.png", plt))
    return paths


def _save(fig, path: Path, plt) -> Path:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    logger.info("wrote %s", path)
    return path
