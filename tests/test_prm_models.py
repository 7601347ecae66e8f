"""Each PRM adapter on a tiny random checkpoint of the right architecture, through load_prm.

Checks: auto-detection, finite scores in [0, 1] with one per step, read positions that matter,
incremental scoring with prefix reuse equal to scoring from scratch with fewer tokens processed,
intra-call sharing of a common prefix, token-budget batching and chunking.
"""

from __future__ import annotations

import logging
import math
import shutil

import pytest
from prm_models import BUILDERS, DIR_NAMES

from tts_eval.prm import SUPPORTED, load_prm, split_steps
from tts_eval.types import PRMOutput, PRMRequest, ProcessRewardModel

pytestmark = pytest.mark.slow

PROBLEM = "Let $f(x) = 2x + 3$. What is $f(4) - f(1)$?"
SOLUTION = (
    "## Step 1: Compute $f(4) = 2 \\cdot 4 + 3 = 11$.\n\n"
    "## Step 2: Compute $f(1) = 2 \\cdot 1 + 3 = 5$.\n\n"
    "## Step 3: Subtract: $11 - 5 = 6$.\n\n"
    "## Step 4: Check: the slope is $2$ and $4 - 1 = 3$, so the change is $2 \\cdot 3 = 6$.\n\n"
    "## Step 5: Therefore, the final answer is: $\\boxed{6}$. I hope it is correct.\n\n"
)
STEPS = split_steps(SOLUTION)


@pytest.fixture(scope="session")
def prm_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-prms")
    return {t: build(root / DIR_NAMES[t]) for t, build in BUILDERS.items()}


@pytest.fixture(scope="session")
def prms(prm_dirs):
    """(reusing, from-scratch) adapters per type, auto-detected from the checkpoint."""
    return {
        t: (load_prm(str(p), device="cpu"), load_prm(str(p), device="cpu", cache_bytes=0))
        for t, p in prm_dirs.items()
    }


def _close(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return len(a) == len(b) and all(
        math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-5) for x, y in zip(a, b, strict=True)
    )


def test_solution_has_five_steps():
    assert len(STEPS) == 5


@pytest.mark.parametrize("prm_type", SUPPORTED)
def test_autodetected_scores_shapes_and_range(prm_type, prms):
    prm, _ = prms[prm_type]
    assert isinstance(prm, ProcessRewardModel)
    assert prm.prm_type == prm_type
    requests = [PRMRequest(PROBLEM, STEPS[:k]) for k in (1, 3, 5)] + [PRMRequest(PROBLEM, ())]
    out = prm.score(requests)
    assert [len(o.step_scores) for o in out] == [1, 3, 5, 0]
    assert all(isinstance(o, PRMOutput) for o in out)
    scores = [s for o in out for s in o.step_scores]
    assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores)
    # random heads with spread weights: different steps get different scores
    assert len({round(s, 6) for s in out[2].step_scores}) == 5
    assert out[-1].tokens_processed == 0 and out[0].tokens_processed > 0


@pytest.mark.parametrize("prm_type", SUPPORTED)
def test_incremental_equals_scratch_with_fewer_tokens(prm_type, prms):
    prm, scratch = prms[prm_type]
    prm.scorer.clear_cache()
    reuse_tokens = scratch_tokens = 0
    for k in range(1, len(STEPS) + 1):
        [inc] = prm.score([PRMRequest(PROBLEM, STEPS[:k])])
        [ref] = scratch.score([PRMRequest(PROBLEM, STEPS[:k])])
        assert _close(inc.step_scores, ref.step_scores), (k, inc, ref)
        reuse_tokens += inc.tokens_processed
        scratch_tokens += ref.tokens_processed
        if k > 1:  # only the new step (plus less than a block and the format's tail) runs
            assert inc.tokens_processed < ref.tokens_processed
    assert reuse_tokens < 0.6 * scratch_tokens, (reuse_tokens, scratch_tokens)


