"""Hooks of the math500 task: data loading (hub or a local JSONL) and grading.

``load_math500`` reads ``$TTS_EVAL_MATH500`` (a JSONL file with the fields of
``HuggingFaceH4/MATH-500``) when set, otherwise the hub data set. ``process_results`` grades the
model's output with ``tts_eval.grader.grade``; when the output comes from the ``tts`` model it also
carries the search trace, from which the best-of-N style metrics are computed (see
``tts_eval.task_metrics``).

A local file is read and checked here, line by line, before any data set is built:
:func:`read_math500_rows` raises ONE-line ``ValueError``s naming the file, the line and the field
(an empty file, a line that is not JSON or not a JSON object, a missing required field, a field of
the wrong type or an empty ``problem``/``answer``); blank lines are skipped, extra fields are kept.
:func:`check_math500_file` runs the same checks without building anything, so a model can call it
at construction (before it loads anything) when ``TTS_EVAL_MATH500`` is set.

This file must stay importable on its own (lm-eval loads it from the task folder by path): only
the standard library at import time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ENV_VAR = "TTS_EVAL_MATH500"
HUB_ID = "HuggingFaceH4/MATH-500"
REQUIRED_FIELDS = ("problem", "solution", "answer", "subject", "level", "unique_id")
TEXT_FIELDS = ("problem", "solution", "answer", "subject", "unique_id")
NON_EMPTY_FIELDS = ("problem", "answer")


def _where(path: Path, line: int) -> str:
    return f"{ENV_VAR} file {path}, line {line}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), f"a JSON {'array' if isinstance(value, list) else 'object'}"
    )


def local_path(value: str | os.PathLike | None = None) -> Path | None:
    """The local MATH-500 file: ``value``, else ``$TTS_EVAL_MATH500``; ``None`` when neither is
    set. A path that is not a file is a one-line ``FileNotFoundError``."""
    raw = os.fspath(value) if value is not None else os.environ.get(ENV_VAR)
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{ENV_VAR}={raw} is not a file; point it at a MATH-500 JSONL "
            f"(fields {', '.join(REQUIRED_FIELDS)}) or unset it"
        )
    return path


def check_row(row: Any, path: Path, line: int, level_type: type | None = None) -> None:
    """Raise a one-line ``ValueError`` unless ``row`` (decoded from ``line``) is a MATH-500 row."""
    where = _where(path, line)
    if not isinstance(row, dict):
        raise ValueError(
            f"{where}: expected a JSON object with fields {', '.join(REQUIRED_FIELDS)}, "
            f"got {_kind(row)}"
        )
    missing = [name for name in REQUIRED_FIELDS if name not in row]
    if missing:
        names = ", ".join(repr(name) for name in missing)
        raise ValueError(
            f"{where}: field{'s' if len(missing) > 1 else ''} {names} "
            f"{'are' if len(missing) > 1 else 'is'} missing "
            f"(required: {', '.join(REQUIRED_FIELDS)})"
        )
    for name in TEXT_FIELDS:
        if not isinstance(row[name], str):
            raise ValueError(f"{where}: field '{name}' must be a string, got {_kind(row[name])}")
    for name in NON_EMPTY_FIELDS:
        if not row[name].strip():
            raise ValueError(f"{where}: field '{name}' is empty")
    level = row["level"]
    if isinstance(level, bool) or not isinstance(level, (int, str)):
        raise ValueError(
            f"{where}: field 'level' must be an integer (or a string), got {_kind(level)}"
        )
    if level_type is not None and type(level) is not level_type:
        raise ValueError(
            f"{where}: field 'level' is {_kind(level)} but {_kind(level_type())} on the first row; "
            "use one type for every row"
        )


def read_math500_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a MATH-500 JSONL file, checked (see the module docstring)."""
    path = Path(path)
    rows: list[dict[str, Any]] = []
    level_type: type | None = None
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"{_where(path, number)}: not UTF-8 text (byte {exc.start + 1})"
                ) from None
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{_where(path, number)}: not valid JSON ({exc.msg}, column {exc.colno}); "
                    "expected one JSON object per line"
                ) from None
            check_row(row, path, number, level_type)
            level_type = level_type or type(row["level"])
            rows.append(row)
    if not rows:
        raise ValueError(
            f"{_where(path, 1)}: the file has no rows; expected one JSON object per line with "
            f"fields {', '.join(REQUIRED_FIELDS)}"
        )
    return rows


def check_math500_file(path: str | os.PathLike | None = None) -> int | None:
    """Check the local MATH-500 file (``path``, else ``$TTS_EVAL_MATH500``) without building a data
    set; return its number of rows, or ``None`` when no local file is configured (the hub copy is
    used then). Errors are one line (see the module docstring)."""
    local = local_path(path)
    return None if local is None else len(read_math500_rows(local))


def load_math500(**kwargs):
    """Return a ``DatasetDict`` with a ``test`` split (kwargs from lm-eval's metadata are ignored)."""
    import datasets

    local = local_path()
    if local is not None:
        rows = read_math500_rows(local)
        names = dict.fromkeys(name for row in rows for name in row)  # every row's fields, in order
        columns = {name: [row.get(name) for row in rows] for name in names}
        return datasets.DatasetDict({"test": datasets.Dataset.from_dict(columns)})
    return datasets.load_dataset(HUB_ID)


def process_results(doc: dict, results: list) -> dict:
    from tts_eval.task_metrics import math_metrics

    return math_metrics(results[0], doc["answer"], task="math500")


def count_traces(items: list) -> int:
    """Aggregate of the ``tts_trace`` entries: how many search traces were logged."""
    return len(items)
