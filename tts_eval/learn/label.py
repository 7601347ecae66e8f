"""``tts-eval label``: step labels for a task's problems from the policy's own solutions, resumably.

:func:`run_labelling` loads an lm-eval task (its documents, the prompt each gets, its gold answer)
and the policy engine that ``model_args`` describe (the same keys as ``--model tts``; sampling,
``max_tokens``, ``step_delimiter``, ``num_iterations``, ``answer``, ``system_prompt``), then labels
the problems chunk by chunk with :func:`tts_eval.learn.rollouts.label_problems`. Prompts are the
ones an evaluation of the task sends (lm-eval's zero-shot context, split into chat turns and
rendered with the policy's chat template exactly as ``--model tts`` does); the problem text the
data set records is what a PRM sees in a search (the last user turn).

The output folder holds:

- ``manifest.json``: what identifies the labels (task, policy and engine, every labelling
  setting, the seed, the answer format, the task's step checker: a digest of its file) and running
  statistics (problems, steps, label shares by source, tokens, prefix-cache share, wall time);
- ``records.jsonl``: one line per problem, appended (and fsynced) after each chunk, so a killed
  job loses at most the chunk in flight; re-run, it labels only what is missing (a torn last line
  is cut off first), and labels do not depend on the chunking (seeds per problem);
- ``dataset/``: the TRL stepwise data set of every recorded problem (``datasets.save_to_disk``,
  Arrow; :mod:`tts_eval.learn.data`), rebuilt at the end of each run, the manifest in its
  description.

Re-running into a folder labelled with other settings is refused in one line naming the setting
(``--limit`` is not one: a larger limit adds problems). A task's documents must have gold answers
(``doc_to_target``); a task may offer an exact step checker, a ``check_step(doc, step) -> bool |
None`` function in the module of its hooks (``tasks/arith/utils.py`` has one), which
``--no-checker`` leaves out.

What this module does not do: sample or label (``rollouts``), train (``train``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tts_eval.config import TTSConfig
from tts_eval.errors import DataError
from tts_eval.files import write_atomic
from tts_eval.learn.data import DATASET_DIR, MANIFEST, save_dataset
from tts_eval.learn.rollouts import (
    LabelProblem,
    LabelSettings,
    ProblemLabels,
    StepChecker,
    combine_labels,
    label_problems,
)
from tts_eval.model_args import parse_model_args
from tts_eval.workflow.results import repair_tail, write_json_atomic

logger = logging.getLogger(__name__)

FORMAT = "tts-eval/step-labels"
VERSION = 1
RECORDS = "records.jsonl"
# Engine settings that never change what is sampled (placement, sizes, where a server is).
_PLACEMENT_KEYS = (
    "device",
    "batch_size",
    "gpu_memory_utilization",
    "tensor_parallel_size",
    "enforce_eager",
    "block_size",
    "base_url",
    "api_key",
    "max_concurrency",
    "timeout_s",
    "max_retries",
    "deterministic",
)


@dataclass(frozen=True)
class LabelJob:
    """One labelling job: the task, the run's settings and the labelling settings."""

    task: str
    config: TTSConfig
    settings: LabelSettings
    output_dir: str
    include_path: str | None = None
    limit: int | None = None
    chunk_size: int = 16
    use_checker: bool = True
    relabel: bool = False

    def __post_init__(self) -> None:
        if self.config.prm is not None:
            raise DataError(
                "model_args prm is not used by tts-eval label; accepted: the policy's keys "
                "(pretrained, backend, sampling, max_tokens, step_delimiter, answer, ...)"
            )
        if self.limit is not None and (isinstance(self.limit, bool) or self.limit < 1):
            raise DataError(f"--limit {self.limit} is invalid; accepted: an integer >= 1")
        if self.chunk_size < 1:
            raise DataError(f"--chunk {self.chunk_size} is invalid; accepted: an integer >= 1")

    def identity(self) -> dict[str, Any]:
        """Everything that decides what the records hold (not ``limit``, not placement)."""
        engine = {
            k: v
            for k, v in dataclasses.asdict(self.config.engine).items()
            if k not in _PLACEMENT_KEYS
        }
        return {
            "task": self.task,
            "policy": engine,
            "answer": self.config.answer,
            "system_prompt": self.config.system_prompt,
            "settings": dataclasses.asdict(self.settings),
            "step_checker": self.use_checker,
        }


