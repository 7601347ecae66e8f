"""The on-disk layout of a sweep's results, and loading them back.

A results folder holds::

    sweep.json               manifest (below)
    runs/<run key>.jsonl     one trace record per document (tts_eval.traces.result_record + doc_id,
                             run_key), appended atomically as the sweep goes

The manifest (``format`` ``tts-eval/sweep``, ``version`` 3) names the ``task``, ``pretrained``,
``prm``, the folder's ``identity`` (everything but search settings that its runs must share: the
result identity of :func:`tts_eval.config.result_identity` without the search, plus
``apply_chat_template``; see :func:`tts_eval.workflow.plan.folder_identity`), the ``model_args``
of the latest sweep, its sweep settings as run (``sweep``: strategies, budgets, limit, ...) and what
its command line overrode in the recipe (``overrides``: ``model_args`` and ``sweep`` keys), and
the ``runs``: ``key``, ``strategy``, ``n``, ``search`` (the run's search
settings), ``settings_digest`` and the ``model_args`` it was swept with. Version 1 and 2 manifests
are read as well; a sweep into such a folder upgrades its manifest: version 2 run keys covered
fewer settings (not ``max_model_len``, the backend or ``prm_step_separator``), so each run that
recorded its ``model_args`` gets its current key (its records file renamed) and is resumed only
when those settings match; version 1 runs (no ``model_args``) are reported, never resumed.

:func:`load_results` also accepts a single JSONL trace file (e.g. written by ``--model tts`` with
``trace_path=``); its records are grouped into runs by their search settings.

Settings groups: runs whose shared search settings agree (the part of their result identity
that :func:`tts_eval.config.shared_search_settings` keeps: everything but ``strategy``, ``n`` and
the strategy's own options, which name the run's curve instead, except group options such as
``beam_width``; a run without one joins every group it agrees with otherwise) form one group
(:func:`settings_groups`), identified by :func:`settings_digest` and labelled with the settings
that differ between the groups of the results (e.g. ``temperature=0.5``); curves are estimated and
reported per group, so runs of other settings swept into the same folder are never mixed up with
(or hidden by) each other. (A results folder holds one identity apart from search settings, so
within a folder the search settings are all that can differ.)

What this module does not do: grade or aggregate (``tts_eval.workflow.report``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tts_eval.config import compatible, identity_digest, shared_search_settings
from tts_eval.errors import DataError
from tts_eval.files import write_atomic
from tts_eval.search import search_defaults
from tts_eval.search.config import later_defaults, shared_defaults

logger = logging.getLogger(__name__)

MANIFEST = "sweep.json"
RUNS_DIR = "runs"
MANIFEST_FORMAT = "tts-eval/sweep"
MANIFEST_VERSION = 3
READABLE_MANIFEST_VERSIONS = (1, 2, 3)


@dataclass(frozen=True)
class Results:
    """The records of a sweep (or trace file), by run key, deduplicated by document."""

    task: str | None
    runs: Mapping[str, list[dict[str, Any]]]
    policy: str | None = None
    prm: str | None = None
    source: str = ""
    manifest: Mapping[str, Any] = field(default_factory=dict)


def write_json_atomic(path: str | os.PathLike, data: Any, *, option: str = "") -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace``: never half-written, and
    no temporary file left behind on failure (:func:`tts_eval.files.write_atomic`; one-line
    :class:`~tts_eval.errors.OutputError`)."""
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", option=option)


def table_notes_path(table: str | os.PathLike) -> Path:
    """Where the notes of a fitted compute-optimal table live: ``<stem>.notes.json`` beside it."""
    path = Path(table)
    return path.with_name(f"{path.stem}.notes.json")


