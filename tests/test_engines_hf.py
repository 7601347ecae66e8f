"""HFEngine on the tiny random Llama: finish reasons, stop strings, seeds, continuation by ids.

Expected outputs are derived from the engine's own unstopped runs plus independent oracles
(``first_stop_index`` decodes whole prefixes; the EOS test turns a token the model is known to
produce into an EOS id through its generation config), so each test fails if that behaviour breaks.
"""

from __future__ import annotations

import pytest
from test_engines import first_stop_index, with_extra_eos

from tts_eval.engines import load_engine
from tts_eval.errors import EngineError
from tts_eval.types import FinishReason, GenerationOutput, GenerationRequest, SamplingParams

pytestmark = pytest.mark.slow

GREEDY = SamplingParams(temperature=0.0, max_tokens=40)
SAMPLED = SamplingParams(temperature=1.0, max_tokens=40, seed=1234)


@pytest.fixture(scope="module")
def engine(tiny_llama):
    return load_engine("hf", str(tiny_llama), dtype="float32", device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def prompts(engine) -> list[tuple[int, ...]]:
    questions = ["What is 2+3?", "Solve $x^2 - 4 = 0$ for $x$, then add one.", "Hi"]
    return [tuple(engine.render_prompt([{"role": "user", "content": q}])) for q in questions]


def run(engine, prompt, params) -> GenerationOutput:
    return engine.generate([GenerationRequest(tuple(prompt), params)])[0]


def test_render_prompt_is_the_chat_template(engine):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}]
    ids = engine.render_prompt(messages)
    text = engine.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    assert ids == engine.tokenizer.encode(text, add_special_tokens=False)
    assert ids[0] == engine.tokenizer.bos_token_id
    assert engine.tokenizer.decode(ids).endswith("assistant<|end_header_id|>\n\n")


@pytest.mark.parametrize("max_tokens", [1, 5])
def test_length_cut_off(engine, prompts, max_tokens):
    ref = run(engine, prompts[0], GREEDY).completions[0]
    out = run(engine, prompts[0], SamplingParams(temperature=0.0, max_tokens=max_tokens))
    c = out.completions[0]
    assert c.token_ids == ref.token_ids[:max_tokens]
    assert c.finish_reason is FinishReason.LENGTH
    assert c.text == engine.tokenizer.decode(list(c.token_ids), skip_special_tokens=True)
    assert out.prompt_tokens == len(prompts[0]) and out.cached_prompt_tokens == 0


