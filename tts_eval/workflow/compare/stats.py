"""Statistics of ``tts-eval compare``: the leaderboard of loaded systems at matched compute
(FLOPs per problem, accuracy with its bootstrap interval, the baseline comparison with paired
bootstrap differences and sign-flip p-values, FLOPs to match; see
:mod:`tts_eval.workflow.compare`). Pure: no file is read or written.

What this module does not do: load results (``load``) or render the leaderboard (``render``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tts_eval.errors import DataError
from tts_eval.params import ParamCount, short_name
from tts_eval.workflow.compare.load import System, SystemPoint, check_comparable
from tts_eval.workflow.estimate import accuracy_by, accuracy_cell

LEADERBOARD_FORMAT = "tts-eval/leaderboard"
# 2: each system records the problems it covers ("problems"), with a note when not all of them.
LEADERBOARD_VERSION = 2
FLOPS_METHOD = (
    "FLOPs per problem = 2 x parameters x tokens processed: policy (generated tokens + prompt "
    "tokens not served from the prefix cache) + PRM (tokens it processed)"
)
# Paired tests enumerate every sign flip up to this many non-zero differences (2**16 flips).
EXACT_SIGN_FLIPS = 16


def paired_bootstrap(
    a: Mapping[str, float],
    b: Mapping[str, float],
    iters: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Mean difference ``a - b`` over the problems both answered, its percentile-bootstrap
    interval and the two-sided p-value of a paired sign-flip test (:func:`sign_flip_p`);
    problems only one answered are counted."""
    import numpy as np

    common = sorted(set(a) & set(b))
    out: dict[str, Any] = {
        "problems": len(common),
        "only_first": len(set(a) - set(b)),
        "only_second": len(set(b) - set(a)),
    }
    if not common:
        return {**out, "mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": None}
    diffs = np.array([a[k] - b[k] for k in common], dtype=float)
    mean = float(diffs.mean())
    if iters < 1:
        return {**out, "mean": mean, "ci_low": mean, "ci_high": mean, "p_value": None}
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(iters, len(diffs)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return {
        **out,
        "mean": mean,
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": sign_flip_p(diffs, iters, seed),
    }


def sign_flip_p(diffs: Any, iters: int = 2000, seed: int = 0) -> float:
    """Two-sided p-value of paired differences under "no difference" (each problem's difference
    is as likely negative as positive): the share of sign flips whose mean is at least as far from
    0 as the observed one. Zero differences cannot flip and are left out; with at most
    ``EXACT_SIGN_FLIPS`` non-zero differences all ``2**k`` flips are enumerated (for 0/1
    accuracies this is the exact McNemar test), else ``iters`` random flips, ``(1 + hits) /
    (1 + iters)``. Unlike a p-value read off the bootstrap distribution, it does not call two
    problems significant."""
    import numpy as np

    d = np.asarray(diffs, dtype=float)
    d = d[np.abs(d) > 1e-12]
    if d.size == 0:
        return 1.0
    observed = abs(d.sum()) - 1e-9 * d.size
    if d.size <= EXACT_SIGN_FLIPS:
        signs = 1 - 2 * ((np.arange(2**d.size)[:, None] >> np.arange(d.size)) & 1)
        return float(np.count_nonzero(np.abs(signs @ d) >= observed) / 2**d.size)
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(iters, d.size))
    return (1 + int(np.count_nonzero(np.abs(signs @ d) >= observed))) / (1 + iters)


def flops_to_match(curve: Sequence[tuple[float, float]], target: float) -> tuple[float | None, str]:
    """FLOPs at which a curve of (FLOPs, accuracy) points first reaches ``target`` (docstring)."""
    points = sorted((f, a) for f, a in curve if f > 0)  # log FLOPs: no zero-cost points
    if not points:
        return None, "not reached"
    if points[0][1] >= target:
        return points[0][0], "at most"
    for (f1, a1), (f2, a2) in zip(points, points[1:], strict=False):
        if a1 < target <= a2:
            return _log_interp(f1, a1, f2, a2, target), "interpolated"
    if len(points) >= 2:
        (f1, a1), (f2, a2) = points[-2], points[-1]
        if a2 > a1 and f2 > f1:
            return _log_interp(f1, a1, f2, a2, target), "extrapolated"
    return None, "not reached"


