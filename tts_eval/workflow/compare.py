"""``tts-eval compare``: one leaderboard of systems at matched compute, from any mix of results.

A RESULT is a sweep folder (``sweep.json``), a JSONL trace file, or an lm-eval output folder
(``results_*.json`` with the ``samples_<task>_*.jsonl`` that ``--log_samples`` writes beside it) of
any model (``--model hf``/``vllm`` chain-of-thought runs; a ``--model tts`` run's logged traces are
read as a trace file). :func:`load_systems` turns each into *systems*:

- a sweep folder or trace file gives one system per settings group and curve (strategy and
  selection; ``majority`` read off a ``best_of_n`` run is its own system, ``pass@n`` is left out),
  with a point per budget n (``tts_eval.workflow.estimate``);
- an lm-eval output gives one system per results file: one point (n = 1), each problem's
  ``exact_match`` as logged.

Each point carries per problem: accuracy in [0, 1], generated policy tokens, prompt tokens the
policy processed (not served from the prefix cache) and PRM tokens. Tokens at n < N are the run's
scaled by n/N, as in ``tts-eval report``; the prompt of one-request sampling runs (``best_of_n``,
``majority``: one prompt per problem whatever n) is charged whole. Trace costs are read with
:func:`tts_eval.traces.result_from_record`. Tokens of plain lm-eval runs are counted with the
model's tokenizer (local files only): the logged response (``resps``) and the logged prompt text
(``arguments``, the chat already rendered; every prompt token counts as processed); without a local
tokenizer they are unknown, and so is the system's compute.

:func:`build_leaderboard` (pure) adds compute: FLOPs per problem = 2 x parameters x tokens
processed, for the policy (generated + uncached prompt tokens) and the PRM (the tokens it
processed), with parameter counts from :mod:`tts_eval.params`; accuracy with a 95%
percentile-bootstrap interval over problems; and, with a baseline, the matched comparison:

- *within the baseline's compute*: the best accuracy a system reaches at FLOPs per problem <= the
  baseline's, and its difference to the baseline on the problems both answered (paired bootstrap
  95% interval; two-sided p-value of a paired sign-flip test, exact up to 16 differing problems,
  the exact McNemar test for 0/1 accuracies; problems only one of them answered are left out and
  counted);
- *compute to match*: the FLOPs at which the system's curve (points ordered by FLOPs) first reaches
  the baseline's accuracy, interpolated linearly in log FLOPs between the two points around the
  crossing; ``extrapolated`` past its last two points when it never gets there (and still rises);
  ``at most`` its cheapest point when that already matches; ``not reached`` otherwise.

Results of different tasks, two systems with no problem in common, or a problem with different
gold answers in two systems are refused with one line. Systems on overlapping problem sets (e.g. one
run with ``--limit``) are compared: each row says on how many problems it stands, each system how
many it covers (``problems``; a note, and the figures' legends, when fewer than the leaderboard
holds), and paired differences use the shared problems only.

:func:`to_markdown` / :func:`to_html` render the leaderboard; figures are drawn by
:func:`tts_eval.workflow.plot.plot_comparison`.

What this module does not do: run models, load weights, or draw figures.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tts_eval.errors import DataError
from tts_eval.params import ParamCount, parameter_count, short_name
from tts_eval.search import get_spec, strategy_names
from tts_eval.types import AnswerSpec
from tts_eval.workflow.estimate import (
    EstimateSettings,
    accuracy_by,
    accuracy_cell,
    curve_sort_key,
    prm_free_curves,
)
from tts_eval.workflow.report import pct
from tts_eval.workflow.results import Results

logger = logging.getLogger(__name__)

LEADERBOARD_FORMAT = "tts-eval/leaderboard"
# 2: each system records the problems it covers ("problems"), with a note when not all of them.
LEADERBOARD_VERSION = 2
# Curves left out of comparisons: coverage is an oracle, not a system.
ORACLE_CURVES = ("pass@n",)
FLOPS_METHOD = (
    "FLOPs per problem = 2 x parameters x tokens processed: policy (generated tokens + prompt "
    "tokens not served from the prefix cache) + PRM (tokens it processed)"
)
# Paired tests enumerate every sign flip up to this many non-zero differences (2**16 flips).
EXACT_SIGN_FLIPS = 16
_RESULTS_RE = re.compile(r"^results_(?P<stamp>.+)\.json$")


@dataclass(frozen=True)
class Problem:
    """What is known of one problem: gold answer and MATH level/subject."""

    gold: str
    level: str | None = None
    subject: str | None = None


@dataclass(frozen=True)
class SystemPoint:
    """One budget of a system: per problem (by problem key) accuracy and tokens.

    ``policy_tokens``/``prompt_tokens`` are ``None`` when unknown (no local tokenizer).
    """

    n: int
    accuracy: Mapping[str, float]
    policy_tokens: Mapping[str, float] | None
    prompt_tokens: Mapping[str, float] | None
    prm_tokens: Mapping[str, float]
    run: str = ""


@dataclass(frozen=True)
class System:
    """One comparable system: a policy (+ PRM) with a strategy and selection, over budgets."""

    label: str
    source: str
    kind: str  # "sweep", "trace file", "lm-eval <model type>"
    task: str | None
    policy: str | None
    prm: str | None  # None when the system uses no PRM
    strategy: str
    points: tuple[SystemPoint, ...]
    problems: Mapping[str, Problem]
    selection: str | None = None
    settings: str = ""
    recorded_params: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    result: str = ""  # the RESULT it was read from, as given (what --policy/--label name)


# --------------------------------------------------------------------------- loading


def _problem_key(record: Mapping[str, Any], fallback: str) -> str:
    doc = record.get("doc") or {}
    uid = doc.get("unique_id")
    return str(uid) if uid not in (None, "") else fallback


def _problem(doc: Mapping[str, Any], where: str) -> Problem:
    if "answer" not in doc:
        raise DataError(f"{where}: a logged document has no gold answer (doc.answer)")
    level, subject = doc.get("level"), doc.get("subject")
    return Problem(
        str(doc["answer"]),
        None if level is None else str(level),
        None if subject is None else str(subject),
    )


def uses_prm(curve: str) -> bool:
    """Whether a curve selects with the PRM (unknown strategies are assumed to); a curve named
    with its strategy's own settings (``particle_gibbs (pg_iterations=4)``) is its strategy's."""
    if curve in prm_free_curves():
        return False
    name = curve.split(" (", 1)[0]
    return True if name not in strategy_names() else get_spec(name).needs_prm


def _one_request(strategy: str) -> bool:
    """Whether a run samples every candidate from one request per problem (its prompt is
    processed once; the strategy's spec says)."""
    return strategy in strategy_names() and get_spec(strategy).one_request


def _uncached(cost: Any) -> float:
    return float(max(cost.prompt_tokens - (cost.cached_prompt_tokens or 0), 0))


def _curve_name(curve: str, selection: str | None) -> str:
    """``best_of_n (weighted)``; ``particle_gibbs (pg_iterations=4, weighted)`` for a curve that
    already names settings."""
    if not selection or not uses_prm(curve):
        return curve
    if curve.endswith(")") and " (" in curve:
        return f"{curve[:-1]}, {selection})"
    return f"{curve} ({selection})"


def trace_systems(
    results: Results,
    *,
    spec: AnswerSpec | None = None,
    is_correct: Callable[[str, str], bool] | None = None,
    settings: EstimateSettings | None = None,
    kind: str = "sweep",
) -> list[System]:
    """The systems of loaded trace results: one per settings group and curve (module docstring)."""
    from tts_eval.traces import result_from_record
    from tts_eval.workflow.report import estimate_results
    from tts_eval.workflow.results import run_settings, settings_groups

    uid_to_key: dict[str, str] = {}
    problems: dict[str, Problem] = {}
    costs: dict[str, dict[str, Any]] = {}
    for key, records in results.runs.items():
        for record in records:
            uid = str(record["uid"])
            pkey = uid_to_key.setdefault(uid, _problem_key(record, uid))
            problems.setdefault(pkey, _problem(record.get("doc") or {}, results.source))
            costs.setdefault(key, {})[uid] = result_from_record(record).cost
    systems = []
    for group in settings_groups(results):
        estimates = estimate_results(results, spec, is_correct, settings, group=group.digest)
        curves: dict[str, list[Any]] = {}
        ordered = sorted(
            estimates.points.items(), key=lambda kv: (curve_sort_key(kv[0][0]), kv[0][1])
        )
        for (curve, _n), point in ordered:
            if curve not in ORACLE_CURVES and point.accuracy:  # no problem served: no point
                curves.setdefault(curve, []).append(point)
        for curve, points in curves.items():
            selection = run_settings(results, points[-1].run_key).get("selection")
            prm = results.prm if uses_prm(curve) else None
            out_points = [_system_point(p, costs[p.run_key], uid_to_key) for p in points]
            used = {k for p in out_points for k in p.accuracy}
            systems.append(
                System(
                    label=_label(results.policy, prm, curve, selection, group.label, results),
                    source=results.source,
                    kind=kind,
                    task=results.task,
                    policy=results.policy,
                    prm=prm,
                    strategy=curve,
                    points=tuple(out_points),
                    problems={k: problems[k] for k in used},
                    selection=selection if uses_prm(curve) else None,
                    settings=group.label,
                )
            )
    return systems


def _system_point(
    point: Any, run_costs: Mapping[str, Any], uid_to_key: Mapping[str, str]
) -> SystemPoint:
    """A curve point of ``tts_eval.workflow.estimate`` keyed by problem, with the uncached prompt
    tokens of its run: whole for one-request sampling runs, else scaled by n/N like the rest."""
    scale = 1.0 if _one_request(point.run_strategy) else point.n / point.run_n
    uids = list(point.accuracy)
    return SystemPoint(
        n=point.n,
        accuracy={uid_to_key[u]: point.accuracy[u] for u in uids},
        policy_tokens={uid_to_key[u]: point.policy_tokens[u] for u in uids},
        prompt_tokens={uid_to_key[u]: _uncached(run_costs[u]) * scale for u in uids},
        prm_tokens={uid_to_key[u]: point.prm_tokens[u] for u in uids},
        run=point.run_key,
    )


def _label(
    policy: str | None,
    prm: str | None,
    curve: str,
    selection: str | None,
    group: str,
    results: Results,
) -> str:
    who = short_name(policy) or Path(results.source).stem
    if prm:
        who += f" + {short_name(prm)}"
    text = f"{who}: {_curve_name(curve, selection)}"
    return f"{text} [{group}]" if group else text


def _model_args(config: Mapping[str, Any]) -> dict[str, Any]:
    args = config.get("model_args") or {}
    if isinstance(args, str):
        from tts_eval.model_args import split_arg_string

        try:
            return dict(split_arg_string(args))
        except ValueError:
            return {}
    return dict(args) if isinstance(args, Mapping) else {}


def _read_samples(path: Path) -> list[dict[str, Any]]:
    from tts_eval.traces import read_jsonl

    rows = list(read_jsonl(path))
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("doc"), dict) or "doc_id" not in row:
            raise DataError(f"{path}: line {i + 1} is not an lm-eval logged sample")
        score = row.get("exact_match", 0.0)
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise DataError(f"{path}: line {i + 1} has exact_match {score!r}, not a number")
    return rows