def read_table_notes(table: str | os.PathLike) -> list[str]:
    """The notes written beside a fitted table (``tts_eval.workflow.fit.write_table``), if any."""
    path = table_notes_path(table)
    if not path.is_file():
        return []
    try:
        notes = json.loads(path.read_text()).get("notes", [])
    except (json.JSONDecodeError, AttributeError):
        logger.warning("%s is not a notes file of a fitted table; ignored", path)
        return []
    return [str(note) for note in notes] if isinstance(notes, list) else []


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a results folder, or ``None`` when the folder has none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DataError(f"results folder {folder}: {MANIFEST} is not valid JSON") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise DataError(f"results folder {folder}: {MANIFEST} is not a tts-eval sweep manifest")
    if data.get("version", 1) not in READABLE_MANIFEST_VERSIONS:
        raise DataError(
            f"results folder {folder}: {MANIFEST} has version {data.get('version')!r}; this "
            f"tts-eval reads versions {', '.join(map(str, READABLE_MANIFEST_VERSIONS))} "
            "(upgrade tts-eval)"
        )
    return data


def repair_tail(path: str | os.PathLike) -> bool:
    """Cut a torn last line (an interrupted write) off a JSONL file; True when it cut something."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return False
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    logger.warning("%s: removed an incomplete last line left by an interrupted write", path)
    return True


def _dedupe(records: Sequence[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for record in records:
        uid = str(record.get("uid"))
        if uid in seen:
            logger.warning("%s: document %s appears twice; keeping the first record", where, uid)
            continue
        seen.add(uid)
        out.append(record)
    return out


def settings_key(record: Mapping[str, Any]) -> str:
    """A run key for a record without one: strategy, n and a digest of its search configuration.

    Only search settings count (:func:`tts_eval.search.search_keys`): per-problem entries of a
    result's settings (beam counts, routing, the worker that ran it, ...) never split a run.
    """
    later = later_defaults()
    settings = {
        k: v
        for k, v in _requested(record.get("settings") or {}).items()
        if k in search_defaults() and not (k in later and v == later[k])
    }
    payload = json.dumps([record.get("task"), settings], sort_keys=True, default=str)
    digest = hashlib.blake2b(payload.encode(), digest_size=5).hexdigest()
    return f"{record.get('strategy')}-n{settings.get('n')}-{digest}"


def _requested(settings: Mapping[str, Any]) -> Mapping[str, Any]:
    """The run's own settings: a compute_optimal result's settings are the routed search's, its
    run's are under ``requested_settings`` (trace records version 2)."""
    requested = settings.get("requested_settings")
    return requested if isinstance(requested, Mapping) else settings


