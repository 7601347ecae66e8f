"""``tts-eval sweep``: run strategies x budgets over a task through lm-eval, resumably.

:func:`run_sweep` plans the runs (:func:`tts_eval.workflow.plan.plan_runs`), opens ONE searcher
(:func:`tts_eval.runtime.open_searcher`: the policy and the PRM, in this process or on K Ray
workers with ``data_parallel_size=K``), and for each run evaluates the documents still to do through
``lm_eval.evaluator.evaluate`` (``samples={task: chunk}``) with a ``tts`` model that hands the
run's search settings to that searcher with every batch. The searcher is closed at the end. After each chunk (one search batch) its per-document trace records are
appended to ``runs/<run key>.jsonl`` (one ``write`` per record, then ``fsync``), so an interrupted
sweep loses at most the chunk in flight. Re-running the same recipe skips every (run key, doc id)
already recorded; a torn last line is cut off first. Progress bars show runs and documents.

The results folder's ``sweep.json`` (``tts_eval.workflow.results``) names the task, policy and PRM
and records the folder's identity (:func:`tts_eval.workflow.plan.folder_identity`). A recipe that
differs from it in anything but search settings (another task, policy, backend, dtype, context
length, chat template, PRM, PRM type or step separator, system prompt, answer format or
``apply_chat_template``: anything of :func:`tts_eval.config.result_identity`) is refused in one
line naming the setting and a folder to use instead (``<folder>-<digest of the new identity>``),
rather than mixed; placement (devices, batch sizes, a server's address) is not part of it, so a
re-run with other placement resumes every run. Runs of other search settings (e.g. ``temperature=0.5`` into a folder swept at 0.8)
are added beside the existing ones, with a warning: each run entry records its search settings,
their digest and its ``model_args``, the manifest's ``model_args`` become the latest sweep's, and
``tts-eval report`` shows each settings group as its own rows.

What this module does not do: grade or aggregate (``tts_eval.workflow.report``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tts_eval.config import compatible, shared_search_settings
from tts_eval.errors import DataError
from tts_eval.workflow.plan import (
    RunSpec,
    folder_digest,
    folder_identity,
    plan_runs,
    run_key,
)
from tts_eval.workflow.recipe import SweepRecipe
from tts_eval.workflow.results import (
    MANIFEST,
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    RUNS_DIR,
    differing_settings,
    read_manifest,
    repair_tail,
    search_settings,
    settings_digest,
    settings_label,
    write_json_atomic,
)

logger = logging.getLogger(__name__)

# The option that chooses the results folder (named when it cannot be written).
OUTPUT_OPTION = "--output_dir"


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
        raise DataError(
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
        raise DataError(
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


def _shown(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _refuse(folder: Path, name: str, theirs: Any, mine: Any, identity: dict[str, Any]) -> None:
    raise DataError(
        f"results folder {folder} holds a sweep with {name}={_shown(theirs)}, not "
        f"{name}={_shown(mine)}; only runs that differ in search settings can share a folder: "
        f"use sweep.output_dir={folder}-{folder_digest(identity)} (or --output_dir)"
    )


def _compare(folder: Path, recorded: dict[str, Any], identity: dict[str, Any]) -> None:
    """Refuse a folder whose recorded identity differs from ``identity`` in a key both have."""
    for name in dict.fromkeys([*identity, *recorded]):
        if name in recorded and name in identity and recorded[name] != identity[name]:
            _refuse(folder, name, recorded[name], identity[name], identity)


def _upgrade_runs(
    manifest: dict[str, Any], folder: Path, task: str, identity: dict[str, Any]
) -> list[tuple[str, str]]:
    """Give the runs of a version 1 or 2 folder their current keys (see
    ``tts_eval.workflow.results``): a run that recorded its ``model_args`` is keyed by its result
    identity now (its records file renamed) and must share the folder's identity; one that did
    not is left as it is (reported, never resumed). Returns the (old, new) keys whose records
    files are to be renamed once the upgraded manifest is written."""
    from tts_eval.workflow.recipe import run_config

    renames = []
    for entry in manifest.get("runs", []):
        args = entry.get("model_args")
        if not isinstance(args, dict):
            logger.warning(
                "results folder %s: run %s predates recorded settings; it is reported but not "
                "resumed (its documents are searched again under a new key)",
                folder,
                entry.get("key"),
            )
            continue
        config = run_config(args, entry["strategy"], entry["n"])
        theirs = folder_identity(task, config, identity["apply_chat_template"])
        _compare(folder, theirs, identity)
        key = run_key(task, config)
        if key != entry["key"]:
            logger.info("results folder %s: run %s is now keyed %s", folder, entry["key"], key)
            renames.append((entry["key"], key))
            entry["key"] = key
    return renames


def _rename_runs(folder: Path, renames: Sequence[tuple[str, str]]) -> None:
    for old_key, new_key in renames:
        old, new = (folder / RUNS_DIR / f"{k}.jsonl" for k in (old_key, new_key))
        if old.is_file() and not new.exists():
            old.rename(new)


def _check_manifest(
    folder: Path, recipe: SweepRecipe, identity: dict[str, Any]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The folder's manifest, checked against ``identity`` and brought up to date (see the module
    docstring; a new one for a new folder), and the records files to rename once it is written."""
    manifest = read_manifest(folder)
    if manifest is None:
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "task": recipe.sweep.task,
            "pretrained": identity["pretrained"],
            "prm": identity["prm"],
            "runs": [],
        }
    if manifest.get("task") != recipe.sweep.task:
        raise DataError(
            f"results folder {folder} holds a sweep of task {manifest.get('task')!r}, not "
            f"{recipe.sweep.task!r}; choose another sweep.output_dir"
        )
    recorded = manifest.get("identity")
    if not isinstance(recorded, dict):  # version 1: only the policy and the PRM were recorded
        recorded = {k: manifest.get(k) for k in ("pretrained", "prm")}
    _compare(folder, recorded, identity)
    renames = []
    if manifest.get("version", 1) < 3:
        renames = _upgrade_runs(manifest, folder, recipe.sweep.task, identity)
    manifest.update(
        version=MANIFEST_VERSION,
        identity=identity,
        model_args=dict(recipe.model_args),
        recipe=recipe.source,
        description=recipe.description,
    )
    return manifest, renames


