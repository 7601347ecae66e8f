"""Rendering of ``tts-eval compare``: a leaderboard (``stats.build_leaderboard``) as markdown and
as one self-contained HTML page; figures are drawn by :func:`tts_eval.workflow.plot.plot_comparison`.

What this module does not do: load results or compute statistics.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from tts_eval.workflow.report import pct


def _num(x: float | None, fmt: str = ".0f") -> str:
    return "unknown" if x is None else format(x, fmt)


def _flops(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.3g}"


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.3g}"


def _problems_intro(board: Mapping[str, Any]) -> str:
    """``12 problems``, or ``12 problems in all; systems cover 4-12 (problems column, notes)``."""
    counts = {s["problems"] for s in board["systems"] if s.get("problems") is not None}
    if not counts or counts == {board["problems"]}:
        return f"{board['problems']} problems"
    low, high = min(counts), max(counts)
    each = f"{low}" if low == high else f"{low}-{high}"
    return (
        f"{board['problems']} problems in all; systems cover {each} of them (the problems "
        "column gives each row's, the notes each system's)"
    )


def _tables(board: Mapping[str, Any]) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(title, intro, header, rows) of every table, shared by markdown and HTML."""
    tables = []
    tables.append(
        (
            "Leaderboard",
            f"{_problems_intro(board)}; accuracy in %, "
            f"{int(board['confidence'] * 100)}% percentile-bootstrap interval over problems "
            f"({board['bootstrap_iters']} resamples); tokens and FLOPs are means per problem.",
            [
                "system",
                "n",
                "accuracy",
                "95% CI",
                "problems",
                "policy tokens",
                "prompt tokens",
                "PRM tokens",
                "FLOPs",
            ],
            [
                [
                    r["system"],
                    str(r["n"]),
                    pct(r["accuracy"]),
                    f"[{pct(r['ci_low'])}, {pct(r['ci_high'])}]",
                    str(r["problems"]),
                    _num(r["policy_tokens"]),
                    _num(r["prompt_tokens"]),
                    _num(r["prm_tokens"]),
                    _flops(r["flops"]),
                ]
                for r in board["rows"]
            ],
        )
    )
    tables.append(
        (
            "Models",
            board["method"] + ".",
            ["model", "parameters", "how"],
            [[m["model"], f"{m['params']:.4g}", m["method"]] for m in board["models"]],
        )
    )
    base = board.get("baseline")
    if base:
        tables.append(
            (
                f"Matched compute against {base['system']} (n={base['n']})",
                f"Baseline: {pct(base['accuracy'])}% at {_flops(base['flops'])} FLOPs per "
                "problem. Best accuracy within the baseline's FLOPs per problem, its paired "
                "difference to the baseline (percentage points, 95% bootstrap interval, two-sided "
                "p of a paired sign-flip test; problems only one of them answered are left out), "
                "and the FLOPs each system "
                "needs to reach the baseline's accuracy (interpolated in log FLOPs on its curve).",
                [
                    "system",
                    "n",
                    "accuracy",
                    "difference",
                    "95% CI",
                    "p",
                    "paired problems (left out)",
                    "FLOPs to match",
                    "x baseline",
                    "how",
                ],
                [_matched_cells(m) for m in board["matched"]],
            )
        )
    return tables


def _matched_cells(m: Mapping[str, Any]) -> list[str]:
    within, diff = m.get("within_budget"), m.get("difference")
    cells = [m["system"]]
    if within is None:
        unknown = m.get("match") == "compute unknown"
        cells += ["-", "compute unknown" if unknown else "none within budget", "", "", "", ""]
    else:
        left = diff["only_first"] + diff["only_second"]
        cells += [
            str(within["n"]),
            pct(within["accuracy"]),
            f"{100 * diff['mean']:+.1f}",
            f"[{100 * diff['ci_low']:+.1f}, {100 * diff['ci_high']:+.1f}]",
            _p(diff["p_value"]),
            f"{diff['problems']} ({left})",
        ]
    ratio = m.get("ratio")
    cells += [
        _flops(m.get("flops_to_match")),
        "" if ratio is None else f"{ratio:.3g}",
        m.get("match", ""),
    ]
    return cells


def _notes(board: Mapping[str, Any]) -> list[str]:
    return [f"{s['label']}: {note}" for s in board["systems"] for note in s["notes"]]


def to_markdown(board: Mapping[str, Any]) -> str:
    """The leaderboard as markdown: leaderboard, models, matched comparison, notes."""
    lines = [f"# Comparison on {board.get('task') or 'the task'}", ""]
    for title, intro, header, rows in _tables(board):
        lines += [f"## {title}", "", intro, ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|---|" + "---:|" * (len(header) - 1))
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        lines.append("")
    notes = _notes(board)
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def to_html(board: Mapping[str, Any]) -> str:
    """The leaderboard as one self-contained HTML page (inline style, no scripts)."""
    esc = html.escape
    title = f"Comparison on {board.get('task') or 'the task'}"
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "margin-bottom:1.5em}th,td{border:1px solid #ccc;padding:4px 8px}"
        "td:not(:first-child){text-align:right}th{background:#f4f4f4}</style>",
        "</head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    for name, intro, header, rows in _tables(board):
        parts += [f"<h2>{esc(name)}</h2>", f"<p>{esc(intro)}</p>", "<table>"]
        parts.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    notes = _notes(board)
    if notes:
        parts += ["<h2>Notes</h2>", "<ul>"] + [f"<li>{esc(n)}</li>" for n in notes] + ["</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
