"""``answer=number`` end to end: ``lm_eval --model tts`` on a GSM8K-style task of our own.

The task (``tests/data/gsm8k_local``, loaded with ``--include_path``) asks word problems whose
answers are plain numbers; the scripted tiny policy writes steps with digits and boxed 1s and 2s.
With ``answer=number`` every candidate's answer is the last number of its text (not a boxed
answer), and majority voting groups candidates by numeric value.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from lm_eval_cli import run_lm_eval

from tts_eval.grader import MathAnswerSpec, NumberAnswerSpec

TASK_DIR = Path(__file__).resolve().parent / "data" / "gsm8k_local"


@pytest.mark.slow
def test_number_answers_vote_by_value_on_a_local_gsm8k_style_task(scripted_llama, tmp_path):
    traces = tmp_path / "traces.jsonl"
    args = (
        f"pretrained={scripted_llama},backend=hf,device=cpu,answer=number,strategy=majority,"
        f"n=6,max_tokens=48,temperature=1.0,seed=3,trace_path={traces}"
    )
    proc = run_lm_eval(
        ["--model", "tts", "--model_args", args, "--tasks", "gsm8k_local",
         "--include_path", str(TASK_DIR), "--limit", "3", "--output_path", str(tmp_path / "out")],
        {},
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "gsm8k_local" in proc.stdout and "exact_match" in proc.stdout
    records = [json.loads(line) for line in traces.read_text().splitlines()]
    assert len(records) == 3
    number, math = NumberAnswerSpec(), MathAnswerSpec()
    answered = differs = 0
    for record in records:
        keys = []
        for cand in record["candidates"]:
            text = "".join(cand["steps"])
            assert cand["answer"] == number.extract(text)
            differs += cand["answer"] != math.extract(text)
            if cand["answer"] is not None:
                answered += 1
                keys.append(number.canonical(cand["answer"]))
        if keys:  # majority by numeric value: "1,000", "1000" and "1000.0" are one answer
            counts = Counter(keys)
            selected = record["candidates"][record["selected"]]["answer"]
            assert counts[number.canonical(selected)] == max(counts.values())
    assert answered >= 6, "the scripted policy should write numbers in most candidates"
    assert differs, "answer=number must not extract what the math answer spec extracts"
