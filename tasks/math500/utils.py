"""Hooks of the math500 task: data loading (hub or a local JSONL) and grading.

``load_math500`` reads ``$TTS_EVAL_MATH500`` (a JSONL file with the fields of
``HuggingFaceH4/MATH-500``) when set, otherwise the hub data set. ``process_results`` grades the
model's output with ``tts_eval.grader.grade``; when the output comes from the ``tts`` model it also
carries the search trace, from which the best-of-N style metrics are computed (see
``tts_eval.task_metrics``).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "TTS_EVAL_MATH500"
HUB_ID = "HuggingFaceH4/MATH-500"


def load_math500(**kwargs):
    """Return a ``DatasetDict`` with a ``test`` split (kwargs from lm-eval's metadata are ignored)."""
    import datasets

    local = os.environ.get(ENV_VAR)
    if local:
        path = Path(local).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"{ENV_VAR}={local} is not a file; point it at a MATH-500 JSONL "
                "(fields problem, solution, answer, subject, level, unique_id) or unset it"
            )
        return datasets.load_dataset("json", data_files={"test": str(path)})
    return datasets.load_dataset(HUB_ID)


def process_results(doc: dict, results: list) -> dict:
    from tts_eval.task_metrics import math_metrics

    return math_metrics(results[0], doc["answer"])


def count_traces(items: list) -> int:
    """Aggregate of the ``tts_trace`` entries: how many search traces were logged."""
    return len(items)
