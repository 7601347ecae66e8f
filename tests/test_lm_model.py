"""The lm-eval ``tts`` model: prompts, per-request settings, skipped prompts, the response cache
namespace, lm-eval flags, and end-to-end CLI runs."""

from __future__ import annotations

import json

import pytest
from lm_eval.api.instance import Instance
from lm_eval_cli import run_lm_eval

from tts_eval.chats import CHAT_TAG, context_to_messages, problem_text
from tts_eval.lm_model import TTSLM, close_open_models, truncate_at
from tts_eval.model_args import LM_EVAL_FLAGS, parse_model_args
from tts_eval.prompts import DESCRIPTION_SEPARATOR, SYSTEM_PROMPT
from tts_eval.search import SearchConfig
from tts_eval.types import Candidate, Cost, FinishReason, SearchResult

PROBLEM = "What is $1+1$?"


def test_chat_template_returns_the_rendered_prompt_and_keeps_its_messages(tiny_llama):
    lm = TTSLM(config=parse_model_args(f"pretrained={tiny_llama},eager_load=false"))
    msgs = [{"role": "system", "content": "sys\n\n"}, {"role": "user", "content": PROBLEM}]
    text = lm.apply_chat_template(msgs)
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nsys<|eot_id|>"
        f"<|start_header_id|>user<|end_header_id|>\n\n{PROBLEM}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert lm._messages(text) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": PROBLEM},
    ]
    assert "start_header_id" in lm.chat_template(True) and lm.chat_template(False) is None


def test_chat_template_shows_the_system_prompt_model_arg(tiny_llama):
    lm = TTSLM(
        config=parse_model_args(f"pretrained={tiny_llama},eager_load=false,system_prompt=Hi")
    )
    chat = [{"role": "system", "content": "Old rules."}, {"role": "user", "content": "q"}]
    text = lm.apply_chat_template(chat)
    assert "system<|end_header_id|>\n\nHi<|eot_id|>" in text and "Old rules." not in text
    assert lm._messages(text)[0] == {"role": "system", "content": "Hi"}


def test_tagged_context_of_earlier_versions_is_still_understood():
    msgs = [{"role": "system", "content": "sys\n\n"}, {"role": "user", "content": PROBLEM}]
    assert context_to_messages(CHAT_TAG + json.dumps(msgs)) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": PROBLEM},
    ]


def test_plain_context_with_math500_description_splits_into_system_and_user():
    ctx = SYSTEM_PROMPT + DESCRIPTION_SEPARATOR + PROBLEM
    assert context_to_messages(ctx) == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": PROBLEM},
    ]


def test_plain_context_of_another_task_is_one_user_turn_and_system_prompt_overrides():
    assert context_to_messages("Q: 2+2?\nA:") == [{"role": "user", "content": "Q: 2+2?\nA:"}]
    msgs = context_to_messages(SYSTEM_PROMPT + DESCRIPTION_SEPARATOR + PROBLEM, "Be brief.")
    assert msgs == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": PROBLEM},
    ]
    assert problem_text(msgs) == PROBLEM
    with pytest.raises(ValueError, match="no user message"):
        problem_text([{"role": "system", "content": "x"}])


@pytest.mark.parametrize(
    ("text", "until", "expected"),
    [("abc<|eot|>def", ["<|eot|>"], "abc"), ("abc", [], "abc"), ("a\nb;c", [";", "\n"], "a")],
)
def test_truncate_at(text, until, expected):
    assert truncate_at(text, until) == expected


def test_loglikelihood_is_a_clear_not_supported_error():
    lm = TTSLM.__new__(TTSLM)
    with pytest.raises(NotImplementedError, match="only supports generation tasks"):
        lm.loglikelihood([])
    with pytest.raises(NotImplementedError, match="loglikelihood_rolling is not supported"):
        lm.loglikelihood_rolling([])


def test_bad_model_args_fail_before_loading_anything():
    with pytest.raises(ValueError, match="unknown model_args key 'temprature'"):
        TTSLM.create_from_arg_string("pretrained=/nonexistent/model,temprature=0.5")


