"""Hooks of the gsm8k_local test task: load ``test.jsonl`` from this folder, grade by number.

``load_gsm8k_local`` resolves the data file next to this module, so the task loads from any CWD
(lm-eval resolves a relative ``data_files`` against the CWD). ``process_results`` scores
``exact_match``: the last number of the response equals the number after ``####`` in the gold
answer, compared by value with ``tts_eval.grader.NumberAnswerSpec``.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "test.jsonl"


def load_gsm8k_local(**kwargs):
    """A ``DatasetDict`` with a ``test`` split (kwargs from lm-eval's metadata are ignored)."""
    import datasets

    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def doc_to_target(doc: dict) -> str:
    """The gold number: the text after the last ``####`` of the answer."""
    return doc["answer"].rsplit("####", 1)[-1].strip()


def process_results(doc: dict, results: list) -> dict:
    from tts_eval.grader import NumberAnswerSpec

    spec = NumberAnswerSpec()
    predicted = spec.extract(results[0])
    correct = predicted is not None and spec.equivalent(predicted, doc_to_target(doc))
    return {"exact_match": float(correct)}