def job_from_args(
    task: str,
    model_args: str | Mapping[str, Any],
    output_dir: str,
    *,
    samples: int,
    rollouts: int,
    include_path: str | None = None,
    limit: int | None = None,
    chunk_size: int = 16,
    use_checker: bool = True,
    relabel: bool = False,
    task_max_tokens: int | None = None,
) -> LabelJob:
    """A :class:`LabelJob` from ``--model tts``-style ``model_args`` (checked before any load).

    ``task_max_tokens``: the task's ``max_gen_toks``, used when model_args set no ``max_tokens``
    (as an evaluation of the task would)."""
    config = parse_model_args(model_args)
    search = config.search
    max_tokens = search.max_tokens
    if config.max_tokens_from_task and task_max_tokens is not None:
        max_tokens = task_max_tokens
    settings = LabelSettings(
        samples=samples,
        rollouts=rollouts,
        temperature=search.temperature,
        top_p=search.top_p,
        max_tokens=max_tokens,
        seed=search.seed,
        step_delimiter=search.step_delimiter,
        num_iterations=search.num_iterations,
    )
    return LabelJob(
        task, config, settings, output_dir, include_path, limit, chunk_size, use_checker, relabel
    )


# --------------------------------------------------------------------------------------------
# the task
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskDoc:
    doc_id: int
    uid: str
    context: str
    gold: str
    doc: Mapping[str, Any]


def load_task(task_name: str, include_path: str | None = None) -> Any:
    """The lm-eval task object ``task_name`` (tts-eval's tasks and ``include_path`` first)."""
    from tts_eval import plugin

    plugin.register()
    from lm_eval.tasks import TaskManager

    include = [include_path] if include_path else None
    manager = TaskManager(include_path=include, include_defaults=False)
    if task_name not in manager.all_tasks:
        manager = TaskManager(include_path=include)
    if task_name not in manager.all_tasks:
        raise DataError(
            f"--task {task_name!r} is not a known lm-eval task; accepted: a task name "
            "(--include_path for a task folder of your own)"
        )
    tasks = manager.load([task_name])["tasks"]
    if list(tasks) != [task_name]:
        raise DataError(f"--task {task_name!r} is a group of {len(tasks)} tasks; name one task")
    task = tasks[task_name]
    if task.get_config("output_type") != "generate_until":
        raise DataError(
            f"--task {task_name!r} is a {task.get_config('output_type')} task; accepted: a "
            "generate_until task with gold answers"
        )
    return task


def task_docs(task: Any, task_name: str, limit: int | None) -> list[TaskDoc]:
    """The documents to label, with their zero-shot context and gold answer (one-line error when
    the task has no gold answers)."""
    docs = list(task.eval_docs)
    if limit is not None:
        docs = docs[:limit]
    out = []
    for doc_id, doc in enumerate(docs):
        gold = task.doc_to_target(doc)
        if isinstance(gold, list):
            gold = gold[0] if gold else None
        if gold is None or not str(gold).strip():
            raise DataError(
                f"--task {task_name!r} has no gold answer for doc {doc_id} (doc_to_target gave "
                f"{gold!r}); accepted: a task whose documents have gold answers"
            )
        context = task.fewshot_context(doc, 0)
        out.append(TaskDoc(doc_id, f"{task_name}/{doc_id}", str(context), str(gold).strip(), doc))
    return out


def task_checker(task: Any) -> Callable[[Mapping[str, Any], str], bool | None] | None:
    """The task's exact step checker: ``check_step`` in the module of its hook functions."""
    for key in ("doc_to_text", "process_results", "doc_to_target"):
        hook = task.get_config(key)
        namespace = getattr(hook, "__globals__", None)
        if callable(hook) and namespace is not None and callable(namespace.get("check_step")):
            return namespace["check_step"]
    return None


# what --relabel may change in a folder's identity: the checker, nothing that generated the records
CHECKER_KEYS = ("step_checker", "checker_source")