def _count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _sample_tokens(tokenizer: Any, sample: Mapping[str, Any]) -> tuple[float, float]:
    """(generated, prompt) tokens of one logged lm-eval sample: its responses (``resps``) and
    the prompt text of its requests (``arguments``, the chat already rendered)."""
    responses = (sample.get("resps") or [[]])[0]
    prompts = [
        str(arg.get("arg_0", ""))
        for arg in (sample.get("arguments") or {}).values()
        if isinstance(arg, Mapping)
    ]
    return (
        float(sum(_count_tokens(tokenizer, str(r)) for r in responses)),
        float(sum(_count_tokens(tokenizer, p) for p in prompts)),
    )


def _lm_eval_tts_system(
    samples: Sequence[Mapping[str, Any]],
    task: str,
    models: tuple[str | None, str | None],
    where: str,
    **estimate: Any,
) -> list[System]:
    """A ``--model tts`` run's logged traces, read as a trace file."""
    from tts_eval.workflow.results import settings_key

    runs: dict[str, list[dict[str, Any]]] = {}
    for sample in samples:
        trace = sample.get("tts_trace")
        if not isinstance(trace, Mapping):
            raise DataError(f"{where}: a sample of this --model tts run has no tts_trace")
        record = {**trace, "task": task, "doc": sample["doc"]}
        runs.setdefault(settings_key(record), []).append(record)
    results = Results(task, runs, models[0], models[1], where)
    return trace_systems(results, kind="lm-eval tts", **estimate)


