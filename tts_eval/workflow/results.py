"""The on-disk layout of a sweep's results, and loading them back.

A results folder holds::

    sweep.json               manifest: task, policy, PRM, model_args, the runs (key, strategy, n)
    runs/<run key>.jsonl     one trace record per document (tts_eval.traces.result_record + doc_id,
                             run_key), appended atomically as the sweep goes

:func:`load_results` also accepts a single JSONL trace file (e.g. written by ``--model tts`` with
``trace_path=``); its records are grouped into runs by their search settings.

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

logger = logging.getLogger(__name__)

MANIFEST = "sweep.json"
RUNS_DIR = "runs"
MANIFEST_FORMAT = "tts-eval/sweep"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Results:
    """The records of a sweep (or trace file), by run key, deduplicated by document."""

    task: str | None
    runs: Mapping[str, list[dict[str, Any]]]
    policy: str | None = None
    prm: str | None = None
    source: str = ""
    manifest: Mapping[str, Any] = field(default_factory=dict)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a results folder, or ``None`` when the folder has none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ValueError(f"results folder {folder}: {MANIFEST} is not valid JSON") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"results folder {folder}: {MANIFEST} is not a tts-eval sweep manifest")
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

    Only :class:`~tts_eval.search.SearchConfig` fields count: per-problem entries of a result's
    settings (beam counts, routing, the worker that ran it, ...) never split a run.
    """
    import dataclasses

    from tts_eval.search import SearchConfig

    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    settings = {k: v for k, v in (record.get("settings") or {}).items() if k in fields}
    payload = json.dumps([record.get("task"), settings], sort_keys=True, default=str)
    digest = hashlib.blake2b(payload.encode(), digest_size=5).hexdigest()
    return f"{record.get('strategy')}-n{settings.get('n')}-{digest}"


def _read_records(path: Path) -> list[dict[str, Any]]:
    from tts_eval.traces import read_jsonl

    records = list(read_jsonl(path))
    for i, record in enumerate(records):
        if not isinstance(record, dict) or "candidates" not in record or "uid" not in record:
            raise ValueError(f"{path}: record {i + 1} is not a tts-eval trace record")
    return records


def load_results(path: str | os.PathLike, task: str | None = None) -> Results:
    """Load a results folder or a JSONL trace file; ``task`` (if given) must match its task."""
    p = Path(path)
    if p.is_dir():
        manifest = read_manifest(p)
        if manifest is None:
            raise ValueError(
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
            raise ValueError(
                f"trace file {path} mixes tasks {', '.join(tasks)}; report one task at a time"
            )
        results = Results(tasks[0] if tasks else None, runs, source=os.fspath(p))
    else:
        raise ValueError(f"results {path}: no such folder or file")
    for key, records in results.runs.items():
        for record in records:
            if record.get("task") not in (None, results.task):
                raise ValueError(
                    f"results {path}: run {key} holds task {record.get('task')!r} records, "
                    f"but the results are for task {results.task!r}"
                )
    if task is not None and results.task is not None and results.task != task:
        raise ValueError(
            f"results {path} are for task {results.task!r}, not {task!r}; "
            "point at a results folder of that task"
        )
    return results