def search_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A run's search settings from a result's (or manifest entry's) settings: only search keys;
    missing shared ones at their defaults, a strategy's options only where recorded."""
    given = _requested(settings)
    shared = shared_defaults()
    out = {name: given.get(name, default) for name, default in shared.items()}
    out.update({k: v for k, v in given.items() if k in search_defaults() and k not in shared})
    return out


def settings_digest(settings: Mapping[str, Any]) -> str:
    """The settings group of a run: a digest of its shared search settings
    (:func:`tts_eval.config.shared_search_settings`)."""
    return identity_digest(shared_search_settings(_requested(settings)), size=4)


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else str(value)


def differing_settings(groups: Sequence[Mapping[str, Any]]) -> list[str]:
    """The setting names whose values differ between the given search settings."""
    names = list(dict.fromkeys(k for g in groups for k in g))
    return [
        k
        for k in names
        if len({json.dumps(g.get(k), sort_keys=True, default=str) for g in groups}) > 1
    ]


def settings_label(settings: Mapping[str, Any], names: Sequence[str]) -> str:
    """``"temperature=0.5, top_p=0.9"``: the values of ``names`` in ``settings``."""
    return ", ".join(f"{k}={_shown(settings.get(k))}" for k in names)


@dataclass(frozen=True)
class SettingsGroup:
    """Runs sharing their search settings but strategy and n (see the module docstring)."""

    digest: str
    settings: Mapping[str, Any]
    runs: tuple[str, ...]
    label: str = ""


def run_settings(results: Results, key: str) -> dict[str, Any]:
    """A run's search settings: its manifest entry's ``search``, else its first record's."""
    for entry in results.manifest.get("runs", []):
        if entry.get("key") == key and isinstance(entry.get("search"), Mapping):
            return search_settings(entry["search"])
    records = results.runs.get(key) or [{}]
    return search_settings(records[0].get("settings") or {})


def settings_groups(results: Results) -> list[SettingsGroup]:
    """The settings groups of the runs that hold records (see the module docstring).

    A run whose shared settings lack a group option (a majority run has no beam width) joins
    every group it agrees with on the rest (:func:`tts_eval.config.compatible`), so one majority
    run serves sweeps at several beam widths; groups are founded by the runs with the most group
    options first, and listed in order of their founders' first appearance.
    """
    keys = [key for key, records in results.runs.items() if records]
    shared = {key: shared_search_settings(run_settings(results, key)) for key in keys}
    founders: list[str] = []
    members: dict[str, list[str]] = {}
    for key in sorted(keys, key=lambda k: -len(shared[k])):  # stable: appearance within a size
        joined = [f for f in founders if compatible(shared[f], shared[key])]
        for founder in joined:
            members[founder].append(key)
        if not joined:
            founders.append(key)
            members[key] = [key]
    founders.sort(key=keys.index)
    names = differing_settings([shared[f] for f in founders]) if len(founders) > 1 else []
    return [
        SettingsGroup(
            settings_digest(shared[f]),
            shared[f],
            tuple(sorted(members[f], key=keys.index)),
            settings_label(shared[f], names),
        )
        for f in founders
    ]


def describe_groups(groups: Sequence[SettingsGroup]) -> str:
    """``"3f2a1c9d: temperature=0.8; 9e8d7c6b: temperature=0.5"`` (one line)."""
    return "; ".join(f"{g.digest}: {g.label or 'default'}" for g in groups)


def _read_records(path: Path) -> list[dict[str, Any]]:
    from tts_eval.traces import read_jsonl

    records = list(read_jsonl(path))
    for i, record in enumerate(records):
        if not isinstance(record, dict) or "candidates" not in record or "uid" not in record:
            raise DataError(f"{path}: record {i + 1} is not a tts-eval trace record")
    return records


def load_results(path: str | os.PathLike, task: str | None = None) -> Results:
    """Load a results folder or a JSONL trace file; ``task`` (if given) must match its task."""
    p = Path(path)
    if p.is_dir():
        manifest = read_manifest(p)
        if manifest is None:
            raise DataError(
                f"results folder {path} has no {MANIFEST}; give a folder written by "
                "`tts-eval sweep` or a JSONL trace file"
            )
        runs: dict[str, list[dict[str, Any]]] = {}
        for entry in manifest.get("runs", []):
            run_file = p / RUNS_DIR / f"{entry['key']}.jsonl"
            if run_file.is_file():
                runs[entry["key"]] = _dedupe(_read_records(run_file), os.fspath(run_file))
        found_task = manifest.get("task")
        results = Results(
            found_task,
            runs,
            manifest.get("pretrained"),
            manifest.get("prm"),
            os.fspath(p),
            manifest,
        )
    elif p.is_file():
        grouped: dict[str, list[dict[str, Any]]] = {}
        for record in _read_records(p):
            key = record.get("run_key") or settings_key(record)
            grouped.setdefault(key, []).append(record)
        runs = {k: _dedupe(v, os.fspath(p)) for k, v in grouped.items()}
        tasks = sorted({str(r.get("task")) for rs in runs.values() for r in rs})
        if len(tasks) > 1:
            raise DataError(
                f"trace file {path} mixes tasks {', '.join(tasks)}; report one task at a time"
            )
        results = Results(tasks[0] if tasks else None, runs, source=os.fspath(p))
    else:
        raise DataError(f"results {path}: no such folder or file")
    for key, records in results.runs.items():
        for record in records:
            if record.get("task") not in (None, results.task):
                raise DataError(
                    f"results {path}: run {key} holds task {record.get('task')!r} records, "
                    f"but the results are for task {results.task!r}"
                )
    if task is not None and results.task is not None and results.task != task:
        raise DataError(
            f"results {path} are for task {results.task!r}, not {task!r}; "
            "point at a results folder of that task"
        )
    return results