@pytest.mark.parametrize("base", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
@pytest.mark.parametrize("cut, width", [(3, 1), (8, 2), (15, 3), (25, 4)])
def test_stop_string_ends_the_row_at_the_completing_token(engine, prompts, base, cut, width):
    ref = run(engine, prompts[1], base).completions[0]
    tok = engine.tokenizer
    text = tok.decode(list(ref.token_ids[:cut]), skip_special_tokens=True)
    stop = text[-width:]
    expected = first_stop_index(tok, ref.token_ids, [stop])
    assert expected is not None and expected <= cut
    params = SamplingParams(
        temperature=base.temperature, max_tokens=base.max_tokens, stop=(stop,), seed=base.seed
    )
    c = run(engine, prompts[1], params).completions[0]
    assert c.finish_reason is FinishReason.STEP
    assert c.token_ids == ref.token_ids[:expected]
    assert stop in c.text


def test_first_of_several_stop_strings_wins(engine, prompts):
    ref = run(engine, prompts[2], GREEDY).completions[0]
    tok = engine.tokenizer
    late = tok.decode(list(ref.token_ids[:30]), skip_special_tokens=True)[-3:]
    early = tok.decode(list(ref.token_ids[:6]), skip_special_tokens=True)[-2:]
    expected = first_stop_index(tok, ref.token_ids, [late, early])
    c = run(engine, prompts[2], SamplingParams(temperature=0, max_tokens=40, stop=(late, early)))
    c = c.completions[0]
    assert (c.token_ids, c.finish_reason) == (ref.token_ids[:expected], FinishReason.STEP)


@pytest.fixture(scope="module")
def eos_case(engine, prompts, tiny_llama, tmp_path_factory):
    """A copy of the tiny model whose generation config lists, as an extra EOS id, a token that
    greedy decoding of prompts[0] first produces at step k; returns (engine, k, reference ids)."""
    ref = run(engine, prompts[0], GREEDY).completions[0].token_ids
    k = next(i for i in range(2, len(ref)) if ref[i] not in ref[:i])
    path = with_extra_eos(tiny_llama, tmp_path_factory.mktemp("eos") / "m", ref[k])
    eos_engine = load_engine("hf", str(path), dtype="float32", device="cpu")
    return eos_engine, k, ref


def test_eos_from_generation_config(eos_case, prompts):
    eos_engine, k, ref = eos_case
    assert ref[k] in eos_engine.eos_ids and eos_engine.tokenizer.eos_token_id in eos_engine.eos_ids
    c = run(eos_engine, prompts[0], GREEDY).completions[0]
    assert c.finish_reason is FinishReason.EOS
    assert c.token_ids == ref[: k + 1]  # the EOS token is kept


def test_eos_beats_stop_and_length_when_all_could_apply(eos_case, prompts):
    eos_engine, k, ref = eos_case
    c = run(eos_engine, prompts[0], SamplingParams(temperature=0, max_tokens=k + 1))
    assert c.completions[0].finish_reason is FinishReason.EOS


def test_max_model_len_cuts_as_length(tiny_llama, prompts):
    room = 4
    capped = load_engine(
        "hf", str(tiny_llama), dtype="float32", device="cpu", max_model_len=len(prompts[0]) + room
    )
    c = run(capped, prompts[0], GREEDY).completions[0]
    assert len(c.token_ids) == room and c.finish_reason is FinishReason.LENGTH
    with pytest.raises(ValueError, match="leaves no room under max_model_len"):
        run(capped, prompts[1], GREEDY)


def test_seeded_request_is_batch_independent(engine, prompts):
    params = SamplingParams(n=3, temperature=1.0, max_tokens=12, seed=99)
    alone = run(engine, prompts[1], params)
    mixed = engine.generate(
        [
            GenerationRequest(prompts[0], SamplingParams(n=5, temperature=0.7, max_tokens=20)),
            GenerationRequest(prompts[1], params),
            GenerationRequest(prompts[2], SamplingParams(temperature=0, max_tokens=3)),
        ]
    )[1]
    assert mixed.completions == alone.completions
    texts = {c.token_ids for c in alone.completions}
    assert len(texts) == 3  # the n completions differ from each other
    other_seed = run(
        engine, prompts[1], SamplingParams(n=3, temperature=1.0, max_tokens=12, seed=7)
    )
    assert other_seed.completions != alone.completions


def test_batch_size_does_not_change_results(tiny_llama, engine, prompts):
    one = load_engine("hf", str(tiny_llama), dtype="float32", device="cpu", batch_size=1)
    reqs = [
        GenerationRequest(p, SamplingParams(n=2, temperature=0.9, max_tokens=10, seed=5 + i))
        for i, p in enumerate(prompts)
    ]
    alone, batched = one.generate(reqs), engine.generate(reqs)
    assert [o.completions for o in alone] == [o.completions for o in batched]
    # only the prompt work differs: one row per forward prefills every sample's prompt
    assert [o.prompt_tokens for o in alone] == [o.prompt_tokens for o in batched]
    assert all(o.cached_prompt_tokens == 0 for o in alone)
    assert [o.cached_prompt_tokens for o in batched] == [len(p) for p in prompts]


def test_completion_j_uses_seed_plus_j(engine, prompts):
    many = run(engine, prompts[0], SamplingParams(n=3, temperature=1.0, max_tokens=8, seed=40))
    for j in range(3):
        single = run(engine, prompts[0], SamplingParams(temperature=1.0, max_tokens=8, seed=40 + j))
        assert single.completions[0] == many.completions[j]


def test_greedy_batched_equals_one_by_one(engine, prompts):
    reqs = [GenerationRequest(p, GREEDY) for p in prompts]
    batched = [o.completions for o in engine.generate(reqs)]
    assert batched == [run(engine, p, GREEDY).completions for p in prompts]


def test_tiny_top_p_is_greedy(engine, prompts):
    greedy = run(engine, prompts[1], SamplingParams(temperature=0, max_tokens=15))
    nucleus = run(engine, prompts[1], SamplingParams(temperature=1.0, top_p=1e-6, max_tokens=15))
    assert nucleus.completions[0].token_ids == greedy.completions[0].token_ids


def test_continuation_by_token_ids(engine, prompts):
    """Prompt + the first 10 generated ids continues exactly where the full greedy run went,
    also when a shorter prompt shares the batch (left padding, positions)."""
    ref = run(engine, prompts[0], GREEDY).completions[0].token_ids
    cont = engine.generate(
        [
            GenerationRequest(prompts[0] + ref[:10], SamplingParams(temperature=0, max_tokens=30)),
            GenerationRequest(prompts[2], GREEDY),
        ]
    )[0]
    assert cont.prompt_tokens == len(prompts[0]) + 10
    assert cont.completions[0].token_ids == ref[10:40]


@pytest.mark.parametrize(
    "prompt_ids, stop, message",
    [
        ((), (), "prompt_ids is empty"),
        ((1, 10**6), (), "outside the vocabulary"),
        ((1, 2), ("",), "non-empty strings"),
    ],
)
def test_bad_requests_fail_before_generating(engine, prompt_ids, stop, message):
    with pytest.raises(ValueError, match=message):
        engine.generate([GenerationRequest(prompt_ids, SamplingParams(stop=stop))])


def test_backend_failure_is_one_line_engine_error(engine, prompts, monkeypatch):
    def broken_forward(*args, **kwargs):
        raise RuntimeError("boom: kernel failed\nsecond line of the traceback")

    monkeypatch.setattr(engine.model, "forward", broken_forward)
    one = GenerationRequest(prompts[1], SamplingParams(n=2, max_tokens=5, seed=3))
    with pytest.raises(EngineError) as info:
        engine.generate([one])
    text = str(info.value)
    assert "\n" not in text
    assert text == (
        f"policy engine backend=hf pretrained={engine.config.pretrained} failed on request 0 of 1 "
        f"(prompt of {len(prompts[1])} tokens, n=2, seed=3): RuntimeError: boom: kernel failed"
    )
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(EngineError, match=r"failed on requests 0, 1 of 2 \(prompts of"):
        engine.generate([GenerationRequest(p, GREEDY) for p in prompts[:2]])
    with pytest.raises(ValueError, match="prompt_ids is empty"):  # our own errors stay as they are
        engine.generate([GenerationRequest((), GREEDY)])


@pytest.mark.parametrize("progress", [True, False, None])
def test_progress_bar_on_stderr_leaves_results_unchanged(
    engine, prompts, capsys, monkeypatch, progress
):
    """True: a bar from the start, updated; False: none; None: none before the delay (made an
    hour here, so the check does not depend on how busy the machine is)."""
    monkeypatch.setattr("tts_eval.engines.progress.PROGRESS_DELAY_S", 3600.0)
    requests = [
        GenerationRequest(p, SamplingParams(n=2, temperature=1.0, max_tokens=12, seed=21))
        for p in prompts
    ]
    engine.progress = False
    want = engine.generate(requests)
    capsys.readouterr()
    engine.progress = progress
    try:
        got = engine.generate(requests)
    finally:
        engine.progress = None
    assert got == want
    captured = capsys.readouterr()
    assert captured.out == ""
    if progress:
        tokens = sum(len(c.token_ids) for o in got for c in o.completions)
        frames = captured.err.replace("\r", "\n").splitlines()
        assert any(f.startswith("hf generate:") for f in frames)
        assert "6/6" in frames[-1] and f"req 3/3, {tokens} tok" in frames[-1]
        assert "tok/s" in frames[-1]
        assert len([f for f in frames if f.startswith("hf generate:")]) > 1  # updated
    else:
        assert captured.err == ""


@pytest.mark.parametrize("batch_size", [3, 64])
def test_prompt_work_is_counted_per_sample_and_equals_the_engine_counters(
    engine, prompts, batch_size, monkeypatch
):
    """n samples query the prompt n times; one prefill per chunk holding a request's rows."""
    monkeypatch.setattr(engine, "batch_size", batch_size)
    before = (engine.counters.queried, engine.counters.cached)
    params = SamplingParams(n=4, temperature=0.8, max_tokens=3, seed=1)
    requests = [GenerationRequest(prompts[0], params), GenerationRequest(prompts[2], GREEDY)]
    outs = engine.generate(requests)
    lens = [len(prompts[0]), len(prompts[2])]
    assert [o.prompt_tokens for o in outs] == [4 * lens[0], lens[1]]
    # rows sorted by prompt length ("Hi" first): with 3 rows per chunk request 0 spans two chunks
    assert lens[1] < lens[0]
    prefills = 2 if batch_size == 3 else 1
    assert outs[0].cached_prompt_tokens == (4 - prefills) * lens[0]
    assert outs[1].cached_prompt_tokens == 0
    queried = engine.counters.queried - before[0]
    cached = engine.counters.cached - before[1]
    assert queried == sum(o.prompt_tokens for o in outs)
    assert cached == sum(o.cached_prompt_tokens for o in outs)