def _log_interp(f1: float, a1: float, f2: float, a2: float, target: float) -> float:
    l1, l2 = math.log10(f1), math.log10(f2)
    return 10 ** (l1 + (target - a1) / (a2 - a1) * (l2 - l1))


# --------------------------------------------------------------------------- the leaderboard


def _mean(values: Mapping[str, float] | None, keys: Sequence[str]) -> float | None:
    if values is None:
        return None
    return math.fsum(values[k] for k in keys) / len(keys)


def _params_of(model: str | None, system: System, params: Mapping[str, ParamCount]) -> float:
    """The parameter count of one of ``system``'s models; one-line error when there is none
    (never a silent 0: :func:`resolve_params` finds them)."""
    if model is None or model not in params:
        raise DataError(
            f"no parameter count for {'the policy' if model is None else 'model ' + model} of "
            f"{system.label}; give it with --params {short_name(model) or 'MODEL'}=COUNT"
        )
    return params[model].params


def _point_row(
    system: System,
    point: SystemPoint,
    params: Mapping[str, ParamCount],
    iters: int,
    seed: int,
) -> dict[str, Any]:
    keys = sorted(point.accuracy)
    generated = _mean(point.policy_tokens, keys)
    prompt = _mean(point.prompt_tokens, keys)
    prm_tokens = _mean(point.prm_tokens, keys) or 0.0
    policy_flops = (
        None
        if generated is None or prompt is None
        else 2 * _params_of(system.policy, system, params) * (generated + prompt)
    )
    prm_flops = 2 * _params_of(system.prm, system, params) * prm_tokens if prm_tokens else 0.0
    return {
        "system": system.label,
        "n": point.n,
        **accuracy_cell([point.accuracy[k] for k in keys], iters, seed),
        "policy_tokens": generated,
        "prompt_tokens": prompt,
        "prm_tokens": prm_tokens,
        "policy_flops": policy_flops,
        "prm_flops": prm_flops,
        "flops": None if policy_flops is None else policy_flops + prm_flops,
        "run": point.run,
        "by_level": accuracy_by(
            point.accuracy, lambda key: system.problems[key].level, iters, seed
        ),
    }


def _pick_baseline(
    name: str, systems: Sequence[System], rows: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any]:
    label, at, n_text = name.rpartition("@")
    if not at or not n_text.isdigit() or label not in {s.label for s in systems}:
        label, n_text = name, ""
    labels = [s.label for s in systems]
    if label not in labels:
        raise DataError(f"--baseline {name!r} names no system; accepted: {'; '.join(labels)}")
    own = [r for r in rows if r["system"] == label]
    if n_text:
        own = [r for r in own if r["n"] == int(n_text)]
        if not own:
            raise DataError(f"--baseline {name!r}: system {label!r} has no budget n={n_text}")
    row = max(own, key=lambda r: r["n"])
    if row["flops"] is None:
        raise DataError(
            f"--baseline {name!r} has unknown compute (its tokens could not be counted: no local "
            "tokenizer); pick a baseline whose tokens are known"
        )
    return row


def _matched(
    systems: Sequence[System],
    rows: Sequence[Mapping[str, Any]],
    base: Mapping[str, Any],
    iters: int,
    seed: int,
) -> list[dict[str, Any]]:
    """The matched comparison of every system but the baseline's (module docstring)."""
    points = {(s.label, p.n): p for s in systems for p in s.points}
    base_accuracy = points[(base["system"], base["n"])].accuracy
    out = []
    for system in systems:
        if system.label == base["system"]:
            continue
        own = [r for r in rows if r["system"] == system.label and r["flops"] is not None]
        entry = _match_entry(system.label, own, base)
        best = entry["within_budget"]
        if best is not None:
            accuracy = points[(system.label, best["n"])].accuracy
            entry["difference"] = paired_bootstrap(accuracy, base_accuracy, iters, seed)
        out.append(entry)
    return out