def _check_sample_count(data: Mapping[str, Any], task: str, count: int, where: Path) -> None:
    """One-line error when the samples file holds fewer or more problems than lm-eval scored."""
    expected = ((data.get("n-samples") or {}).get(task) or {}).get("effective")
    if isinstance(expected, int) and expected != count:
        raise DataError(
            f"{where} logs {count} problems but lm-eval scored {expected} (n-samples of its "
            "results file): the samples are incomplete; re-run lm-eval with --log_samples"
        )


def lm_eval_systems(
    folder: str | os.PathLike,
    *,
    policy: str | None = None,
    prm: str | None = None,
    **estimate: Any,
) -> list[System]:
    """The systems of an lm-eval output folder (one per results file and task); ``policy`` and
    ``prm`` name its models when the run's ``model_args`` do not (or to override them)."""
    folder = Path(folder)
    found = sorted(folder.rglob("results_*.json"))
    if not found:
        raise DataError(f"{folder} holds no lm-eval results_*.json")
    systems = []
    for path in found:
        match = _RESULTS_RE.match(path.name)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise DataError(f"{path} is not valid JSON") from None
        if not match or not isinstance(data, dict) or not isinstance(data.get("results"), dict):
            raise DataError(f"{path} is not an lm-eval results file (no 'results' table)")
        config = data.get("config") or {}
        args = _model_args(config)
        model_type = str(config.get("model") or "lm-eval")
        run_policy = policy or args.get("pretrained") or args.get("model") or data.get("model_name")
        for task in sorted(data["results"]):
            samples_path = path.parent / f"samples_{task}_{match['stamp']}.jsonl"
            if not samples_path.is_file():
                raise DataError(
                    f"{path} has no logged samples for task {task} ({samples_path.name}); "
                    "re-run lm-eval with --log_samples"
                )
            samples = _read_samples(samples_path)
            _check_sample_count(data, task, len({s["doc_id"] for s in samples}), samples_path)
            if model_type == "tts" or any("tts_trace" in s for s in samples):
                models = (run_policy, prm or args.get("prm"))
                systems += _lm_eval_tts_system(
                    samples, task, models, os.fspath(samples_path), **estimate
                )
                continue
            systems.append(
                _plain_system(samples, task, run_policy, model_type, args, data, samples_path)
            )
    return systems