def checker_digest(checker: Callable[..., Any] | None) -> str | None:
    """What identifies a checker's verdicts: a digest of the file that defines it (a changed
    checker labels differently, so a folder labelled with another one is not resumed)."""
    if checker is None:
        return None
    try:
        source = Path(inspect.getsourcefile(checker) or "").read_bytes()
    except (TypeError, OSError):
        source = f"{checker.__module__}.{checker.__qualname__}".encode()
    return hashlib.sha256(source).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# the folder
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelSummary:
    output_dir: str
    done_before: int
    computed: int
    total: int
    stats: Mapping[str, Any]


def _check_folder(
    folder: Path, identity: Mapping[str, Any], ignore: Sequence[str] = ()
) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        if (folder / RECORDS).exists():
            raise DataError(f"--output_dir {folder} has {RECORDS} but no {MANIFEST}")
        return {"format": FORMAT, "version": VERSION, "identity": dict(identity), "stats": {}}
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DataError(f"--output_dir {folder}: {MANIFEST} is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(
            f"--output_dir {folder} holds something else than tts-eval labels; accepted: a new "
            "folder or one written by tts-eval label"
        )
    theirs = _with_defaults(json.loads(json.dumps(manifest.get("identity", {}), default=str)))
    mine = _with_defaults(json.loads(json.dumps(identity, default=str)))
    for name in sorted((set(theirs) | set(mine)) - set(ignore)):
        if theirs.get(name) != mine.get(name):
            detail = _first_difference(theirs.get(name), mine.get(name), name)
            raise DataError(
                f"--output_dir {folder} was labelled with other settings ({detail}); accepted: "
                "the same settings to resume, or another --output_dir"
            )
    return manifest


def _with_defaults(identity: dict[str, Any]) -> dict[str, Any]:
    """``identity`` with the policy's engine settings it lacks at their defaults, and placement
    keys dropped: a folder labelled before a setting existed (or was placement) still resumes."""
    from tts_eval.settings import EngineConfig

    policy = dict(identity.get("policy") or {})
    for f in dataclasses.fields(EngineConfig):
        if f.name in _PLACEMENT_KEYS:
            policy.pop(f.name, None)
        elif f.name not in policy and f.default is not dataclasses.MISSING:
            policy[f.name] = f.default
    return {**identity, "policy": policy}


def _first_difference(theirs: Any, mine: Any, name: str) -> str:
    if isinstance(theirs, dict) and isinstance(mine, dict):
        for key in sorted(set(theirs) | set(mine)):
            if theirs.get(key) != mine.get(key):
                return f"{name}.{key}: {theirs.get(key)!r} there, {mine.get(key)!r} now"
    return f"{name}: {theirs!r} there, {mine!r} now"


def read_records(path: Path) -> dict[int, dict[str, Any]]:
    """The recorded problems by doc id (a torn last line is cut off first)."""
    repair_tail(path)
    records: dict[int, dict[str, Any]] = {}
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    records[int(record["doc_id"])] = record
    return records