@pytest.mark.parametrize("prm_type", ["rlhflow", "qwen_prm", "token_classification"])
def test_siblings_share_their_prefix_within_one_call(prm_type, prms):
    """Beam-search shape: M children of one uncached parent, scored in one call."""
    prm, scratch = prms[prm_type]
    prm.scorer.clear_cache()
    children = [
        PRMRequest(PROBLEM, (*STEPS[:3], f"## Step 4: Variant {i} of the check gives {i}."))
        for i in range(4)
    ]
    got = prm.score(children)
    ref = scratch.score(children)
    for g, r in zip(got, ref, strict=True):
        assert _close(g.step_scores, r.step_scores)
    total, total_ref = sum(o.tokens_processed for o in got), sum(o.tokens_processed for o in ref)
    assert total < 0.5 * total_ref, (total, total_ref)
    # duplicates are run once and counted once
    dup = prm.score([children[0], children[0]])
    assert dup[0].step_scores == dup[1].step_scores and dup[1].tokens_processed == 0


@pytest.mark.parametrize(("batch_tokens", "block_size"), [(8, 4), (24, 16), (100_000, 1)])
def test_token_budget_and_chunking_do_not_change_scores(batch_tokens, block_size, prm_dirs, prms):
    _, scratch = prms["skywork"]
    prm = load_prm(
        str(prm_dirs["skywork"]), device="cpu", batch_tokens=batch_tokens, block_size=block_size
    )
    requests = [PRMRequest(PROBLEM, STEPS[:k]) for k in (2, 5, 3)]
    for _ in range(2):  # cold, then warm cache
        got = prm.score(requests)
        ref = scratch.score(requests)
        for g, r in zip(got, ref, strict=True):
            assert _close(g.step_scores, r.step_scores)


def test_small_cache_evicts_and_stays_correct(prm_dirs, prms):
    _, scratch = prms["math_shepherd"]
    prm = load_prm(str(prm_dirs["math_shepherd"]), device="cpu", cache_bytes=20_000)
    for k in range(1, len(STEPS) + 1):
        [got] = prm.score([PRMRequest(PROBLEM, STEPS[:k])])
        [ref] = scratch.score([PRMRequest(PROBLEM, STEPS[:k])])
        assert _close(got.step_scores, ref.step_scores)
    assert prm.scorer.cache.nbytes <= 20_000


def test_read_positions_matter(prms):
    """Scoring a different problem changes the scores (the model output is really read)."""
    prm, _ = prms["qwen_prm"]
    a, b = prm.score([PRMRequest(PROBLEM, STEPS[:2]), PRMRequest("What is 1+1?", STEPS[:2])])
    assert a.step_scores != b.step_scores