def _add_runs(
    manifest: dict[str, Any],
    folder: Path,
    recipe: SweepRecipe,
    planned: Sequence[tuple[RunSpec, str, Any]],
) -> None:
    """Add the planned runs missing from the manifest; warn when their search settings are new."""
    entries = manifest["runs"]
    known = {entry["key"] for entry in entries}
    before = {
        settings_digest(entry["search"]): shared_search_settings(search_settings(entry["search"]))
        for entry in entries
        if isinstance(entry.get("search"), dict)
    }
    for run, key, config in planned:
        search = config.search.settings()
        for entry in entries:  # version 1 entries gain their settings digest
            if entry["key"] == key:
                entry.setdefault("settings_digest", settings_digest(search))
        if key in known:
            continue
        entries.append(
            {
                "key": key,
                "strategy": run.strategy,
                "n": run.n,
                "search": search,
                "settings_digest": settings_digest(search),
                "model_args": dict(recipe.model_args),
            }
        )
        known.add(key)
    if not planned or not before:
        return
    # The sweep's settings: those of its run with the most group options (a tree run's).
    mine = max(
        (shared_search_settings(config.search.settings()) for _, _, config in planned), key=len
    )
    if not any(compatible(mine, other) for other in before.values()):
        names = differing_settings([mine, *before.values()])
        logger.warning(
            "results folder %s already holds runs of other search settings (%s); the runs of "
            "%s are recorded beside them and reported as their own settings group",
            folder,
            " | ".join(settings_label(other, names) for other in before.values()),
            settings_label(mine, names),
        )


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
            append_jsonl(sink, records, option=OUTPUT_OPTION)
            return outputs

    return SweepLM(
        # max_tokens is the recipe's (recorded in the run's settings), never the task's max_gen_toks.
        config=dataclasses.replace(
            config, eager_load=False, trace_path=None, max_tokens_from_task=False
        ),
        searcher=searcher,
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

    from tts_eval.model_args import parse_model_args

    settings = recipe.sweep
    folder = Path(output_dir if output_dir is not None else settings.output_dir)
    runs: list[RunSpec] = plan_runs(recipe)
    configs = [parse_model_args(recipe.run_model_args(r.strategy, r.n)) for r in runs]
    keys = [run_key(settings.task, c) for c in configs]
    identity = folder_identity(settings.task, configs[0], settings.apply_chat_template)
    manifest, renames = _check_manifest(folder, recipe, identity)
    manager = _task_manager(settings)
    loaded = _load_task(settings, manager)
    doc_ids = _doc_ids(loaded["tasks"][settings.task], settings.limit)

    _add_runs(manifest, folder, recipe, list(zip(runs, keys, configs, strict=True)))
    manifest["limit"] = settings.limit
    # The latest sweep's settings as run, and what its command line overrode in the recipe.
    manifest["sweep"] = {**dataclasses.asdict(settings), "output_dir": os.fspath(folder)}
    manifest["overrides"] = dict(recipe.overrides)
    (folder / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / MANIFEST, manifest, option=OUTPUT_OPTION)
    _rename_runs(folder, renames)

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
