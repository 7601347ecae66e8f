"""``tts-eval sweep``: run strategies x budgets over a task through lm-eval, resumably.

:func:`run_sweep` plans the runs (:func:`tts_eval.workflow.plan.plan_runs`), opens ONE searcher
(:func:`tts_eval.runtime.open_searcher`: the policy and the PRM, in this process or on K Ray
workers with ``data_parallel_size=K``), and for each run evaluates the documents still to do through
``lm_eval.evaluator.evaluate`` (``samples={task: chunk}``) with a ``tts`` model that hands the
run's search settings to that searcher with every batch. The searcher is closed at the end. After each chunk (one search batch) its per-document trace records are
appended to ``runs/<run key>.jsonl`` (one ``write`` per record, then ``fsync``), so an interrupted
sweep loses at most the chunk in flight. Re-running the same recipe skips every (run key, doc id)
already recorded; a torn last line is cut off first. Progress bars show runs and documents.

The results folder's ``sweep.json`` names the task, policy and PRM; a folder written for another
task or model is refused (one line) rather than mixed.

What this module does not do: grade or aggregate (``tts_eval.workflow.report``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tts_eval.workflow.plan import RunSpec, plan_runs, run_key
from tts_eval.workflow.recipe import SweepRecipe
from tts_eval.workflow.results import (
    MANIFEST,
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    RUNS_DIR,
    read_manifest,
    repair_tail,
    write_json_atomic,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunProgress:
    """What one run of a sweep did."""

    key: str
    strategy: str
    n: int
    done_before: int
    computed: int
    total: int


@dataclass(frozen=True)
class SweepSummary:
    output_dir: str
    runs: tuple[RunProgress, ...]


def _load_task(settings, task_manager) -> dict:
    """``TaskManager.load`` of the one task, set up as ``simple_evaluate`` does (0-shot)."""
    loaded = task_manager.load([settings.task])
    tasks = loaded["tasks"]
    if list(tasks) != [settings.task]:
        raise ValueError(
            f"sweep.task={settings.task!r} is a group or tag of {len(tasks)} tasks; "
            "a sweep runs one task (name a single task)"
        )
    task = tasks[settings.task]
    if task.get_config("num_fewshot") is None:
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=1234)
    return loaded


def _task_manager(settings):
    """A TaskManager knowing ``settings.task``: tts-eval's and ``include_path``'s tasks first
    (indexing lm-eval's thousands of built-in YAMLs takes tens of seconds), then the built-ins."""
    from tts_eval import plugin

    plugin.register()
    from lm_eval.tasks import TaskManager

    include = [settings.include_path] if settings.include_path else None
    manager = TaskManager(include_path=include, include_defaults=False)
    if settings.task not in manager.all_tasks:
        manager = TaskManager(include_path=include)
    if settings.task not in manager.all_tasks:
        raise ValueError(
            f"sweep.task={settings.task!r} is not a known lm-eval task "
            "(set sweep.include_path for a task folder of your own)"
        )
    return manager


def _evaluate(model, loaded, task_name: str, chunk: list[int], chat: bool) -> None:
    """One lm-eval evaluation of the documents ``chunk`` (requests, generate_until, metrics).

    ``lm_eval.evaluator.evaluate`` rather than ``simple_evaluate``: the latter collects the
    environment (pip, GPU) on every call, seconds each, which a chunked sweep would pay per chunk.
    """
    from lm_eval.evaluator import evaluate

    evaluate(
        lm=model,
        task_dict=loaded,
        samples={task_name: chunk},
        bootstrap_iters=0,
        log_samples=False,
        apply_chat_template=chat,
        fewshot_as_multiturn=chat,
    )


def _doc_ids(task: Any, limit: int | None) -> list[int]:
    docs = task.eval_docs
    count = len(docs)
    return list(range(count if limit is None else min(limit, count)))


def _check_manifest(folder: Path, recipe: SweepRecipe, config: Any) -> dict[str, Any]:
    manifest = read_manifest(folder)
    policy = config.engine.pretrained
    prm = None if config.prm is None else config.prm.path
    if manifest is None:
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "task": recipe.sweep.task,
            "pretrained": policy,
            "prm": prm,
            "model_args": {k: v for k, v in recipe.model_args.items()},
            "recipe": recipe.source,
            "description": recipe.description,
            "runs": [],
        }
    if manifest.get("task") != recipe.sweep.task:
        raise ValueError(
            f"results folder {folder} holds a sweep of task {manifest.get('task')!r}, not "
            f"{recipe.sweep.task!r}; choose another sweep.output_dir"
        )
    for name, mine in (("pretrained", policy), ("prm", prm)):
        if manifest.get(name) != mine:
            raise ValueError(
                f"results folder {folder} holds a sweep with {name}={manifest.get(name)}, not "
                f"{name}={mine}; choose another sweep.output_dir"
            )
    return manifest


def _done_doc_ids(path: Path) -> set[int]:
    from tts_eval.traces import read_jsonl

    if not path.is_file():
        return set()
    repair_tail(path)
    return {int(r["doc_id"]) for r in read_jsonl(path) if "doc_id" in r}


