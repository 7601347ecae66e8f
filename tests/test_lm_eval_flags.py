"""lm-eval's own flags with ``--model tts``, through the lm_eval CLI: honoured or refused, never
ignored; and a prompt too long for the policy fails its document, not the run.

Precedence: model_args > lm-eval flag (``--gen_kwargs``, ``--seed``, ``--batch_size``) > the
task's generation_kwargs (``max_gen_toks``) > default (unit tests: ``test_config.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lm_eval_cli import run_lm_eval

from tts_eval.prompts import SYSTEM_PROMPT

pytestmark = pytest.mark.slow
LIMIT = 5


def prompt_lengths(tiny_llama: Path, math500_path: Path) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    rows = [json.loads(line) for line in math500_path.read_text().splitlines()[:LIMIT]]
    return [
        len(
            tok.apply_chat_template(
                [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": r["problem"]},
                ],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
            )
        )
        for r in rows
    ]


def run_with_seed(seed: int, model_args: str, math500_path: Path, tmp_path: Path):
    traces = tmp_path / f"seed{seed}.jsonl"
    proc = run_lm_eval(
        [
            "--model", "tts",
            "--model_args", f"{model_args},trace_path={traces}",
            "--tasks", "math500", "--limit", str(LIMIT),
            "--gen_kwargs", "max_gen_toks=5,temperature=0.7",
            "--seed", str(seed), "--batch_size", "4",
            "--output_path", str(tmp_path / f"out{seed}"),
        ],
        {"TTS_EVAL_MATH500": str(math500_path)},
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc, [json.loads(line) for line in traces.read_text().splitlines()]


def test_gen_kwargs_seed_batch_size_are_honoured_and_long_prompts_fail_their_document(
    tiny_llama, math500_path, tmp_path
):
    lengths = prompt_lengths(tiny_llama, math500_path)
    limit = sorted(lengths)[LIMIT // 2] + 1  # about half of the prompts do not fit
    too_long = [i for i, n in enumerate(lengths) if n >= limit]
    assert 0 < len(too_long) < LIMIT
    model_args = f"pretrained={tiny_llama},backend=hf,n=2,max_model_len={limit}"
    proc, one = run_with_seed(1, model_args, math500_path, tmp_path)
    assert (
        "lm-eval flags applied to --model tts: --seed 1 -> seed=1; "
        "--gen_kwargs max_gen_toks=5 -> max_tokens=5; --gen_kwargs temperature=0.7 -> "
        "temperature=0.7; --batch_size 4 -> batch_size=4" in proc.stderr
    )
    assert "not used by the search" in proc.stderr and "do_sample=False" in proc.stderr
    assert {(r["settings"]["seed"], r["settings"]["temperature"]) for r in one} == {(1, 0.7)}
    assert {r["settings"]["max_tokens"] for r in one} == {5}
    # too long: recorded as failed with its doc id, the run goes on
    assert [i for i, r in enumerate(one) if "skipped" in r["settings"]] == too_long
    assert all(r["candidates"] == [] for i, r in enumerate(one) if i in too_long)
    assert f"{len(too_long)} of {LIMIT} requests not searched, recorded as failed" in proc.stderr
    for i in too_long:
        assert f"math500 doc {i} ({lengths[i]} tokens)" in proc.stderr
    searched = [r for i, r in enumerate(one) if i not in too_long]
    assert all(len(c["token_ids"]) <= 5 for r in searched for c in r["candidates"])

    _, two = run_with_seed(2, model_args, math500_path, tmp_path)
    assert {r["settings"]["seed"] for r in two} == {2}
    ids = [[c["token_ids"] for c in r["candidates"]] for r in one if r["candidates"]]
    assert ids != [[c["token_ids"] for c in r["candidates"]] for r in two if r["candidates"]]
