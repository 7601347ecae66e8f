"""``prm_backend=vllm`` and ``prm_backend=openai``: PRMs scored by reads that end at a step.

Fast checks: the label-read scorer over a fake reader (prompts end at the format's read
positions, identical prompts read once, prefilled tokens = prompt - cached, counters), and every
setting error (one line, before any model loads). vLLM checks (one in-process ``vllm.LLM`` per
format vLLM runs, for the module; one server for the openai checks): scores equal the transformers
scorer's (float32 both sides; the LM-head formats and the pooling heads qwen_prm and
token_classification) on the golden requests of ``test_prm_models`` and on a beam-search
workload, within ``TOLERANCE``; the step prefixes of one solution hit vLLM's prefix cache;
best_of_n and beam_search run with the vLLM PRM and select what they select with the hf PRM.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil

import pytest
from fakes import FakeAnswerSpec, RandomEngine, problem
from prm_models import BUILDERS, DIR_NAMES
from test_prm_models import PROBLEM, STEPS, _beam_workload

from tts_eval.config import result_identity
from tts_eval.errors import SettingError
from tts_eval.model_args import parse_model_args
from tts_eval.prm import load_prm
from tts_eval.prm.labels import LabelReadScorer, label_probability
from tts_eval.runtime.local import preflight
from tts_eval.runtime.prm import load_prm as load_backend_prm
from tts_eval.search import SearchConfig, run_search
from tts_eval.settings import PRMConfig
from tts_eval.types import PRMRequest

# Largest |vLLM - transformers| step score accepted (float32 both sides; measured on the tiny
# PRMs here: below 1e-6).
TOLERANCE = 1e-5
LABEL_TYPES = ("rlhflow", "math_shepherd")
# The formats vLLM runs in process: LM-head label reads, and the pooling heads.
VLLM_TYPES = (*LABEL_TYPES, "qwen_prm", "token_classification")
needs_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None,
    reason="vllm is not installed (pip install 'tts-scaling-eval[vllm]'; CPU: .ci/install_vllm.sh)",
)


# ----------------------------------------------------------------------------------------------
# The label-read scorer over a fake reader
# ----------------------------------------------------------------------------------------------


class FakeReader:
    """Reads whose log-probabilities are a function of the prompt; ``cached`` tokens per read."""

    good_id, bad_id = 1, 2

    def __init__(self, cached: int | None = 3) -> None:
        self.cached = cached
        self.calls: list[list[tuple[int, ...]]] = []
        self.closed = False

    def read(self, prompts):
        self.calls.append(list(prompts))
        return [(-1.0 - len(p) / 10, -2.0 + p[-1] / 10, self.cached) for p in prompts]

    def close(self):
        self.closed = True


def test_label_probability_is_the_two_label_softmax():
    for good, bad in [(-1.0, -2.0), (-30.0, -0.5), (-800.0, -1.0), (-1.0, -900.0), (0.0, 0.0)]:
        e_good, e_bad = math.exp(good - max(good, bad)), math.exp(bad - max(good, bad))
        assert math.isclose(label_probability(good, bad), e_good / (e_good + e_bad), rel_tol=1e-12)


def test_reads_end_at_read_positions_duplicates_once_and_cost_prefilled_tokens():
    reader = FakeReader(cached=3)
    scorer = LabelReadScorer(reader)
    seqs = [(5, 6, 7, 8, 9, 10), (5, 6, 7, 8, 9, 10), (5, 6, 7, 11), ()]
    positions = [(2, 5), (2, 5), (2, 3), ()]
    out = scorer.run(seqs, positions)
    # one read per distinct prompt, each the sequence up to and including its read position
    assert reader.calls == [[(5, 6, 7), (5, 6, 7, 8, 9, 10), (5, 6, 7, 11)]]
    expected = [label_probability(-1.0 - len(p) / 10, -2.0 + p[-1] / 10) for p in reader.calls[0]]
    assert out[0].scores == (expected[0], expected[1]) == out[1].scores
    assert out[2].scores == (expected[0], expected[2]) and out[3].scores == ()
    # prefilled = prompt length - cached, charged to the first sequence asking for the prompt
    assert [o.tokens_processed for o in out] == [(3 - 3) + (6 - 3), 0, 4 - 3, 0]
    c = scorer.counters
    assert (c.reads, c.queried, c.cached, c.unknown) == (3, 13, 9, 0)
    assert c.prefilled == 4 and math.isclose(c.cached_share, 9 / 13)
    scorer.close()
    assert reader.closed


def test_reads_done_before_are_not_sent_again_unless_the_memo_is_off():
    reader = FakeReader(cached=0)
    scorer = LabelReadScorer(reader)
    first = scorer.run([(1, 2, 3, 4)], [(1, 3)])
    # a grown candidate: its old step prefixes come from the memo, only the new one is read
    grown = scorer.run([(1, 2, 3, 4, 5, 6)], [(1, 3, 5)])
    assert reader.calls == [[(1, 2), (1, 2, 3, 4)], [(1, 2, 3, 4, 5, 6)]]
    assert grown[0].scores[:2] == first[0].scores and grown[0].tokens_processed == 6
    assert (scorer.counters.reads, scorer.counters.memo) == (3, 2)
    off = LabelReadScorer(FakeReader(cached=0), memo_reads=0)
    off.run([(1, 2, 3, 4)], [(1, 3)])
    [again] = off.run([(1, 2, 3, 4)], [(1, 3)])
    assert len(off.reader.calls) == 2 and again.tokens_processed == 2 + 4
    small = LabelReadScorer(FakeReader(cached=0), memo_reads=1)  # least recently used goes
    small.run([(1, 2, 3)], [(0, 2)])
    small.run([(1, 2, 3)], [(0, 2)])
    assert small.reader.calls[1] == [(1,)]
    scorer.clear_cache()
    scorer.run([(1, 2, 3, 4)], [(1, 3)])
    assert reader.calls[-1] == [(1, 2), (1, 2, 3, 4)]


def test_reads_without_cache_counts_charge_every_prompt_token():
    scorer = LabelReadScorer(FakeReader(cached=None))
    [out] = scorer.run([(1, 2, 3, 4)], [(1, 3)])
    assert out.tokens_processed == 2 + 4
    assert (scorer.counters.unknown, scorer.counters.cached) == (2, 0)


def test_a_read_position_outside_the_sequence_is_refused():
    with pytest.raises(ValueError, match="read position 4 outside a sequence of 4 tokens"):
        LabelReadScorer(FakeReader()).run([(1, 2, 3, 4)], [(4,)])


# ----------------------------------------------------------------------------------------------
# Settings: one line each, before any model loads
# ----------------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    ("args", "start"),
    [
        ("prm_backend=tgi", "model_args prm_backend=tgi is invalid; accepted: hf, vllm, openai"),
        (
            "prm_type=skywork,prm_backend=vllm",
            "model_args prm_backend=vllm is invalid; accepted: hf for prm_type=skywork",
        ),
        (
            "prm_type=qwen_prm,prm_backend=openai,prm_base_url=http://h:1/v1",
            "model_args prm_backend=openai is invalid; accepted: hf or vllm for prm_type=qwen_prm",
        ),
        (
            "prm_type=skywork,prm_backend=openai,prm_base_url=http://h:1/v1",
            "model_args prm_backend=openai is invalid; accepted: hf for prm_type=skywork",
        ),
        (
            "prm_base_url=http://h:1/v1",
            "model_args prm_base_url=http://h:1/v1 is invalid; accepted: only with "
            "prm_backend=openai",
        ),
        (
            "prm_backend=vllm,prm_api_key=secret",
            "model_args prm_api_key=*** is invalid; accepted: only with prm_backend=openai",
        ),
        ("prm_backend=openai", "model_args prm_base_url is required with prm_backend=openai"),
        (
            "prm_backend=openai,prm_base_url=localhost:8001",
            "model_args prm_base_url=localhost:8001 is invalid; accepted: an http:// or https://",
        ),
        (
            "prm_backend=vllm,prm_batch_tokens=512",
            "model_args prm_batch_tokens=512 is invalid; accepted: only with prm_backend=hf",
        ),
        (
            "prm_backend=openai,prm_base_url=http://h:1/v1,prm_device=cpu",
            "model_args prm_device=cpu is invalid; accepted: only with prm_backend=hf",
        ),
        (
            "prm_gpu_memory_utilization=0.3",
            "model_args prm_gpu_memory_utilization=0.3 is invalid; accepted: only with "
            "prm_backend=vllm",
        ),
        (
            "prm_backend=vllm,prm_gpu_memory_utilization=1.5",
            "model_args prm_gpu_memory_utilization=1.5 is invalid; accepted: a fraction in (0, 1]",
        ),
        (
            "prm_backend=openai,prm_base_url=http://h:1/v1,prm_dtype=float32",
            "model_args prm_dtype=float32 is invalid; accepted: no prm_dtype with "
            "prm_backend=openai",
        ),
        (
            "prm_backend=openai,prm_base_url=http://h:1/v1,prm_timeout_s=0",
            "model_args prm_timeout_s=0.0 is invalid; accepted: seconds > 0",
        ),
    ],
)
def test_backend_settings_errors_are_one_line(args, start, tiny_llama, tiny_prm):
    with pytest.raises(SettingError) as info:
        parse_model_args(f"pretrained={tiny_llama},prm={tiny_prm},strategy=best_of_n,{args}")
    assert _one_line(info.value).startswith(start), str(info.value)


def test_backend_settings_without_a_prm_are_refused(tiny_llama):
    with pytest.raises(SettingError) as info:
        parse_model_args(f"pretrained={tiny_llama},prm_backend=vllm")
    assert (
        _one_line(info.value)
        == "model_args prm_backend given without prm=<path or hub id of the PRM>"
    )


def test_a_detected_head_format_on_vllm_is_refused_before_any_model_loads(
    tiny_llama, tmp_path, monkeypatch
):
    """prm_type left out: detected from config.json in preflight, refused there, no load
    (Skywork's value head is not a vLLM architecture)."""
    import tts_eval.runtime.local as local
    from tts_eval.runtime.local import LocalSearcher

    sky = tmp_path / DIR_NAMES["skywork"]
    sky.mkdir()
    (sky / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForPrmModel"]}))

    def no_load(*args, **kwargs):
        raise AssertionError("no model may load")

    monkeypatch.setattr(local, "load_prm", no_load)
    monkeypatch.setattr(local, "load_engine", no_load)
    config = parse_model_args(
        f"pretrained={tiny_llama},prm={sky},strategy=best_of_n,prm_backend=vllm"
    )
    with pytest.raises(SettingError) as info:
        LocalSearcher.from_config(config)
    assert _one_line(info.value).startswith(
        "model_args prm_backend=vllm is invalid; accepted: hf for prm_type=skywork"
    )
    with pytest.raises(SettingError):
        preflight(config)


def test_identity_keeps_earlier_folders_and_tells_backends_apart(tiny_llama, tiny_prm):
    base = f"pretrained={tiny_llama},prm={tiny_prm},strategy=best_of_n"
    hf = result_identity(parse_model_args(base))
    assert not any(k in hf for k in ("prm_backend", "prm_model", "prm_max_model_len"))
    assert result_identity(parse_model_args(base + ",prm_backend=hf")) == hf
    on_vllm = result_identity(parse_model_args(base + ",prm_backend=vllm"))
    assert on_vllm["prm_backend"] == "vllm" and on_vllm != hf
    # placement: the server's address and memory shares are not part of it
    a = parse_model_args(base + ",prm_backend=openai,prm_base_url=http://a:1/v1,prm_timeout_s=5")
    b = parse_model_args(base + ",prm_backend=openai,prm_base_url=http://b:2/v1")
    assert result_identity(a) == result_identity(b)
    # a PRM on a server leaves the policy its default GPU share; a local PRM halves it
    assert a.engine.gpu_memory_utilization == 0.9
    assert parse_model_args(base).engine.gpu_memory_utilization == 0.5


# ----------------------------------------------------------------------------------------------
# vLLM in-process
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_prm_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm-prms")
    return {t: BUILDERS[t](root / DIR_NAMES[t]) for t in VLLM_TYPES}


@pytest.fixture(scope="module")
def vllm_prms(vllm_prm_dirs):
    """(vLLM PRM, transformers PRM without prefix reuse) per format vLLM runs, float32 both."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    mp.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    prms = {}
    try:
        for t, path in vllm_prm_dirs.items():
            config = PRMConfig(str(path), backend="vllm", dtype="float32", max_model_len=4096)
            prms[t] = (
                load_backend_prm(config),
                load_prm(str(path), device="cpu", dtype="float32", cache_bytes=0),
            )
        yield prms
    finally:
        for vl, _ in prms.values():
            vl.close()
            vl.close()  # idempotent
        mp.undo()


def _max_diff(got, ref) -> float:
    diffs = [0.0]
    for g, r in zip(got, ref, strict=True):
        assert len(g.step_scores) == len(r.step_scores)
        diffs += [abs(x - y) for x, y in zip(g.step_scores, r.step_scores, strict=True)]
    return max(diffs)


@pytest.mark.slow
@needs_vllm
@pytest.mark.parametrize("prm_type", VLLM_TYPES)
def test_vllm_scores_equal_the_transformers_scorer(prm_type, vllm_prms, capsys):
    vl, hf = vllm_prms[prm_type]
    assert vl.prm_type == prm_type
    golden = [PRMRequest(PROBLEM, STEPS[:k]) for k in range(1, len(STEPS) + 1)]
    golden.append(PRMRequest(PROBLEM, ()))
    worst = _max_diff(vl.score(golden), hf.score(golden))
    for call in _beam_workload():
        worst = max(worst, _max_diff(vl.score(call), hf.score(call)))
    with capsys.disabled():
        print(f"\n{prm_type}: max |vllm - hf| step score = {worst:.2e}")
    assert worst <= TOLERANCE
    # the scores spread: a misread position would not pass the comparison by chance
    assert len({round(s, 4) for s in hf.score(golden[-2:-1])[0].step_scores}) == len(STEPS)


@pytest.mark.slow
@needs_vllm
@pytest.mark.parametrize("prm_type", ["rlhflow", "token_classification"])
def test_step_prefixes_of_a_solution_are_served_from_vllms_prefix_cache(prm_type, vllm_prms):
    """A solution's k step prefixes in one call cost about one pass (vLLM serves blocks of one
    request to another of the same batch); a child of a scored parent costs its new tokens.
    Label reads and pooling-head reads alike."""
    vl, hf = vllm_prms[prm_type]
    scorer = vl.scorer
    problem_text = "A fresh problem nobody scored: what is $3 \\cdot 7$?"
    formatted = vl.render(PRMRequest(problem_text, STEPS))
    prefixes = sum(p + 1 for p in formatted.read_positions)
    scorer.counters.reset()
    [out] = vl.score([PRMRequest(problem_text, STEPS)])
    c = scorer.counters
    assert c.reads == len(STEPS) and c.queried == prefixes and c.unknown == 0
    assert out.tokens_processed == c.prefilled
    # one pass over the solution plus less than one 32-token block per step
    assert out.tokens_processed < len(formatted.token_ids) + 32 * len(STEPS) < prefixes
    # a child of that solution: only its new step (and the partial block before it) is run
    child = PRMRequest(problem_text, (*STEPS, "## Step 6: Double-check: $21$."))
    [grown] = vl.score([child])
    new = len(vl.render(child).token_ids) - len(formatted.token_ids)
    assert grown.tokens_processed <= new + 32
    assert _max_diff([grown], hf.score([child])) <= TOLERANCE


@pytest.mark.slow
@needs_vllm
@pytest.mark.parametrize("strategy", ["best_of_n", "beam_search"])
def test_searches_run_with_the_vllm_prm_and_select_as_with_hf(strategy, vllm_prms):
    vl, hf = vllm_prms["math_shepherd"]
    problems = [problem(f"p{i}", f"Problem {i}: what is {i} + {i}?") for i in range(3)]
    tree = {"beam_width": 2} if strategy == "beam_search" else {}
    config = SearchConfig(strategy=strategy, n=4, num_iterations=4, seed=3, **tree)
    results = {}
    for name, prm in (("vllm", vl), ("hf", hf)):
        results[name] = run_search(config, problems, RandomEngine(), prm, FakeAnswerSpec())
    for got, ref in zip(results["vllm"], results["hf"], strict=True):
        assert [c.steps for c in got.candidates] == [c.steps for c in ref.candidates]
        for g, r in zip(got.candidates, ref.candidates, strict=True):
            diffs = [abs(a - b) for a, b in zip(g.step_scores, r.step_scores, strict=True)]
            assert max(diffs, default=0.0) <= TOLERANCE
        assert got.selected == ref.selected is not None
        assert got.cost.prm_tokens > 0


# ----------------------------------------------------------------------------------------------
# A vLLM server (prm_backend=openai)
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def prm_server(vllm_servers, vllm_prm_dirs):
    return vllm_servers.serve(vllm_prm_dirs["rlhflow"])


@pytest.mark.slow
@pytest.mark.vllm
def test_openai_backend_scores_equal_the_transformers_scorer(prm_server, vllm_prm_dirs, capsys):
    path = vllm_prm_dirs["rlhflow"]
    config = PRMConfig(str(path), backend="openai", base_url=prm_server.base_url)
    remote = load_backend_prm(config)
    hf = load_prm(str(path), device="cpu", dtype="float32", cache_bytes=0)
    try:
        golden = [PRMRequest(PROBLEM, STEPS[:k]) for k in range(1, len(STEPS) + 1)]
        worst = _max_diff(remote.score(golden), hf.score(golden))
        for call in _beam_workload(rounds=2):
            worst = max(worst, _max_diff(remote.score(call), hf.score(call)))
        with capsys.disabled():
            print(f"\nrlhflow on a server: max |openai - hf| step score = {worst:.2e}")
        assert worst <= TOLERANCE
        # the server's prefix cache serves the shared prefixes (usage.prompt_tokens_details)
        c = remote.scorer.counters
        assert c.unknown == 0 and c.cached > 0.3 * c.queried
        reads = c.reads
        [again] = remote.score([golden[-1]])
        assert again.tokens_processed == 0 and c.reads == reads  # read before: not sent again
    finally:
        remote.close()
        remote.close()


@pytest.mark.slow
@pytest.mark.vllm
def test_openai_backend_start_up_checks_are_one_line(prm_server, vllm_prm_dirs, tmp_path):
    from tiny_models import build_tokenizer
    from vllm_server import free_port

    path = vllm_prm_dirs["rlhflow"]
    url = prm_server.base_url
    cases = []
    down = f"http://127.0.0.1:{free_port()}/v1"
    cases.append(
        (
            PRMConfig(str(path), backend="openai", base_url=down, max_retries=0),
            f"model_args prm_base_url={down} is invalid; accepted: the URL of a running",
        )
    )
    cases.append(
        (
            PRMConfig(str(path), backend="openai", base_url=url, model="nope"),
            "model_args prm_model=nope is invalid; accepted: a model the server at "
            f"prm_base_url={url} serves: {path}",
        )
    )
    other = tmp_path / DIR_NAMES["rlhflow"]
    build_tokenizer(other, vocab_size=300)
    shutil.copy(path / "config.json", other / "config.json")
    cases.append(
        (
            PRMConfig(str(other), backend="openai", base_url=url),
            f"model_args prm={other} is invalid; accepted: the tokenizer of the model the server "
            f"serves ({path})",
        )
    )
    for config, start in cases:
        with pytest.raises(SettingError) as info:
            load_backend_prm(config)
        assert _one_line(info.value).startswith(start), str(info.value)