def _sweep_model(config: Any, searcher: Any, sink: Path, key: str):
    """A ``tts`` lm-eval model searching with ``config`` on the open ``searcher``, recording to
    ``sink``.

    lm-eval numbers the documents selected with ``samples=`` 0, 1, ... in order, not by their
    index in the task; ``chunk_ids`` (the sorted chunk) maps them back, and the requests carry
    the true doc ids while the search runs, so problem uids (and the seeds derived from them) are
    those of a plain ``lm_eval --model tts`` run, whatever the chunking.
    """
    from tts_eval.lm_model import TTSLM
    from tts_eval.traces import append_jsonl, result_record

    class SweepLM(TTSLM):
        chunk_ids: list[int] = []

        def generate_until(self, requests, disable_tqdm: bool = False):
            positions = [req.doc_id for req in requests]
            try:
                for req in requests:
                    req.doc_id = self.chunk_ids[req.doc_id]
                outputs = super().generate_until(requests, disable_tqdm=True)
                records = [
                    result_record(
                        out.trace,
                        task=getattr(req, "task_name", None),
                        doc=getattr(req, "doc", None),
                        doc_id=req.doc_id,
                        run_key=key,
                    )
                    for req, out in zip(requests, outputs, strict=True)
                ]
            finally:
                for req, position in zip(requests, positions, strict=True):
                    req.doc_id = position
            append_jsonl(sink, records)
            return outputs

    return SweepLM(
        config=dataclasses.replace(config, eager_load=False, trace_path=None), searcher=searcher
    )


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_sweep(
    recipe: SweepRecipe,
    *,
    output_dir: str | os.PathLike | None = None,
    searcher_factory: Callable[[Any], Any] | None = None,
    progress: bool = True,
) -> SweepSummary:
    """Run (or resume) every planned run of ``recipe``; see the module docstring.

    ``searcher_factory(config)`` opens the :class:`tts_eval.runtime.Searcher` once for the whole
    sweep (every run shares its models); the default is :func:`tts_eval.runtime.open_searcher`.
    The sweep closes it when done.
    """
    from tqdm.auto import tqdm

    from tts_eval.settings import parse_model_args

    settings = recipe.sweep
    folder = Path(output_dir if output_dir is not None else settings.output_dir)
    runs: list[RunSpec] = plan_runs(recipe)
    configs = [parse_model_args(recipe.run_model_args(r.strategy, r.n)) for r in runs]
    keys = [run_key(settings.task, c) for c in configs]
    manifest = _check_manifest(folder, recipe, configs[0])
    manager = _task_manager(settings)
    loaded = _load_task(settings, manager)
    doc_ids = _doc_ids(loaded["tasks"][settings.task], settings.limit)

    known = {entry["key"] for entry in manifest["runs"]}
    for run, key, config in zip(runs, keys, configs, strict=True):
        if key not in known:
            manifest["runs"].append(
                {
                    "key": key,
                    "strategy": run.strategy,
                    "n": run.n,
                    "search": config.search.settings(),
                }
            )
    manifest["limit"] = settings.limit
    (folder / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / MANIFEST, manifest)

    todo_by_run = []
    for key in keys:
        done = _done_doc_ids(folder / RUNS_DIR / f"{key}.jsonl")
        todo_by_run.append([d for d in doc_ids if d not in done])
    if not any(todo_by_run):
        logger.info("sweep %s: every run is complete (%d documents)", folder, len(doc_ids))
        return SweepSummary(
            os.fspath(folder),
            tuple(
                RunProgress(k, r.strategy, r.n, len(doc_ids), 0, len(doc_ids))
                for r, k in zip(runs, keys, strict=True)
            ),
        )

    from tts_eval.runtime import open_searcher

    searcher = (searcher_factory or open_searcher)(configs[0])
    summary = []
    try:
        outer = tqdm(total=len(runs), desc="strategies", disable=not progress, position=0)
        for run, key, config, todo in zip(runs, keys, configs, todo_by_run, strict=True):
            outer.set_postfix_str(f"{run.strategy} n={run.n}")
            done_before = len(doc_ids) - len(todo)
            if todo:
                sink = folder / RUNS_DIR / f"{key}.jsonl"
                model = _sweep_model(config, searcher, sink, key)
                inner = tqdm(
                    total=len(doc_ids),
                    initial=done_before,
                    desc=f"problems [{run.strategy} n={run.n}]",
                    disable=not progress,
                    position=1,
                    leave=False,
                )
                for chunk in _chunks(todo, settings.chunk_size):
                    model.chunk_ids = sorted(chunk)
                    _evaluate(model, loaded, settings.task, chunk, settings.apply_chat_template)
                    inner.update(len(chunk))
                inner.close()
            logger.info(
                "sweep run %s: %d documents recorded before, %d computed now",
                key,
                done_before,
                len(todo),
            )
            summary.append(
                RunProgress(key, run.strategy, run.n, done_before, len(todo), len(doc_ids))
            )
            outer.update(1)
        outer.close()
    finally:
        searcher.close()
    return SweepSummary(os.fspath(folder), tuple(summary))
