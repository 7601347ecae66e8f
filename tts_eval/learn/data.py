"""Step-supervision data sets: TRL's stepwise format and ProcessBench's, on disk and split by problem.

- **Stepwise** (TRL's ``PRMTrainer`` format, what ``tts-eval label`` writes): one row per solution,
  ``prompt`` (the problem as the PRM sees it), ``completions`` (its steps), ``labels`` (one bool
  per step). ``tts-eval label`` adds ``soft_labels`` (share of rollouts that reached the gold
  answer, null without rollouts), ``label_sources`` (``mc``, ``outcome`` or ``checker``), ``uid``
  (the problem), ``solution``, ``answer``, ``gold`` and ``correct``.
- **ProcessBench** (Zheng et al. 2024): ``problem``, ``steps``, ``label`` (index of the first wrong
  step, -1 when none is wrong).

:func:`load_steps` reads either from a ``tts-eval label`` output folder, a ``save_to_disk``
folder, a Parquet/JSON/JSONL/Arrow file, or a Hugging Face Hub id (when the hub is reachable), and
says which format it found; anything else is a one-line error naming the columns it has and the two
formats accepted. :func:`split_by_problem` assigns whole problems to the validation split by a
stable hash of the problem (its ``uid`` column, else its text), so no problem is on both sides.

What this module does not do: label (``tts_eval.learn.label``) or score (``evaluate``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tts_eval.errors import DataError, MissingFileError

STEPWISE = "stepwise"
PROCESSBENCH = "processbench"
FORMAT_COLUMNS = {
    STEPWISE: ("prompt", "completions", "labels"),
    PROCESSBENCH: ("problem", "steps", "label"),
}
ACCEPTED = (
    "TRL stepwise supervision (prompt, completions, labels) or ProcessBench (problem, steps, label)"
)
DATASET_DIR = "dataset"  # inside a tts-eval label output folder
MANIFEST = "manifest.json"
_FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}


class DataFormatError(DataError):
    """A data set is not in a format the command reads."""


@dataclass(frozen=True)
class StepData:
    """A loaded data set: its rows (a ``datasets.Dataset``), its format and where it came from."""

    rows: Any
    format: str
    source: str

    @property
    def problem_column(self) -> str:
        return "prompt" if self.format == STEPWISE else "problem"


def detect_format(columns: Sequence[str], source: str) -> str:
    """The format whose columns ``columns`` has, or a one-line :class:`DataFormatError`."""
    for name, needed in FORMAT_COLUMNS.items():
        if all(c in columns for c in needed):
            return name
    raise DataFormatError(f"data set {source} has columns {sorted(columns)}; accepted: {ACCEPTED}")


def _pick_split(data: Any, split: str | None, source: str) -> Any:
    import datasets

    if not isinstance(data, datasets.DatasetDict):
        return data
    names = list(data)
    if split is None:
        if len(names) == 1:
            return data[names[0]]
        split = "train" if "train" in names else None
    if split not in data:
        raise DataError(
            f"data set {source} has no split {split!r}; accepted: --split {' or '.join(names)}"
        )
    return data[split]


def load_steps(path: str | os.PathLike, split: str | None = None) -> StepData:
    """Read a step data set (see the module docstring)."""
    import datasets

    source = os.fspath(path)
    where = Path(source)
    if where.is_dir():
        if (where / MANIFEST).is_file() and (where / DATASET_DIR).is_dir():
            where = where / DATASET_DIR
        if not ((where / "dataset_info.json").is_file() or (where / "dataset_dict.json").is_file()):
            raise MissingFileError(
                f"data set {source} is a folder without a saved data set; accepted: a "
                "tts-eval label output folder, a datasets save_to_disk folder, or a "
                ".parquet/.jsonl/.json/.arrow file"
            )
        rows = _pick_split(datasets.load_from_disk(str(where)), split, source)
    elif where.is_file():
        builder = _FILE_BUILDERS.get(where.suffix.lower())
        if builder is None:
            raise DataFormatError(
                f"data set {source} is a {where.suffix or 'suffix-less'} file; accepted: "
                f"{', '.join(_FILE_BUILDERS)} files or a saved data set folder"
            )
        rows = datasets.load_dataset(builder, data_files=str(where), split="train")
    elif source.startswith(("/", ".")) or source.count("/") != 1:
        raise MissingFileError(f"data set {source} does not exist (no such file or folder)")
    else:
        try:
            rows = _pick_split(datasets.load_dataset(source), split, source)
        except Exception as err:  # noqa: BLE001 - one line naming the argument
            raise MissingFileError(
                f"data set {source} is not local and the hub did not serve it "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
            ) from err
    fmt = detect_format(rows.column_names, source)
    return StepData(rows, fmt, source)


def problem_key(row: dict[str, Any], fmt: str) -> str:
    """What identifies a row's problem: its ``uid`` when the data set has one, else its text."""
    if row.get("uid"):
        return str(row["uid"])
    return str(row["prompt" if fmt == STEPWISE else "problem"])


def in_validation(key: str, fraction: float, seed: int) -> bool:
    """Whether problem ``key`` is in the validation share ``fraction`` (stable, by hash)."""
    digest = hashlib.blake2b(json.dumps([seed, key]).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def split_by_problem(data: StepData, fraction: float, seed: int = 0) -> tuple[Any, Any]:
    """``(train, validation)`` rows: whole problems go to validation by :func:`in_validation`."""
    if not 0 <= fraction < 1:
        raise DataError(f"validation fraction {fraction} is invalid; accepted: 0 <= f < 1")
    flags = [in_validation(problem_key(row, data.format), fraction, seed) for row in data.rows]
    train = [i for i, v in enumerate(flags) if not v]
    val = [i for i, v in enumerate(flags) if v]
    return data.rows.select(train), data.rows.select(val)


def save_dataset(rows: list[dict[str, Any]], folder: Path, description: str) -> Any:
    """Write ``rows`` as a ``datasets`` data set to ``folder`` (Arrow, via ``save_to_disk``),
    replacing what was there only once the new one is complete."""
    import shutil

    import datasets

    data = datasets.Dataset.from_list(rows, info=datasets.DatasetInfo(description=description))
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    data.save_to_disk(str(tmp))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)
    return data
