"""Answer extraction and grading of recorded outputs of a real model (SmolLM2-135M-Instruct).

``tests/data/smollm2_outputs.jsonl`` holds whole solutions the model wrote for MATH-500 problems
(hf backend, temperature 0.7), each with the answer a reader extracts by the rules of
``tts_eval.grader.extract`` (checked by hand) and whether it is right. They caught one bug: "the
final answer is: 199" used to give ": 199".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tts_eval.grader import extract_answer, grade

DATA = Path(__file__).resolve().parent / "data" / "smollm2_outputs.jsonl"
RECORDS = [json.loads(line) for line in DATA.read_text().splitlines()]


@pytest.mark.parametrize("record", RECORDS, ids=[r["unique_id"] for r in RECORDS])
def test_recorded_real_outputs_extract_and_grade(record):
    assert extract_answer(record["output"]) == record["expected_answer"]
    assert grade(record["output"], record["gold"]) is record["expected_correct"]


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("So, the final answer is: 199.", "199"),
        ("The answer is: $\\frac{1}{2}$", "\\frac{1}{2}"),
        ("Final answer is : 7", "7"),
        ("The result is: 12", "12"),
    ],
)
def test_a_colon_after_an_answer_phrase_is_not_part_of_the_answer(text, answer):
    assert extract_answer(text) == answer