@pytest.mark.slow
def test_lm_eval_cli_plain_sampling_on_tiny_model(tiny_llama, math500_path, tmp_path):
    out = tmp_path / "out"
    traces = tmp_path / "traces.jsonl"
    proc = run_lm_eval(
        [
            "--model", "tts",
            "--model_args",
            f"pretrained={tiny_llama},backend=hf,max_tokens=16,seed=1,trace_path={traces}",
            "--tasks", "math500", "--limit", "5",
            "--output_path", str(out), "--log_samples",
        ],
        {"TTS_EVAL_MATH500": str(math500_path)},
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    (results_file,) = list(out.rglob("results_*.json"))
    results = json.loads(results_file.read_text())["results"]["math500"]
    assert results["exact_match,none"] == 0.0
    assert "math500" in proc.stdout and "exact_match" in proc.stdout
    records = [json.loads(line) for line in traces.read_text().splitlines()]
    assert len(records) == 5
    assert all(r["strategy"] == "majority" and len(r["candidates"]) == 1 for r in records)
    assert all(r["cost"]["policy_tokens"] > 0 for r in records)


@pytest.mark.slow
def test_tts_eval_eval_command_registers_explicitly_with_the_hook_off(
    tiny_llama, math500_path, tmp_path
):
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "tts-eval"
    out = tmp_path / "out"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TTS_EVAL_NO_LM_EVAL_HOOK": "1",
        "TTS_EVAL_MATH500": str(math500_path),
    }
    cmd = [
        str(exe), "eval", "--model", "tts",
        "--model_args", f"pretrained={tiny_llama},backend=hf,max_tokens=8",
        "--tasks", "math500", "--limit", "1", "--output_path", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (results_file,) = list(out.rglob("results_*.json"))
    table = json.loads(results_file.read_text())["results"]["math500"]
    assert table["exact_match,none"] == 0.0 and table["tts_trace,none"] == 1


@pytest.mark.slow
def test_out_of_memory_in_policy_or_prm_is_one_line_naming_the_knob(
    tiny_llama, tiny_prm, monkeypatch
):
    import torch

    from tts_eval.engines import load_engine
    from tts_eval.errors import OutOfMemoryError
    from tts_eval.prm import load_prm
    from tts_eval.types import GenerationRequest, PRMRequest, SamplingParams

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    engine = load_engine("hf", str(tiny_llama), dtype="float32", batch_size=4)
    monkeypatch.setattr(engine, "_forward", oom)
    request = GenerationRequest(tuple(engine.render_prompt([{"role": "user", "content": "1+1?"}])),
                                SamplingParams(n=2, max_tokens=8))  # fmt: skip
    with pytest.raises(OutOfMemoryError) as err:
        engine.generate([request])
    assert "batch_size=4" in str(err.value) and "\n" not in str(err.value)

    prm = load_prm(str(tiny_prm), "rlhflow", batch_tokens=512)
    monkeypatch.setattr(prm.scorer, "run", oom)
    with pytest.raises(OutOfMemoryError) as err:
        prm.score([PRMRequest("1+1?", ("2",))])
    assert "prm_batch_tokens=512" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------ generate_until on a fake searcher


class FakeSearcher:
    """A Searcher whose prompt has one token per character of the problem; it records calls."""

    tokenizer = None  # no chat template: prompts show as plain <|role|> turns

    def __init__(self, max_model_len: int | None = None) -> None:
        self.max_model_len = max_model_len
        self.calls: list[tuple[list[str], SearchConfig]] = []
        self.problems: list = []
        self.closed = False

    def render_prompt(self, messages):
        return list(range(len(messages[-1]["content"])))

    def search(self, problems, config, *, progress=False):
        self.calls.append(([p.uid for p in problems], config))
        self.problems += problems
        candidate = Candidate(("\\boxed{1}",), (0.5,), FinishReason.EOS, True, answer="1")
        return [
            SearchResult(p.uid, config.strategy, (candidate,), 0, Cost(policy_tokens=1), {})
            for p in problems
        ]

    def close(self) -> None:
        self.closed = True


def request(doc_id: int, problem: str, **gen_kwargs) -> Instance:
    return Instance(
        request_type="generate_until",
        doc={"problem": problem},
        arguments=(problem, {"until": [], **gen_kwargs}),
        idx=0,
        metadata=("math500", doc_id, 1),
    )


def test_over_long_prompts_are_recorded_as_failed_and_the_run_goes_on(caplog):
    searcher = FakeSearcher(max_model_len=10)
    lm = TTSLM(config=parse_model_args("pretrained=m"), searcher=searcher)
    caplog.set_level("WARNING", logger="tts_eval.lm_model")
    out = lm.generate_until([request(0, "x" * 5), request(1, "y" * 20), request(2, "z" * 8)])
    assert [str(o) for o in out] == ["\\boxed{1}", "", "\\boxed{1}"]
    assert [uids for uids, _ in searcher.calls] == [["math500/0", "math500/2"]]
    skipped = out[1].trace
    assert skipped.candidates == () and skipped.selected is None
    assert (
        skipped.settings["skipped"] == "prompt of 20 tokens leaves no room under max_model_len=10"
    )
    assert "1 of 3 requests not searched, recorded as failed" in caplog.text
    assert "math500 doc 1 (20 tokens)" in caplog.text


def test_task_max_gen_toks_sets_max_tokens_only_when_nobody_did(caplog):
    caplog.set_level("INFO", logger="tts_eval.lm_model")
    searcher = FakeSearcher()
    lm = TTSLM(config=parse_model_args("pretrained=m"), searcher=searcher)
    lm.generate_until(
        [request(0, "a", max_gen_toks=32, do_sample=False), request(1, "b", max_gen_toks=64)]
    )
    assert [(uids, c.max_tokens) for uids, c in searcher.calls] == [
        (["math500/0"], 32),
        (["math500/1"], 64),
    ]
    assert "task generation_kwargs: max_gen_toks=32 -> max_tokens=32" in caplog.text
    assert "not used by the search" in caplog.text and "do_sample=False" in caplog.text

    searcher = FakeSearcher()
    lm = TTSLM(config=parse_model_args("pretrained=m,max_tokens=16"), searcher=searcher)
    lm.generate_until([request(0, "a", max_gen_toks=32), request(1, "b", max_gen_toks=64)])
    assert [(uids, c.max_tokens) for uids, c in searcher.calls] == [
        (["math500/0", "math500/1"], 16)
    ]


def test_response_cache_is_keyed_by_settings(tmp_path):
    from lm_eval.api.model import CachingLM

    def cached_run(args: str) -> tuple[FakeSearcher, list]:
        searcher = FakeSearcher()
        lm = CachingLM(TTSLM(config=parse_model_args(args), searcher=searcher), str(tmp_path / "c"))
        return searcher, lm.generate_until([request(0, "a"), request(1, "b")])

    first, out = cached_run("pretrained=m,n=2,trace_path=" + str(tmp_path / "t.jsonl"))
    assert len(first.calls) == 1 and out[0].trace.uid == "math500/0"
    again, cached = cached_run("pretrained=m,n=2")  # trace_path changes nothing searched
    assert again.calls == [] and [str(o) for o in cached] == [str(o) for o in out]
    assert cached[0].trace == out[0].trace  # the trace survives the cache
    for other in ("pretrained=m,n=4", "pretrained=m,n=2,max_tokens=8", "pretrained=m,n=2,seed=1"):
        searcher, _ = cached_run(other)
        assert len(searcher.calls) == 1, other


def test_lm_eval_flags_are_read_when_lm_eval_creates_the_model():
    token = LM_EVAL_FLAGS.set({"seed": 3, "gen_kwargs": {"max_gen_toks": 9}})
    try:
        lm = TTSLM.create_from_arg_string("pretrained=m,eager_load=false", {"batch_size": "4"})
    finally:
        LM_EVAL_FLAGS.reset(token)
    s = lm.config.search
    assert (s.seed, s.max_tokens, lm.config.engine.batch_size) == (3, 9, 4)
    assert lm._flag_gen_kwargs == {"max_gen_toks"}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {"cache_requests": True, "apply_chat_template": True},
            "lm_eval --cache_requests with --apply_chat_template is not supported by --model tts",
        ),
        (
            {"apply_chat_template": "chatml"},
            "lm_eval --apply_chat_template=chatml is invalid; accepted: the flag alone",
        ),
    ],
)
def test_lm_eval_flags_that_cannot_work_are_refused(flags, message):
    token = LM_EVAL_FLAGS.set(flags)
    try:
        with pytest.raises(ValueError, match=message):
            TTSLM.create_from_arg_obj({"pretrained": "m", "eager_load": False})
    finally:
        LM_EVAL_FLAGS.reset(token)


def test_close_open_models_closes_the_searchers_models_opened(monkeypatch):
    import tts_eval.runtime

    opened = FakeSearcher()
    monkeypatch.setattr(tts_eval.runtime, "open_searcher", lambda config: opened)
    lm = TTSLM(config=parse_model_args("pretrained=m,eager_load=false"))
    borrowed = FakeSearcher()
    TTSLM(config=parse_model_args("pretrained=m,eager_load=false"), searcher=borrowed)
    lm.generate_until([request(0, "a")])
    assert close_open_models() == 1 and opened.closed and not borrowed.closed
    assert close_open_models() == 0


def test_chat_template_without_a_policy_tokenizer_is_plain_readable_text():
    searcher = FakeSearcher()
    lm = TTSLM(config=parse_model_args("pretrained=fake/policy"), searcher=searcher)
    chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}]
    text = lm.apply_chat_template(chat)
    assert text == "<|system|>\nS\n<|user|>\nQ?\n<|assistant|>\n"
    lm.generate_until([request(0, text)])
    assert [p.text for p in searcher.problems] == ["Q?"]