def _plain_system(
    samples: Sequence[Mapping[str, Any]],
    task: str,
    policy: str | None,
    model_type: str,
    args: Mapping[str, Any],
    data: Mapping[str, Any],
    where: Path,
) -> System:
    from tts_eval.params import load_tokenizer

    tokenizer_name = args.get("tokenizer") or policy
    tokenizer = load_tokenizer(str(tokenizer_name)) if tokenizer_name else None
    notes = []
    if tokenizer is None:
        notes.append(
            f"tokens unknown: no local tokenizer of {tokenizer_name or 'the model'} to count them"
        )
    else:
        notes.append(
            "every prompt token is charged as processed: lm-eval logs no prefix-cache hits "
            "(traces of tts-eval runs do)"
        )
    accuracy: dict[str, float] = {}
    generated: dict[str, float] = {}
    prompt: dict[str, float] = {}
    problems: dict[str, Problem] = {}
    for sample in samples:
        key = _problem_key(sample, f"{task}/{sample['doc_id']}")
        if key in accuracy:
            logger.warning("%s: problem %s is logged twice; keeping the first", where, key)
            continue
        if "exact_match" not in sample:
            raise DataError(f"{where}: samples have no exact_match metric; is this {task}?")
        problems[key] = _problem(sample["doc"], os.fspath(where))
        accuracy[key] = float(sample["exact_match"])
        if tokenizer is not None:
            generated[key], prompt[key] = _sample_tokens(tokenizer, sample)
    recorded = data.get("config", {}).get("model_num_parameters")
    point = SystemPoint(
        n=1,
        accuracy=accuracy,
        policy_tokens=generated if tokenizer is not None else None,
        prompt_tokens=prompt if tokenizer is not None else None,
        prm_tokens=dict.fromkeys(accuracy, 0.0),
        run=where.name,
    )
    return System(
        label=f"{short_name(policy) or where.parent.name}: CoT ({model_type})",
        source=os.fspath(where.parent),
        kind=f"lm-eval {model_type}",
        task=task,
        policy=policy,
        prm=None,
        strategy="CoT",
        points=(point,),
        problems=problems,
        recorded_params={policy: float(recorded)} if policy and recorded else {},
        notes=tuple(notes),
    )


