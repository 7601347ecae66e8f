"""Loading of ``tts-eval compare``: RESULTs (sweep folders, trace files, lm-eval output folders)
as :class:`System` objects, one per settings group and curve or per lm-eval results file, with
per-problem accuracy and tokens at each budget (see :mod:`tts_eval.workflow.compare`); the checks
that they are comparable and the parameter counts of their models.

What this module does not do: statistics or the leaderboard (``stats``), rendering (``render``).
"""

from __future__ import annotations

import json
import logging
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
from tts_eval.workflow.estimate import EstimateSettings, curve_sort_key, prm_free_curves
from tts_eval.workflow.results import Results

logger = logging.getLogger(__name__)

# Curves left out of comparisons: coverage is an oracle, not a system.
ORACLE_CURVES = ("pass@n",)
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