def _beam_workload(rounds: int = 3, width: int = 6) -> list[list[PRMRequest]]:
    """Beam-search-shaped PRM calls: per round, ``width`` children of each of 3 problems' beams,
    with step lengths from 1 to ~40 words, every child extending its parent by one step."""
    problems = [PROBLEM, "What is $1 + 2 + \\dots + 10$?", "Solve $x^2 = 49$ for $x > 0$."]
    beams = {p: [()] for p in problems}
    calls = []
    for r in range(rounds):
        call = []
        for p_idx, problem in enumerate(problems):
            children = []
            for b, parent in enumerate(beams[problem]):
                for c in range(width // len(beams[problem])):
                    words = 1 + (7 * r + 5 * p_idx + 11 * b + 13 * c) % 40
                    step = f"## Step {r + 1}: " + " ".join(f"w{k}={k * c}" for k in range(words))
                    children.append((*parent, step))
            call += [PRMRequest(problem, steps) for steps in children]
            beams[problem] = children[:2]  # keep two beams, as a search would
        calls.append(call)
    return calls


@pytest.mark.parametrize("prm_type", ["rlhflow", "math_shepherd"])
def test_length_bucketing_bounds_padding_and_keeps_scores(prm_type, prm_dirs, prms):
    """Every forward pads at most 10% new tokens; scores equal a full rescoring; tokens counted."""
    _, scratch = prms[prm_type]
    prm = load_prm(str(prm_dirs[prm_type]), device="cpu")
    processed = 0
    scratch_context, full_context = scratch.scorer.stats.context_tokens, 0
    for call in _beam_workload():
        got = prm.score(call)
        ref = scratch.score(call)
        full_context += sum(
            len(s) * (len(s) + 1) // 2 for s in {prm.render(r).token_ids for r in call}
        )
        for g, r in zip(got, ref, strict=True):
            assert _close(g.step_scores, r.step_scores), (g, r)
        processed += sum(o.tokens_processed for o in got)
        assert sum(o.tokens_processed for o in got) < sum(o.tokens_processed for o in ref)
    stats = prm.scorer.stats
    assert stats.real_tokens == processed > 0
    assert stats.padded_tokens >= stats.real_tokens
    assert stats.padding_ratio <= 1.10, stats
    assert stats.padded_past_tokens + stats.padded_tokens <= 1.25 * (
        stats.real_past_tokens + stats.real_tokens
    )
    assert stats.forwards > 1 and stats.forward_s > 0
    # the full rescoring runs rectangles under the same bounds; each token attends to its prefix
    assert scratch.scorer.stats.padding_ratio <= 1.10
    assert scratch.scorer.stats.context_tokens - scratch_context == full_context
    assert stats.context_tokens > stats.real_past_tokens  # cached past is attended, not rerun


def test_forward_kv_bytes_are_bounded_and_outputs_hold_no_tensors(prm_dirs, prms, monkeypatch):
    """A forward's gathered past + new stays under MAX_FORWARD_KV_BYTES; scores are floats."""
    from tts_eval.prm import hf

    _, scratch = prms["rlhflow"]
    prm = load_prm(str(prm_dirs["rlhflow"]), device="cpu")
    calls = _beam_workload()
    prm.score(calls[0])  # fills the cache: blocks tell the bytes per token
    kv = next(iter(prm.scorer.cache._blocks.values())).payload[0]
    per_token = kv.numel() * kv.element_size() // kv.shape[3]
    monkeypatch.setattr(hf, "MAX_FORWARD_KV_BYTES", 300 * per_token)
    prm.scorer.stats.reset()
    for call in calls[1:]:
        got = prm.score(call)
        for g, r in zip(got, scratch.score(call), strict=True):
            assert _close(g.step_scores, r.step_scores)
            assert all(type(x) is float for x in g.step_scores)
            assert type(g.tokens_processed) is int
    stats = prm.scorer.stats
    assert stats.real_past_tokens > 0 and stats.forwards > 1
    # one row may exceed the bound alone (it cannot be split), rows are never added past it
    longest = max(len(prm.render(r).token_ids) for call in calls for r in call)
    assert stats.peak_forward_tokens <= max(300, longest), stats


def test_cache_memory_is_reused_and_released(prm_dirs, prms, monkeypatch):
    """Cached blocks live in slabs whose slots are reused once evicted: repeated calls under a
    small cache bound (evicting within calls) keep the scorer's memory flat and the scores equal
    to a full rescoring; ``clear_cache`` releases it."""
    from tts_eval.prm import hf

    monkeypatch.setattr(hf, "SLAB_BYTES", 1)  # one block per slab: growth shows block by block
    _, scratch = prms["rlhflow"]
    prm = load_prm(str(prm_dirs["rlhflow"]), device="cpu", cache_bytes=60_000, block_size=4)
    scorer = prm.scorer
    calls = _beam_workload(rounds=3)
    prm.score(calls[0])
    block_bytes = next(iter(scorer.cache.payloads()))[0].numel() * 4
    memory, reused = [], 0
    for _ in range(3):  # the same calls again: same blocks evicted and stored again
        for call in calls:
            free_before = len(scorer._pool.free)
            for g, r in zip(prm.score(call), scratch.score(call), strict=True):
                assert _close(g.step_scores, r.step_scores), (g, r)
            assert scorer.cache.nbytes <= 60_000
            pool = scorer._pool
            live = {p[2] for p in scorer.cache.payloads()}
            assert len(pool.free) == len(pool.blocks) - len(live)  # everything else is reusable
            reused += free_before > 0
        memory.append(scorer.memory_bytes)
    assert reused >= len(calls)  # evicted slots were there to take in later calls
    assert memory[1] == memory[2] <= memory[0] + 10 * block_bytes  # flat, not growing per round
    scorer.clear_cache()
    assert scorer.memory_bytes == 0 and len(scorer.cache) == 0


@pytest.mark.parametrize("prm_type", ["rlhflow", "qwen_prm"])
def test_children_of_one_cached_parent_run_packed(prm_type, prm_dirs, prms, monkeypatch):
    """Children sharing their parent's cached past run as one row (fewer forwards than children,
    the past counted once), with scores equal to a full rescoring; with packing off, one row each.
    (Whether packing pays is the planner's call, tested in test_prm_planning; here it is forced.)"""
    from tts_eval.prm import planning

    monkeypatch.setattr(planning, "MAX_PACK_EXTRA_COST", 100.0)
    _, scratch = prms[prm_type]
    parent = STEPS[:2]
    children = [(*parent, STEPS[k]) for k in (2, 3, 4)] + [(*parent, "## Step 3: x.")]
    counts = {}
    for packable in (True, False):
        prm = load_prm(str(prm_dirs[prm_type]), device="cpu", block_size=4)
        assert prm.scorer._packable  # the tiny PRMs run SDPA attention
        prm.scorer._packable = packable
        prm.score([PRMRequest(PROBLEM, parent)])  # caches the parent's blocks
        prm.scorer.stats.reset()
        got = prm.score([PRMRequest(PROBLEM, c) for c in children])
        ref = scratch.score([PRMRequest(PROBLEM, c) for c in children])
        for g, r in zip(got, ref, strict=True):
            assert _close(g.step_scores, r.step_scores), (g, r)
        stats = prm.scorer.stats
        counts[packable] = (stats.forwards, stats.real_past_tokens)
    packed, single = counts[True], counts[False]
    assert packed[0] < single[0] and packed[1] < single[1]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("prm_type", SUPPORTED)
def test_loading_prints_no_load_report_for_the_head_tensors(prm_type, prm_dirs, caplog):
    """The heads read their own tensors; transformers' UNEXPECTED table for them is not shown
    (transformers' loggers do not propagate: a handler of our own hears them)."""
    heard = _Collect()
    hf_root = logging.getLogger("transformers")
    hf_root.addHandler(heard)
    try:
        with caplog.at_level(logging.DEBUG, logger="tts_eval.prm.registry"):
            prm = load_prm(str(prm_dirs[prm_type]), device="cpu")
    finally:
        hf_root.removeHandler(heard)
    assert prm.score([PRMRequest(PROBLEM, STEPS[:2])])[0].step_scores
    assert not [m for m in heard.messages if "LOAD REPORT" in m or "UNEXPECTED" in m], (
        heard.messages
    )
    assert not [r for r in caplog.records if r.name.startswith("tts_eval") and r.levelno >= 30]


def test_a_backbone_tensor_missing_from_the_checkpoint_is_a_warning(prm_dirs, tmp_path, caplog):
    from safetensors.torch import load_file, save_file

    source = prm_dirs["token_classification"]
    target = tmp_path / DIR_NAMES["token_classification"]
    shutil.copytree(source, target)
    state = load_file(str(target / "model.safetensors"))
    dropped = next(k for k in state if k.endswith("layers.0.mlp.up_proj.weight"))
    save_file({k: v for k, v in state.items() if k != dropped}, str(target / "model.safetensors"))
    with caplog.at_level(logging.WARNING, logger="tts_eval.prm.registry"):
        load_prm(str(target), device="cpu")
    [record] = [r for r in caplog.records if r.name == "tts_eval.prm.registry"]
    assert "1 backbone tensor(s)" in record.getMessage()
    assert "layers.0.mlp.up_proj.weight" in record.getMessage()


def test_a_backbone_tensor_of_the_wrong_shape_fails_with_transformers_report(prm_dirs, tmp_path):
    """The silenced load fails; the error comes after transformers' table naming the tensor."""
    import torch
    from safetensors.torch import load_file, save_file

    target = tmp_path / DIR_NAMES["token_classification"]
    shutil.copytree(prm_dirs["token_classification"], target)
    state = load_file(str(target / "model.safetensors"))
    bad = next(k for k in state if k.endswith("layers.0.mlp.up_proj.weight"))
    state[bad] = torch.zeros(state[bad].shape[0] + 1, state[bad].shape[1])
    save_file(state, str(target / "model.safetensors"))
    heard = _Collect()
    hf_root = logging.getLogger("transformers")
    hf_root.addHandler(heard)
    try:
        with pytest.raises(RuntimeError):
            load_prm(str(target), device="cpu")
    finally:
        hf_root.removeHandler(heard)
    assert any("LOAD REPORT" in m and "layers.0.mlp.up_proj.weight" in m for m in heard.messages)