def load_systems(
    path: str | os.PathLike,
    *,
    label: str | None = None,
    policy: str | None = None,
    prm: str | None = None,
    spec: AnswerSpec | None = None,
    is_correct: Callable[[str, str], bool] | None = None,
    settings: EstimateSettings | None = None,
) -> list[System]:
    """The systems of one RESULT (module docstring). ``label`` names them (a prefix when there
    are several); ``policy``/``prm`` name the models of results that do not (a trace file)."""
    from tts_eval.workflow.results import MANIFEST, load_results

    p = Path(path)
    estimate = {"spec": spec, "is_correct": is_correct, "settings": settings}
    if p.is_dir() and (p / MANIFEST).is_file():
        results = load_results(p)
        systems = trace_systems(_named(results, policy, prm), kind="sweep", **estimate)
    elif p.is_dir() and any(p.rglob("results_*.json")):
        systems = lm_eval_systems(p, policy=policy, prm=prm, **estimate)
    elif p.is_dir():
        raise DataError(
            f"{path}: unknown folder layout; expected a sweep folder ({MANIFEST}), or an "
            "lm-eval output folder (results_*.json with samples_*.jsonl from --log_samples)"
        )
    elif p.is_file() and p.name.startswith("samples_"):
        raise DataError(
            f"{path} is an lm-eval samples file; give its folder (with the results_*.json)"
        )
    elif p.is_file():
        try:
            results = load_results(p)
        except UnicodeDecodeError:
            raise DataError(f"{path} is not a JSONL trace file (not text)") from None
        systems = trace_systems(_named(results, policy, prm), kind="trace file", **estimate)
    else:
        raise DataError(f"results {path}: no such folder or file")
    if not systems:
        raise DataError(f"results {path} hold no systems to compare (no records yet)")
    systems = [replace(s, result=os.fspath(path)) for s in systems]
    if label:
        if len(systems) == 1:
            systems = [_relabel(systems[0], label)]
        else:
            systems = [_relabel(s, f"{label}: {s.label.split(': ', 1)[-1]}") for s in systems]
    return systems


def _named(results: Results, policy: str | None, prm: str | None) -> Results:
    if policy is None and prm is None:
        return results
    return Results(
        results.task,
        results.runs,
        policy or results.policy,
        prm or results.prm,
        results.source,
        results.manifest,
    )


def _relabel(system: System, label: str) -> System:
    return replace(system, label=label)