def _match_entry(
    label: str, own: Sequence[Mapping[str, Any]], base: Mapping[str, Any]
) -> dict[str, Any]:
    """One system's rows (of known compute) against the baseline row: its best row within the
    baseline's FLOPs and the FLOPs it needs to match the baseline's accuracy (no difference yet)."""
    if not own:
        return {
            "system": label,
            "within_budget": None,
            "difference": None,
            "flops_to_match": None,
            "match": "compute unknown",
            "ratio": None,
        }
    within = [r for r in own if r["flops"] <= base["flops"] * (1 + 1e-9)]
    best = max(within, key=lambda r: (r["accuracy"], -r["flops"])) if within else None
    value, how = flops_to_match([(r["flops"], r["accuracy"]) for r in own], base["accuracy"])
    return {
        "system": label,
        "within_budget": None
        if best is None
        else {"n": best["n"], "accuracy": best["accuracy"], "flops": best["flops"]},
        "difference": None,
        "flops_to_match": value,
        "match": how,
        "ratio": None if value is None else value / base["flops"],
    }


def build_leaderboard(
    systems: Sequence[System],
    params: Mapping[str, ParamCount],
    *,
    baseline: str | None = None,
    bootstrap_iters: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The JSON-ready leaderboard of ``systems`` (see the module docstring)."""
    if isinstance(bootstrap_iters, bool) or not isinstance(bootstrap_iters, int):
        raise DataError(f"bootstrap_iters must be an integer >= 0, got {bootstrap_iters!r}")
    if bootstrap_iters < 0:
        raise DataError(f"bootstrap_iters must be an integer >= 0, got {bootstrap_iters!r}")
    if not systems:
        raise DataError("no systems to compare")
    task = check_comparable(systems)
    total = len({k for s in systems for k in s.problems})
    rows = [
        _point_row(s, p, params, bootstrap_iters, seed)
        for s in systems
        for p in sorted(s.points, key=lambda p: p.n)
    ]
    board: dict[str, Any] = {
        "format": LEADERBOARD_FORMAT,
        "version": LEADERBOARD_VERSION,
        "task": task,
        "problems": total,
        "confidence": 0.95,
        "bootstrap_iters": bootstrap_iters,
        "seed": seed,
        "method": FLOPS_METHOD,
        "models": [
            {"model": c.model, "short": short_name(c.model), "params": c.params, "method": c.method}
            for c in params.values()
        ],
        "systems": [_system_entry(s, rows, total) for s in systems],
        "rows": rows,
        "baseline": None,
        "matched": [],
    }
    if baseline is not None:
        base = _pick_baseline(baseline, systems, rows)
        board["baseline"] = {
            "system": base["system"],
            "n": base["n"],
            "accuracy": base["accuracy"],
            "flops": base["flops"],
        }
        board["matched"] = _matched(systems, rows, base, bootstrap_iters, seed)
    return board


def coverage_note(covered: int, total: int) -> str | None:
    """The note of a system that stands on fewer problems than the leaderboard holds."""
    if covered >= total:
        return None
    return (
        f"covers {covered} of the {total} problems: its accuracy is over those, and paired "
        "differences use the problems both systems answered"
    )


def _system_entry(system: System, rows: Sequence[Mapping[str, Any]], total: int) -> dict[str, Any]:
    own = [r for r in rows if r["system"] == system.label]
    best = max(own, key=lambda r: (r["accuracy"], -r["n"]))
    note = coverage_note(len(system.problems), total)
    return {
        "label": system.label,
        "source": system.source,
        "kind": system.kind,
        "policy": system.policy,
        "prm": system.prm,
        "strategy": system.strategy,
        "selection": system.selection,
        "settings": system.settings,
        "budgets": [r["n"] for r in own],
        "best_n": best["n"],
        "problems": len(system.problems),
        "notes": [note, *system.notes] if note else list(system.notes),
    }
