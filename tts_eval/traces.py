"""Search traces as JSON records, and the JSONL files that hold them.

One record per (problem, strategy run): the :class:`~tts_eval.types.SearchResult` (every candidate,
its steps, step scores, finish reason, answer; the selection; the cost) plus what is known of the
problem (task, doc id, gold answer, level, subject). Records round-trip:
``result_from_record(result_record(r)) == r``.

Record versions (``version``): 3 adds ``cost["flops"]`` (FLOPs of the search, null when unknown;
:class:`~tts_eval.types.Cost`). 2 adds ``settings["diagnostics"]`` (``steps_without_delimiter``,
``no_finished_candidate``, ``empty_response``; see :mod:`tts_eval.search.diagnostics`) and, for
``compute_optimal``, ``settings["requested_settings"]`` and ``settings["probe_skipped"]``.
Older records are read as they are: version 1 and 2 ones have no FLOPs (``flops`` None), version 1
ones no diagnostics (readers recompute them from the candidates:
:func:`tts_eval.search.diagnostics.diagnostics_of`); a newer version is refused (one line).

Appends are whole lines written with one ``write`` of an ``O_APPEND`` file followed by ``fsync``, so
an interrupted run leaves complete records (a torn last line, if any, is skipped on reading with a
warning).

What this module does not do: grade, vote or aggregate (see ``tts_eval.workflow.report``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tts_eval.errors import DataError
from tts_eval.files import output_error
from tts_eval.types import Candidate, Cost, FinishReason, SearchResult

logger = logging.getLogger(__name__)

RECORD_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
_DOC_FIELDS = ("unique_id", "answer", "level", "subject")


def result_record(
    result: SearchResult,
    *,
    task: str | None = None,
    doc: Mapping[str, Any] | None = None,
    token_ids: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """JSON-ready record of one search result (``extra`` keys are stored as given).

    ``token_ids=False`` leaves the candidates' token ids out (they dominate the size of a record).
    """
    record: dict[str, Any] = {
        "version": RECORD_VERSION,
        "task": task,
        "uid": result.uid,
        "strategy": result.strategy,
        "selected": result.selected,
        "settings": dict(result.settings),
        "cost": asdict(result.cost),
        "candidates": [
            {
                "steps": list(c.steps),
                "step_scores": list(c.step_scores),
                "finish_reason": c.finish_reason.value,
                "finished": c.finished,
                "token_ids": list(c.token_ids) if token_ids else [],
                "answer": c.answer,
                "group": c.group,
            }
            for c in result.candidates
        ],
    }
    if doc is not None:
        record["doc"] = {k: doc[k] for k in _DOC_FIELDS if k in doc}
    record.update(extra)
    return record


def result_from_record(record: Mapping[str, Any]) -> SearchResult:
    """Inverse of :func:`result_record` (reads every version in :data:`READABLE_VERSIONS`)."""
    version = record.get("version", 1)
    if version not in READABLE_VERSIONS:
        raise DataError(
            f"trace record {record.get('uid')} has version {version!r}; this tts-eval reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))} (upgrade tts-eval)"
        )
    candidates = tuple(
        Candidate(
            steps=tuple(c["steps"]),
            step_scores=tuple(float(s) for s in c["step_scores"]),
            finish_reason=FinishReason(c["finish_reason"]),
            finished=bool(c["finished"]),
            token_ids=tuple(c.get("token_ids", ())),
            answer=c.get("answer"),
            group=int(c.get("group", 0)),
        )
        for c in record["candidates"]
    )
    return SearchResult(
        uid=record["uid"],
        strategy=record["strategy"],
        candidates=candidates,
        selected=record["selected"],
        cost=Cost(**record["cost"]),
        settings=dict(record.get("settings", {})),
    )


def append_jsonl(
    path: str | os.PathLike, records: Iterable[Mapping[str, Any]], *, option: str = ""
) -> None:
    """Append records as JSON lines; each record is one write, then the file is fsynced. A
    failure (a full disk, a folder that is not writable) is a one-line
    :class:`~tts_eval.errors.OutputError` naming the file and what to do (free space, or choose
    another ``option``, the option that chose the file); a torn last line it may
    leave is skipped by :func:`read_jsonl` (and cut off by a resumed sweep)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise output_error("write", path, exc, option) from exc
    try:
        for record in records:
            data = memoryview((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            while data:  # a short write (a disk filling up) is continued, or raises
                data = data[os.write(fd, data) :]
        os.fsync(fd)
    except OSError as exc:
        raise output_error("write", path, exc, option) from exc
    finally:
        os.close(fd)


def read_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield the complete records of a JSONL file; a torn final line is skipped with a warning."""
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1 and not line.endswith("\n"):
                logger.warning("%s: skipping an incomplete last line (interrupted write)", path)
                continue
            raise DataError(f"{path}: line {i + 1} is not valid JSON") from None