def unique_labels(systems: Sequence[System]) -> list[System]:
    """Systems with distinct labels: a repeated label gets its source's name appended, and where
    that is not enough (two lm-eval runs in one folder) its run too (the samples file, with its
    time stamp); refused (one line) when even that is not enough."""
    out = _suffix_repeated(systems, lambda s: Path(s.source).name)
    out = _suffix_repeated(out, lambda s: Path(s.points[0].run).stem if s.points else "")
    seen: set[str] = set()
    for s in out:
        if s.label in seen:
            raise DataError(
                f"two systems are labelled {s.label!r}; name them with --label PATH=NAME"
            )
        seen.add(s.label)
    return out


def _suffix_repeated(systems: Sequence[System], suffix: Callable[[System], str]) -> list[System]:
    """``suffix`` appended to the labels that repeat, where it tells them apart."""
    suffixes: dict[str, list[str]] = {}
    for s in systems:
        suffixes.setdefault(s.label, []).append(suffix(s))
    return [
        _relabel(s, f"{s.label} [{suffix(s)}]")
        if len(set(suffixes[s.label])) > 1 and suffix(s)
        else s
        for s in systems
    ]


# --------------------------------------------------------------------------- checks, parameters


def check_comparable(systems: Sequence[System]) -> str | None:
    """The shared task of ``systems``; one-line error for mixed tasks, for problems with other
    gold answers in another system, and for two systems with no problem in common."""
    tasks = {s.task for s in systems if s.task is not None}
    if len(tasks) > 1:
        shown = ", ".join(f"{s.label} ({s.task})" for s in systems)
        raise DataError(f"cannot compare results of different tasks: {shown}")
    golds: dict[str, tuple[str, str]] = {}
    for system in systems:
        for key, problem in system.problems.items():
            seen = golds.setdefault(key, (problem.gold, system.label))
            if seen[0] != problem.gold:
                raise DataError(
                    f"{seen[1]} and {system.label} are on different problem sets: problem {key} "
                    f"has gold answer {seen[0]!r} in one and {problem.gold!r} in the other"
                )
    for i, first in enumerate(systems):
        for second in systems[i + 1 :]:
            if not set(first.problems) & set(second.problems):
                raise DataError(
                    f"{first.label} and {second.label} share no problem: results on different "
                    "problem sets cannot be compared"
                )
    return next(iter(tasks), None)


def models_of(systems: Sequence[System]) -> list[str]:
    """Every model whose parameter count the leaderboard needs, in order of appearance."""
    out: list[str] = []
    for system in systems:
        for model in (system.policy, system.prm):
            if model and model not in out:
                out.append(model)
    return out


def resolve_params(
    systems: Sequence[System], given: Mapping[str, float] | None = None
) -> dict[str, ParamCount]:
    """Parameter counts of every model of ``systems``; one-line error naming the first missing,
    or a ``given`` name that is none of the models (a typo would otherwise be ignored)."""
    recorded: dict[str, float] = {}
    for system in systems:
        recorded.update(system.recorded_params)
    out = {}
    for system in systems:
        result = system.result or system.source
        if system.policy is None:
            raise DataError(
                f"{result} does not name its policy model; give --policy "
                f"{result}=MODEL (and --prm {result}=MODEL if it used one)"
            )
        if system.prm is None and any(v for p in system.points for v in p.prm_tokens.values()):
            raise DataError(
                f"{system.label} scored with a PRM but {result} does not name it; give --prm "
                f"{result}=MODEL"
            )
    models = models_of(systems)
    names = {name for model in models for name in (model, short_name(model))}
    for name in given or {}:
        if name not in names:
            raise DataError(
                f"--params {name}=... names no model of these results; accepted: "
                + ", ".join(short_name(m) for m in models)
            )
    for model in models:
        count = parameter_count(model, given, recorded.get(model))
        if count is None:
            raise DataError(
                f"no parameter count for model {model}: it is not on disk (no safetensors or "
                f"config.json); give it with --params {short_name(model)}=COUNT"
            )
        out[model] = count
    return out


# --------------------------------------------------------------------------- statistics


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


# --------------------------------------------------------------------------- rendering


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