def _append(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def record_of(doc: TaskDoc, labels: ProblemLabels) -> dict[str, Any]:
    return {"doc_id": doc.doc_id, **dataclasses.asdict(labels)}


def relabel_record(record: Mapping[str, Any], checker: StepChecker | None) -> dict[str, Any]:
    """``record`` with its solutions' labels combined again (:func:`combine_labels`) from what
    it keeps (step texts, rollout shares, each solution's outcome) under ``checker``: the labels a
    new job with that checker gives (same seeds, same solutions), without generating anything."""
    solutions = []
    for solution in record.get("solutions", []):
        steps = solution["steps"]
        mc = {i: s["soft"] for i, s in enumerate(steps) if s["soft"] is not None}
        labels = combine_labels(
            tuple(s["text"] for s in steps),
            outcome=bool(solution["correct"]),
            mc=mc,
            checker=checker,
        )
        solutions.append({**solution, "steps": [dataclasses.asdict(x) for x in labels]})
    return {**record, "solutions": solutions} if "solutions" in record else dict(record)


def _relabel_folder(
    job: LabelJob,
    task: Any,
    checker: Callable[[Mapping[str, Any], str], bool | None] | None,
    records: dict[int, dict[str, Any]],
    records_path: Path,
    manifest: dict[str, Any],
    identity: Mapping[str, Any],
) -> None:
    """``--relabel``: every recorded problem labelled again with today's checker (the records
    rewritten whole, atomically), the manifest's identity moved to it."""
    docs = {d.doc_id: d for d in task_docs(task, job.task, max(records, default=-1) + 1)}
    for doc_id, record in records.items():
        bound = _bind(checker, docs[doc_id].doc) if checker is not None else None
        records[doc_id] = relabel_record(record, bound)
    lines = (json.dumps(records[i], ensure_ascii=False) + "\n" for i in sorted(records))
    write_atomic(records_path, "".join(lines), option="--output_dir")
    before = manifest["identity"].get("checker_source")
    manifest["identity"] = dict(identity)
    manifest.setdefault("relabelled", []).append(
        {"checker_source": [before, identity["checker_source"]], "problems": len(records)}
    )
    logger.info(
        "relabelled %d recorded problems with the task's checker %s (was %s), nothing generated",
        len(records),
        identity["checker_source"],
        before,
    )


def dataset_rows(records: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One stepwise row per labelled solution with at least one step, in doc order."""
    rows = []
    for doc_id in sorted(records):
        record = records[doc_id]
        for solution in record.get("solutions", []):
            steps = solution["steps"]
            if not steps:
                continue
            rows.append(
                {
                    "prompt": record["problem"],
                    "completions": [s["text"] for s in steps],
                    "labels": [bool(s["label"]) for s in steps],
                    "soft_labels": [s["soft"] for s in steps],
                    "label_sources": [s["source"] for s in steps],
                    "uid": record["uid"],
                    "solution": solution["index"],
                    "answer": solution["answer"],
                    "gold": record["gold"],
                    "correct": bool(solution["correct"]),
                }
            )
    return rows


def label_stats(records: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Counts over the records: problems, solutions and their accuracy, steps and positive share
    by source, generated and prompt tokens, and the prefix-cache share of rollout prompts."""
    sources: dict[str, list[int]] = {}
    solutions = correct = steps = 0
    cost: dict[str, int] = {}
    for record in records.values():
        for key, value in record.get("cost", {}).items():
            cost[key] = cost.get(key, 0) + int(value)
        for solution in record.get("solutions", []):
            solutions += 1
            correct += bool(solution["correct"])
            for step in solution["steps"]:
                steps += 1
                counts = sources.setdefault(step["source"], [0, 0])
                counts[0] += 1
                counts[1] += bool(step["label"])
    positives = sum(c[1] for c in sources.values())
    rollout_prompt = cost.get("rollout_prompt_tokens", 0)
    solution_prompt = cost.get("solution_prompt_tokens", 0)
    return {
        "problems": len(records),
        "solutions": solutions,
        "solution_accuracy": correct / solutions if solutions else None,
        "steps": steps,
        "positive_share": positives / steps if steps else None,
        "by_source": {
            name: {"steps": c[0], "positive_share": c[1] / c[0]}
            for name, c in sorted(sources.items())
        },
        **cost,
        "rollout_cache_share": (
            cost.get("rollout_cached_prompt_tokens", 0) / rollout_prompt if rollout_prompt else None
        ),
        "solution_cache_share": (
            cost.get("solution_cached_prompt_tokens", 0) / solution_prompt
            if solution_prompt
            else None
        ),
    }


# --------------------------------------------------------------------------------------------
# the job
# --------------------------------------------------------------------------------------------


def _problems(
    docs: Sequence[TaskDoc], engine: Any, config: TTSConfig
) -> tuple[list[LabelProblem], list[TaskDoc]]:
    from tts_eval.chats import context_to_messages, problem_text

    problems, kept = [], []
    limit = engine.max_model_len
    for doc in docs:
        messages = context_to_messages(doc.context, config.system_prompt)
        prompt = tuple(engine.render_prompt(messages))
        if limit is not None and len(prompt) >= limit:
            logger.warning(
                "doc %d: its prompt (%d tokens) leaves no room under max_model_len=%d; skipped",
                doc.doc_id,
                len(prompt),
                limit,
            )
            continue
        problems.append(LabelProblem(doc.uid, problem_text(messages), prompt, doc.gold))
        kept.append(doc)
    return problems, kept


def run_labelling(
    job: LabelJob,
    *,
    engine: Any | None = None,
    task: Any | None = None,
    progress: bool = True,
) -> LabelSummary:
    """Label what is missing in ``job.output_dir`` and rebuild its data set (see the module
    docstring). ``engine`` / ``task``: already loaded ones (tests, notebooks); else loaded here
    (the engine is then closed at the end, also on an interrupt)."""
    from tts_eval.grader import answer_spec

    answers = answer_spec(job.config.answer)
    task = task if task is not None else load_task(job.task, job.include_path)
    docs = task_docs(task, job.task, job.limit)
    checker = task_checker(task) if job.use_checker else None
    folder = Path(job.output_dir)
    identity = {**job.identity(), "checker_source": checker_digest(checker)}
    records_path = folder / RECORDS
    if job.relabel and not (folder / MANIFEST).is_file():
        raise DataError(
            f"--relabel: --output_dir {folder} has no recorded labels to label again; accepted: "
            "a folder tts-eval label wrote (without --relabel, a new folder is labelled)"
        )
    manifest = _check_folder(folder, identity, ignore=CHECKER_KEYS if job.relabel else ())
    records = read_records(records_path)
    if job.relabel:
        _relabel_folder(job, task, checker, records, records_path, manifest, identity)
    todo = [doc for doc in docs if doc.doc_id not in records]
    done_before = len(docs) - len(todo)
    logger.info(
        "%s: %d problems, %d recorded before, %d to label",
        job.task,
        len(docs),
        done_before,
        len(todo),
    )
    folder.mkdir(parents=True, exist_ok=True)
    manifest["checker_found"] = checker is not None
    write_json_atomic(folder / MANIFEST, manifest)

    own_engine = engine is None
    started = time.monotonic()
    try:
        if todo:
            if own_engine:
                from tts_eval.engines import load_engine

                engine = load_engine(job.config.engine)
            _label_chunks(job, todo, engine, answers, checker, records, records_path, progress)
    finally:
        if own_engine and engine is not None:
            engine.close()
        elapsed = time.monotonic() - started
        manifest["wall_time_s"] = manifest.get("wall_time_s", 0.0) + elapsed
        manifest["stats"] = label_stats(records)
        write_json_atomic(folder / MANIFEST, manifest)
    description = json.dumps({k: manifest[k] for k in ("format", "version", "identity")})
    save_dataset(dataset_rows(records), folder / DATASET_DIR, description)
    return LabelSummary(str(folder), done_before, len(todo), len(docs), manifest["stats"])


def _label_chunks(
    job: LabelJob,
    todo: Sequence[TaskDoc],
    engine: Any,
    answers: Any,
    checker: Callable[[Mapping[str, Any], str], bool | None] | None,
    records: dict[int, dict[str, Any]],
    records_path: Path,
    progress: bool,
) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="labelling", unit="problem", disable=not progress)
    try:
        for start in range(0, len(todo), job.chunk_size):
            chunk = todo[start : start + job.chunk_size]
            problems, kept = _problems(chunk, engine, job.config)
            checkers: dict[str, StepChecker] = {}
            if checker is not None:
                for doc in kept:
                    checkers[doc.uid] = _bind(checker, doc.doc)
            labelled = label_problems(problems, engine, answers, job.settings, checkers)
            new = [record_of(doc, labels) for doc, labels in zip(kept, labelled, strict=True)]
            new += [
                {"doc_id": doc.doc_id, "uid": doc.uid, "skipped": "prompt too long"}
                for doc in chunk
                if doc not in kept
            ]
            _append(records_path, new)
            for record in new:
                records[int(record["doc_id"])] = record
            bar.update(len(chunk))
    finally:
        bar.close()


def _bind(checker: Callable[[Mapping[str, Any], str], bool | None], doc: Mapping[str, Any]):
    return lambda step: checker(doc, step)
