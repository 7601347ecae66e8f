"""The result files of an lm-eval run with ``--model tts``: checked before the run, written whole.

lm-eval 0.4.13's ``EvaluationTracker`` writes ``results_<date>.json`` with ``Path.write_text``,
appends ``samples_<task>_<date>.jsonl``, and turns any failure into a warning: a folder that
cannot be written loses the results with exit status 0, and a full disk leaves a truncated
results file under its final name. For ``--model tts`` runs, :func:`prepare_tracker` (called by
:mod:`tts_eval.plugin`'s wrapper of ``simple_evaluate``, before the model is built):

* checks that the output folder can be written (:func:`tts_eval.files.check_writable`): a
  one-line :class:`~tts_eval.errors.OutputError` before any model loads;
* replaces, on that tracker instance only, ``save_results_aggregated`` and
  ``save_results_samples`` by :func:`save_results_aggregated` and :func:`save_results_samples`:
  the same files (names, folders, content) as lm-eval's, written through a temporary file and a
  rename (:func:`tts_eval.files.atomic_open`); a failure raises ``OutputError`` (so ``tts-eval
  eval`` exits 2 with one line, plain ``lm_eval`` exits 1 with a traceback ending in that line)
  and leaves no truncated file under the final name.

A run that pushes to the Hugging Face Hub (``--hf_hub_log_args push_results_to_hub=True`` or
``push_samples_to_hub=True``) keeps lm-eval's own writer, which uploads what it wrote; only the
check before the run applies then. Other models are left alone.

What this module does not do: decide what a results file holds (lm-eval does) or register
anything (``tts_eval.plugin``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from types import MethodType
from typing import Any

from tts_eval.files import atomic_open, check_writable

logger = logging.getLogger(__name__)

OPTION = "--output_path"
_PREPARED = "_tts_eval_atomic_outputs"


def results_folder(output_path: str | Path, model_name_sanitized: str | None) -> Path:
    """The folder lm-eval writes into: beside a ``*.json`` output path, else
    ``<output_path>/<sanitized model name>``."""
    path = Path(output_path)
    if path.suffix == ".json":
        return path.parent
    return path / str(model_name_sanitized) if model_name_sanitized else path


def results_file(output_path: str | Path, model_name_sanitized: str | None, date_id: str) -> Path:
    """lm-eval's aggregated results file of one run."""
    path = Path(output_path)
    if path.suffix == ".json":
        return path.with_name(f"{path.stem}_{date_id}.json")
    return results_folder(path, model_name_sanitized) / f"results_{date_id}.json"


def model_name_sanitized(model_args: str | dict | None) -> str | None:
    """The folder name lm-eval will give this run's model (None when it will draw a random one)."""
    from lm_eval.loggers.evaluation_tracker import GeneralConfigTracker
    from lm_eval.utils import sanitize_model_name

    name = GeneralConfigTracker._get_model_name(model_args or "")
    return sanitize_model_name(name) if name else None


def _pushes(tracker: Any) -> bool:
    return bool(
        getattr(tracker, "api", None)
        and (getattr(tracker, "push_results_to_hub", False) or tracker.push_samples_to_hub)
    )


def prepare_tracker(tracker: Any, model_args: str | dict | None) -> None:
    """Check the tracker's output folder and make its local writes atomic (module docstring)."""
    output_path = getattr(tracker, "output_path", None)
    if not output_path or getattr(tracker, _PREPARED, False):
        return
    check_writable(results_folder(output_path, model_name_sanitized(model_args)), option=OPTION)
    if _pushes(tracker):
        logger.info(
            "tts: results are pushed to the Hugging Face Hub, so lm-eval's own writer saves them "
            "(its write failures are logged, not raised)"
        )
        return
    tracker.save_results_aggregated = MethodType(save_results_aggregated, tracker)
    tracker.save_results_samples = MethodType(save_results_samples, tracker)
    setattr(tracker, _PREPARED, True)


def save_results_aggregated(tracker: Any, results: dict, samples: dict | None = None) -> None:
    """``EvaluationTracker.save_results_aggregated`` of lm-eval 0.4.13 without the Hub push,
    written atomically; raises ``OutputError`` instead of logging a failure."""
    from lm_eval.utils import handle_non_serializable, hash_string

    tracker.general_config_tracker.log_end_time()
    task_hashes = {}
    for task_name, task_samples in (samples or {}).items():
        hashes = [s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in task_samples]
        task_hashes[task_name] = hash_string("".join(hashes))
    results.update({"task_hashes": task_hashes})
    results.update(asdict(tracker.general_config_tracker))
    dumped = json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False)
    tracker.date_id = datetime.now().isoformat().replace(":", "-")
    name = tracker.general_config_tracker.model_name_sanitized
    path = results_file(tracker.output_path, name, tracker.date_id)
    with atomic_open(path, option=OPTION) as f:
        f.write(dumped)
    logger.info("tts: results saved to %s", path)


def _sanitized_sample(sample: dict) -> dict:
    """A logged sample as lm-eval 0.4.13 writes it (arguments by name, responses as lists)."""
    from lm_eval.utils import sanitize_list

    arguments: dict[str, dict[str, Any]] = {}
    for i, arg in enumerate(sample["arguments"]):
        arguments[f"gen_args_{i}"] = {f"arg_{j}": value for j, value in enumerate(arg)}
    sample["resps"] = sanitize_list(sample["resps"])
    sample["filtered_resps"] = sanitize_list(sample["filtered_resps"])
    sample["arguments"] = arguments
    sample["target"] = str(sample["target"])
    return sample


def save_results_samples(tracker: Any, task_name: str, samples: list) -> None:
    """``EvaluationTracker.save_results_samples`` of lm-eval 0.4.13 without the Hub push: the
    file (what it already held, then these samples) replaced atomically; ``OutputError`` on
    failure."""
    from lm_eval.utils import handle_non_serializable

    folder = results_folder(
        tracker.output_path, tracker.general_config_tracker.model_name_sanitized
    )
    path = folder / f"samples_{task_name}_{tracker.date_id}.jsonl"
    before = path.read_bytes() if path.is_file() else b""  # lm-eval appends
    with atomic_open(path, "wb", option=OPTION) as f:
        f.write(before)
        for sample in samples:
            line = json.dumps(
                _sanitized_sample(sample), default=handle_non_serializable, ensure_ascii=False
            )
            f.write((line + "\n").encode("utf-8"))
    logger.info("tts: samples of %s saved to %s", task_name, path)
