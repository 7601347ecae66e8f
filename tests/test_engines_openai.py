"""``backend=openai`` against a real vLLM OpenAI-compatible server (``tests/vllm_server.py``).

The server serves the scripted tiny Llama (steps, EOS and boxed answers, so every finish reason
occurs) with the in-process engine's settings; its outputs must equal the in-process
``backend=vllm`` engine's exactly (greedy and seeded: token ids, texts, finish reasons). A small
HTTP proxy (:class:`Proxy`) between the engine and the server fails, delays or strips answers on
demand, to check retries, timeouts, the API key, the concurrency bound and the start-up checks.
Near the end, one test kills the server in the middle of a ``tts-eval sweep`` and restarts it:
one-line error, then the re-run finishes with nothing lost and the results of an uninterrupted
sweep; the last one serves the real SmolLM2 model instead (where it is available).

The fast tests at the top need no server: settings, the results fingerprint, an unreachable host.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from vllm_server import free_port

from tts_eval.config import results_fingerprint
from tts_eval.engines import load_engine
from tts_eval.engines.chat import render_chat
from tts_eval.engines.openai import classify_choice
from tts_eval.errors import EngineError
from tts_eval.model_args import parse_model_args
from tts_eval.runtime.local import LocalSearcher
from tts_eval.settings import EngineConfig
from tts_eval.types import FinishReason, GenerationRequest, SamplingParams

ROOT = Path(__file__).resolve().parents[1]
MAX_LEN = 4096
QUESTIONS = ["What is 2+3?", "Solve $x^2 - 4 = 0$ for $x$.", "Hi", "What is 2+3? " * 40]

# ----------------------------------------------------------------------------------------------
# Settings (no server)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "model_args base_url is required with backend=openai; accepted: the server's /v1 URL"),
        ({"base_url": "localhost:8000"}, "model_args base_url=localhost:8000 is invalid; accepted"),
        (
            {"base_url": "http://h/v1", "max_concurrency": 0},
            "model_args max_concurrency=0 is invalid",
        ),
        (
            {"base_url": "http://h/v1", "timeout_s": 0},
            "model_args timeout_s=0 is invalid; accepted: seconds",
        ),
        ({"base_url": "http://h/v1", "max_retries": -1}, "model_args max_retries=-1 is invalid"),
        ({"base_url": "http://h/v1", "model": ""}, "model_args model='' is invalid"),
    ],
)
def test_openai_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError) as info:
        EngineConfig(pretrained="org/tok", backend="openai", **kwargs)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "key, value", [("base_url", "http://h/v1"), ("model", "m"), ("api_key", "sk-secret")]
)
def test_openai_keys_need_backend_openai(key, value):
    with pytest.raises(ValueError) as info:
        parse_model_args({"pretrained": "org/tok", "backend": "vllm", key: value})
    assert "is invalid; accepted: only with backend=openai" in str(info.value)
    assert "sk-secret" not in str(info.value)


def test_model_args_build_an_openai_engine_config():
    config = parse_model_args(
        "pretrained=org/tok,backend=openai,base_url=http://h:8000/v1,model=served,"
        "max_concurrency=8,timeout_s=30,max_retries=2,api_key=sk-secret"
    ).engine
    assert (config.base_url, config.model, config.max_concurrency) == (
        "http://h:8000/v1",
        "served",
        8,
    )
    assert (config.timeout_s, config.max_retries, config.api_key) == (30.0, 2, "sk-secret")
    assert "sk-secret" not in repr(config)


def test_deterministic_is_a_setting_of_one_client():
    args = "pretrained=org/tok,backend=openai,base_url=http://h/v1"
    assert parse_model_args(f"{args},deterministic=true").engine.deterministic is True
    assert parse_model_args(args).engine.deterministic is False
    for bad, message in [
        (
            {"backend": "vllm", "deterministic": True},
            "model_args deterministic=True is invalid; accepted: only with backend=openai",
        ),
        (
            {"deterministic": True, "data_parallel_size": 2},
            "model_args deterministic=true is invalid; accepted: only with data_parallel_size=1 "
            "(K workers would interleave their requests on the server)",
        ),
    ]:
        config = {"pretrained": "org/tok", "backend": "openai", "base_url": "http://h/v1", **bad}
        if config["backend"] == "vllm":
            del config["base_url"]
        with pytest.raises(ValueError) as info:
            parse_model_args(config)
        assert str(info.value) == message
    base = parse_model_args(args)
    det = dataclasses.replace(base, engine=dataclasses.replace(base.engine, deterministic=True))
    assert results_fingerprint(det) != results_fingerprint(base)


class _Answer:
    def __init__(self, status: int, body: object) -> None:
        self.status_code, self._body = status, body

    def json(self):
        return self._body


class _Server:
    """Answers POST /reset_prefix_cache as a vLLM server would (or one without dev mode)."""

    def __init__(self, answer: _Answer) -> None:
        self.answer, self.urls = answer, []

    def post(self, url):
        self.urls.append(url)
        return self.answer


@pytest.mark.parametrize(
    ("answer", "reset", "warning"),
    [
        (_Answer(200, {"success": True}), True, None),
        (_Answer(404, {"detail": "Not Found"}), False, "HTTP 404; start vLLM with VLLM_SERVER"),
        (_Answer(200, {"success": False}), False, "it holds blocks of requests in flight"),
    ],
)
def test_deterministic_start_resets_the_servers_prefix_cache(answer, reset, warning, caplog):
    from tts_eval.engines.openai import reset_prefix_cache

    config = EngineConfig("org/tok", "openai", base_url="http://h:8000/v1", deterministic=True)
    server = _Server(answer)
    with caplog.at_level("WARNING", logger="tts_eval.engines.openai"):
        assert reset_prefix_cache(server, config) is reset
    assert server.urls == ["http://h:8000/reset_prefix_cache"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if warning is None:
        assert warnings == []
    else:
        (line,) = warnings
        assert warning in line and line.endswith(
            "a re-run reproduces this run only against a server started afresh for each run"
        )


class _Client:
    def close(self) -> None:
        self.closed = True


def test_the_engine_implements_the_policy_engine_protocol(monkeypatch):
    """What the searches check before running (``isinstance(engine, PolicyEngine)``), with the
    server's start-up answered by hand: a missing attribute fails every search with TypeError."""
    from tts_eval.engines import openai
    from tts_eval.types import PolicyEngine

    monkeypatch.setattr(openai, "load_tokenizer", lambda config: "tokenizer")
    monkeypatch.setattr(openai, "make_client", lambda config: _Client())
    monkeypatch.setattr(openai, "connect", lambda *a: openai.ServerInfo("org/m", 4096, None))
    engine = openai.OpenAIEngine(
        EngineConfig("org/tok", "openai", base_url="http://h/v1", max_model_len=1024)
    )
    assert isinstance(engine, PolicyEngine)
    assert (engine.tokenizer, engine.max_model_len, engine.device) == ("tokenizer", 1024, None)
    engine.close()
    engine.close()  # idempotent
    assert engine._client.closed


def test_fingerprint_ignores_where_the_server_is_but_not_the_model():
    base = parse_model_args("pretrained=org/tok,backend=openai,base_url=http://a:1/v1,model=m")
    moved = dataclasses.replace(
        base,
        engine=dataclasses.replace(
            base.engine, base_url="http://b:2/v1", api_key="k", max_concurrency=3, timeout_s=9.0
        ),
    )
    other = dataclasses.replace(base, engine=dataclasses.replace(base.engine, model="m2"))
    assert results_fingerprint(moved) == results_fingerprint(base)
    assert results_fingerprint(other) != results_fingerprint(base)


@pytest.mark.parametrize(
    "choice, expected",
    [
        ({"finish_reason": "stop", "stop_reason": "\n\n"}, FinishReason.STEP),
        ({"finish_reason": "stop", "stop_reason": None}, FinishReason.EOS),
        ({"finish_reason": "stop", "stop_reason": 7}, FinishReason.EOS),
        ({"finish_reason": "length", "stop_reason": None}, FinishReason.LENGTH),
        ({"finish_reason": "stop", "matched_stop": "\n\n"}, FinishReason.STEP),  # SGLang
        ({"finish_reason": "stop", "matched_stop": 2}, FinishReason.EOS),
    ],
)
def test_classify_choice(choice, expected):
    assert classify_choice(choice) is expected


def test_unreachable_host_is_one_line_error_before_the_prm_loads(tiny_llama, tiny_prm, monkeypatch):
    import tts_eval.runtime.local as local

    def no_prm(config):
        raise AssertionError("the PRM must not load before the server is checked")

    monkeypatch.setattr(local, "load_prm", no_prm)
    url = f"http://127.0.0.1:{free_port()}/v1"
    config = parse_model_args(
        f"pretrained={tiny_llama},backend=openai,base_url={url},prm={tiny_prm},prm_type=rlhflow"
    )
    with pytest.raises(ValueError) as info:
        LocalSearcher.from_config(config)
    text = str(info.value)
    assert text.startswith(f"model_args base_url={url} is invalid; accepted: the URL of a running")
    assert "nothing answers there (ConnectError" in text and "\n" not in text


# ----------------------------------------------------------------------------------------------
# A proxy in front of the server
# ----------------------------------------------------------------------------------------------


class Proxy:
    """Forwards to the server; can answer the next completions with errors, delay them, strip
    their token ids, and counts them (and the most in flight at once)."""

    def __init__(self, upstream_base_url: str) -> None:
        self.upstream = upstream_base_url.rstrip("/").removesuffix("/v1")
        self.failures: list[tuple[int, dict[str, str]]] = []
        self.delay = 0.0
        self.strip_token_ids = False
        self.no_tokenize = False  # answer /tokenize with 404, as servers other than vLLM do
        self.inject: dict = {}  # merged into every /completions body on its way to the server
        self.arrivals: list[dict] = []  # /completions bodies as they arrived (with inject)
        self.answers: list[tuple[dict, dict]] = []  # (body, answer) of successful completions
        self.paths: list[str] = []  # paths of the other POSTs, in order
        self.required_key: str | None = None  # answer 401 to requests without this bearer key
        self.keys: list[str | None] = []  # the Authorization header of every request
        self.posts = 0
        self.inflight = 0
        self.max_inflight = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self._authorized():
                    self._forward(None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not self._authorized():
                    return
                if self.path.endswith("/completions"):
                    proxy._completion(self, body)
                elif self.path.endswith("/tokenize") and proxy.no_tokenize:
                    self._send(404, b'{"detail": "Not Found"}')
                else:
                    proxy.paths.append(self.path)
                    self._forward(body)

            def _authorized(self) -> bool:
                key = self.headers.get("Authorization")
                proxy.keys.append(key)
                if proxy.required_key is None or key == f"Bearer {proxy.required_key}":
                    return True
                self._send(401, json.dumps({"error": {"message": "bad key"}}).encode())
                return False

            def _forward(self, body):
                self._send(*self._fetch(body))

            def _fetch(self, body, edit=None) -> tuple[int, bytes]:
                req = urllib.request.Request(
                    proxy.upstream + self.path,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    method=self.command,
                )
                try:
                    with urllib.request.urlopen(req, timeout=300) as r:
                        status, data = r.status, r.read()
                except urllib.error.HTTPError as exc:
                    status, data = exc.code, exc.read()
                if edit is not None and status == 200:
                    data = edit(data)
                return status, data

            def _send(self, status, data, headers=None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def _completion(self, handler, body: bytes) -> None:
        if self.inject:
            body = json.dumps({**json.loads(body), **self.inject}).encode()
        with self.lock:
            self.arrivals.append(json.loads(body))
            self.posts += 1
            failure = self.failures.pop(0) if self.failures else None
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if failure is not None:
                status, headers = failure
                message = json.dumps({"error": {"message": f"proxy says {status}"}}).encode()
                answer = (status, message, headers)
            else:
                time.sleep(self.delay)
                answer = (
                    *handler._fetch(body, self._strip if self.strip_token_ids else None),
                    None,
                )
                if answer[0] == 200:
                    with self.lock:
                        self.answers.append((json.loads(body), json.loads(answer[1])))
        finally:
            with self.lock:  # before answering: the client may send its next request at once
                self.inflight -= 1
        handler._send(*answer)

    @staticmethod
    def _strip(data: bytes) -> bytes:
        answer = json.loads(data)
        for choice in answer["choices"]:
            choice.pop("token_ids", None)
        return json.dumps(answer).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ----------------------------------------------------------------------------------------------
# Against the real server
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inproc(scripted_llama):
    """The in-process backend=vllm engine on the served model, with the server's settings."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    mp.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    engine = load_engine(
        "vllm", str(scripted_llama), dtype="float32", seed=0, max_model_len=MAX_LEN
    )
    yield engine
    engine.close()
    mp.undo()


@pytest.fixture
def remote(vllm_server, scripted_llama):
    engine = load_engine("openai", str(scripted_llama), base_url=vllm_server.base_url)
    yield engine
    engine.close()


@pytest.fixture
def proxy(vllm_server):
    p = Proxy(vllm_server.base_url)
    yield p
    p.close()


def prompts(engine) -> list[tuple[int, ...]]:
    return [tuple(engine.render_prompt([{"role": "user", "content": q}])) for q in QUESTIONS]


@pytest.mark.slow
@pytest.mark.vllm
def test_outputs_equal_in_process_vllm(remote, inproc):
    ps = prompts(remote)
    assert ps == prompts(inproc)
    greedy = [
        GenerationRequest(ps[0], SamplingParams(temperature=0, max_tokens=20, stop=("\n\n",))),
        GenerationRequest(ps[1], SamplingParams(temperature=0, max_tokens=3)),
        GenerationRequest(ps[3], SamplingParams(temperature=0, max_tokens=20)),
    ]
    seeded = [
        GenerationRequest(
            p, SamplingParams(n=4, temperature=1.0, max_tokens=24, stop=("\n\n",), seed=s)
        )
        for s, p in enumerate(ps)
    ]
    requests = greedy + seeded
    want = inproc.generate(requests)
    got = remote.generate(requests)
    for w, g in zip(want, got, strict=True):
        assert [c.token_ids for c in g.completions] == [c.token_ids for c in w.completions]
        assert [c.finish_reason for c in g.completions] == [c.finish_reason for c in w.completions]
        assert [c.text for c in g.completions] == [c.text for c in w.completions]
        assert g.prompt_tokens == w.prompt_tokens
    reasons = {c.finish_reason for out in got for c in out.completions}
    assert reasons == {FinishReason.STEP, FinishReason.EOS, FinishReason.LENGTH}
    assert got[0].completions[0].finish_reason is FinishReason.STEP
    assert got[1].completions[0].finish_reason is FinishReason.LENGTH

    # a partial solution continues by its token ids, exactly as in-process
    first = got[3].completions[0]
    cont = GenerationRequest(ps[0] + first.token_ids, seeded[0].params)
    assert remote.generate([cont]) == inproc.generate([cont])


@pytest.mark.slow
@pytest.mark.vllm
def test_prefix_cache_and_max_model_len(remote, inproc):
    assert remote.max_model_len == MAX_LEN
    req = GenerationRequest(prompts(remote)[3], SamplingParams(temperature=0, max_tokens=2))
    remote.generate([req])
    again = remote.generate([req])[0]
    assert again.cached_prompt_tokens is not None
    assert 0 < again.cached_prompt_tokens <= again.prompt_tokens == len(req.prompt_ids)

    # max_tokens is cut to the room left, as the in-process engine stops there
    long = (prompts(remote)[3] * 200)[: MAX_LEN - 3]
    edge = GenerationRequest(long, SamplingParams(temperature=0, max_tokens=40))
    (got,) = remote.generate([edge])
    assert got.completions == inproc.generate([edge])[0].completions
    assert len(got.completions[0].token_ids) <= 3


@pytest.mark.slow
@pytest.mark.vllm
def test_bad_requests_fail_before_sending(vllm_server, scripted_llama, proxy):
    engine = load_engine("openai", str(scripted_llama), base_url=proxy.base_url)
    p = prompts(engine)[0]
    for request, message in [
        (GenerationRequest((), SamplingParams()), "prompt_ids is empty"),
        (GenerationRequest(p, SamplingParams(stop=("",))), "non-empty strings"),
        (
            GenerationRequest((p * 400)[:MAX_LEN], SamplingParams()),
            f"leaves no room under max_model_len={MAX_LEN}",
        ),
    ]:
        with pytest.raises(ValueError, match=message):
            engine.generate([GenerationRequest(p, SamplingParams(max_tokens=2)), request])
    assert proxy.posts == 1  # the start-up probe only
    engine.close()


@pytest.mark.slow
@pytest.mark.vllm
def test_requests_go_out_concurrently_up_to_max_concurrency(scripted_llama, proxy):
    engine = load_engine("openai", str(scripted_llama), base_url=proxy.base_url, max_concurrency=3)
    proxy.delay = 0.3
    p = prompts(engine)[1]
    requests = [GenerationRequest(p, SamplingParams(max_tokens=4, seed=i)) for i in range(8)]
    t0 = time.perf_counter()
    out = engine.generate(requests)
    elapsed = time.perf_counter() - t0
    assert len(out) == 8 and all(len(o.completions) == 1 for o in out)
    assert proxy.max_inflight == 3
    assert elapsed < 8 * 0.3  # not one after another
    engine.close()


@pytest.mark.slow
@pytest.mark.vllm
def test_5xx_and_429_are_retried_4xx_is_not(scripted_llama, proxy, remote):
    engine = load_engine("openai", str(scripted_llama), base_url=proxy.base_url, max_retries=2)
    p = prompts(engine)[2]
    # n=1: each sample is its own HTTP request, so one request sees every scripted failure
    request = GenerationRequest(p, SamplingParams(n=1, max_tokens=6, seed=4))
    proxy.failures = [(503, {}), (429, {"Retry-After": "0"})]
    before = proxy.posts
    assert engine.generate([request]) == remote.generate([request])
    assert proxy.posts - before == 3

    proxy.failures = [(503, {})] * 3  # more than max_retries=2
    with pytest.raises(EngineError) as info:
        engine.generate([request])
    text = str(info.value)
    assert text.startswith(
        f"policy engine backend=openai pretrained={scripted_llama} failed on request 0 of 1 "
        f"(prompt of {len(p)} tokens, n=1, seed=4): ServerUnavailable: HTTP 503 from "
        f"{proxy.base_url}/completions: proxy says 503; gave up after 2 retries; "
        f"server base_url={proxy.base_url} model={scripted_llama}"
    )
    assert f"server base_url={proxy.base_url}" in text and "\n" not in text

    proxy.failures = [(400, {})]
    before = proxy.posts
    with pytest.raises(EngineError, match="ServerRefused: HTTP 400 .*proxy says 400"):
        engine.generate([request])
    assert proxy.posts - before == 1
    engine.close()


@pytest.mark.slow
@pytest.mark.vllm
def test_progress_bar_follows_the_engine_setting(remote, capsys, monkeypatch):
    requests = [
        GenerationRequest(p, SamplingParams(n=2, max_tokens=4, seed=i))
        for i, p in enumerate(prompts(remote))
    ]
    monkeypatch.setattr(remote, "progress", True)
    shown = remote.generate(requests)
    err = capsys.readouterr().err
    assert "openai: 100%" in err and "8/8" in err and "req 4/4" in err
    monkeypatch.setattr(remote, "progress", False)
    again = remote.generate(requests)  # (cached prompt counts may differ, completions not)
    assert [o.completions for o in again] == [o.completions for o in shown]
    assert "openai" not in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.vllm
def test_timeout_is_one_line_error(scripted_llama, proxy):
    engine = load_engine("openai", str(scripted_llama), base_url=proxy.base_url, timeout_s=0.5)
    proxy.delay = 2.0
    request = GenerationRequest(prompts(engine)[0], SamplingParams(max_tokens=2, seed=1))
    before = proxy.posts
    with pytest.raises(EngineError) as info:
        engine.generate([request])
    assert "failed on request 0 of 1" in str(info.value)
    assert "RuntimeError: no answer within timeout_s=0.5 (ReadTimeout" in str(info.value)
    assert proxy.posts - before == 1  # a timeout is not retried
    engine.close()


@pytest.mark.slow
@pytest.mark.vllm
def test_api_key_from_model_args_or_the_environment(scripted_llama, proxy, monkeypatch):
    proxy.required_key = "sk-env"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    engine = load_engine("openai", str(scripted_llama), base_url=proxy.base_url)
    request = GenerationRequest(prompts(engine)[0], SamplingParams(max_tokens=2, seed=1))
    assert len(engine.generate([request])[0].completions) == 1
    engine.close()
    assert set(proxy.keys) == {"Bearer sk-env"}
    with pytest.raises(ValueError) as info:  # api_key= wins over the environment
        load_engine("openai", str(scripted_llama), base_url=proxy.base_url, api_key="sk-wrong")
    assert str(info.value) == (
        f"the server at base_url={proxy.base_url} refused the API key (HTTP 401: bad key); "
        "set api_key= or OPENAI_API_KEY"
    )


@pytest.mark.slow
@pytest.mark.vllm
def test_start_up_errors_are_one_line(vllm_server, scripted_llama, tiny_llama, proxy):
    served = str(scripted_llama)
    root = vllm_server.base_url.removesuffix("/v1")
    cases = [
        (
            {"base_url": vllm_server.base_url, "model": "nope"},
            f"model_args model=nope is invalid; accepted: a model the server at "
            f"base_url={vllm_server.base_url} serves: {served}",
        ),
        (
            {"base_url": root},
            f"model_args base_url={root} is invalid; accepted: the /v1 URL of an "
            "OpenAI-compatible server, e.g. http://localhost:8000/v1 (GET /models answered HTTP 404",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as info:
            load_engine("openai", served, **kwargs)
        assert str(info.value).startswith(message) and "\n" not in str(info.value)

    with pytest.raises(ValueError) as info:  # a tokenizer that is not the served model's
        load_engine("openai", str(tiny_llama), base_url=vllm_server.base_url)
    assert str(info.value).startswith(
        f"model_args pretrained={tiny_llama} is invalid; accepted: the tokenizer"
    )

    proxy.strip_token_ids = True  # a server without return_token_ids
    with pytest.raises(ValueError) as info:
        load_engine("openai", served, base_url=proxy.base_url)
    assert str(info.value) == (
        f"the server at base_url={proxy.base_url} (vLLM 0.32.0) returns no token ids; "
        'backend=openai needs "return_token_ids": true in /v1/completions (vLLM 0.10.2 or newer; '
        "start the server with python -m vllm.entrypoints.openai.api_server)"
    )


@pytest.mark.slow
@pytest.mark.vllm
def test_a_tokenizer_with_another_vocabulary_is_one_line_naming_both(
    vllm_server, scripted_llama, tmp_path, proxy
):
    """``pretrained=`` a tokenizer with a larger vocabulary than the served model's: the start-up
    check names both, before any of its token ids reaches the server (it answered the probe
    with "HTTP 400 ... Token id 1234 is out of vocabulary"). A server without ``/tokenize``
    cannot be asked; its refusal of the probe then asks whether the tokenizer is the model's."""
    from tiny_models import build_tokenizer
    from transformers import AutoTokenizer

    other = tmp_path / "other-tokenizer"
    tok = build_tokenizer(other, vocab_size=4096)
    served = len(AutoTokenizer.from_pretrained(scripted_llama))
    probe = render_chat(tok, [{"role": "user", "content": "Hi"}])
    assert max(probe) >= served  # what the probe would send: ids the served model does not have
    with pytest.raises(ValueError) as info:
        load_engine("openai", str(other), base_url=vllm_server.base_url)
    message = str(info.value)
    assert message.startswith(
        f"model_args pretrained={other} is invalid; accepted: the tokenizer of the model the "
        f"server serves ({scripted_llama}); the server tokenises "
    ), message
    assert "\n" not in message and "out of vocabulary" not in message
    proxy.no_tokenize = True
    with pytest.raises(ValueError) as info:
        load_engine("openai", str(other), base_url=proxy.base_url)
    message = str(info.value)
    assert "\n" not in message and "is out of vocabulary" in message, message
    assert message.endswith(f"; is pretrained={other} the tokenizer of {scripted_llama}?")


# ----------------------------------------------------------------------------------------------
# A server killed during a sweep, then restarted (last: it restarts the shared server)
# ----------------------------------------------------------------------------------------------

SWEEP_RUNS = ("best_of_n", "beam_search")


def write_sweep(folder: Path, out: Path, model_args: dict) -> Path:
    """A math500-format copy of the sample problems and a sweep recipe over it."""
    from tiny_models import SAMPLE_PROBLEMS

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "math500.jsonl").write_text(
        "".join(
            json.dumps(
                {"problem": p, "solution": "1", "answer": "1", "level": 1, "subject": "Algebra",
                 "unique_id": f"test/{i}.json"}
            ) + "\n"
            for i, p in enumerate(SAMPLE_PROBLEMS)
        )
    )  # fmt: skip
    recipe = folder / "recipe.yaml"
    sweep = {
        "strategies": list(SWEEP_RUNS),
        "budgets": [2],
        "output_dir": str(out),
        "chunk_size": 1,
    }
    recipe.write_text(json.dumps({"model_args": model_args, "sweep": sweep}))
    return recipe


def sweep_cmd(recipe: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "tts-eval"), "sweep", str(recipe), "--no-progress"]


def sweep_env(folder: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TTS_EVAL_MATH500": str(folder / "math500.jsonl")}


def records(out: Path) -> dict[str, list[str]]:
    runs = out / "runs"
    if not runs.is_dir():
        return {}
    return {p.name: p.read_text().splitlines(keepends=True) for p in sorted(runs.glob("*.jsonl"))}


def comparable(line: str) -> dict:
    """A trace record without what depends on timing or on cache states: the server's cached
    prompt tokens, and the PRM tokens actually run (the PRM's prefix cache starts empty in every
    process, so a resumed sweep runs more of them), with the FLOPs that count them."""
    record = json.loads(line)
    volatile = ("wall_time_s", "cached_prompt_tokens", "prm_tokens", "flops")
    cost = {k: v for k, v in record["cost"].items() if k not in volatile}
    return {**record, "cost": cost}


CHILD_WITH_A_SERVER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from vllm_server import VLLMServer
server = VLLMServer(sys.argv[2], Path(sys.argv[3])).start()
print(server.proc.pid, flush=True)
time.sleep(3600)
"""


@pytest.mark.slow
@pytest.mark.vllm
def test_a_server_dies_with_the_process_that_started_it(scripted_llama, tmp_path):
    """A test session killed outright (SIGKILL, or SIGTERM, which skips ``atexit``) leaves no
    server behind: the API server and its engine core (one process group) end with it."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_WITH_A_SERVER, str(ROOT / "tests"), str(scripted_llama),
         str(tmp_path / "server.log")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    group = None
    try:
        group = int(child.stdout.readline())  # the server leads its own process group
        os.killpg(group, 0)  # running
        child.kill()
        child.wait(timeout=30)
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the server outlived the process that started it by 90 s")
    finally:
        child.kill()
        if group is not None:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
@pytest.mark.vllm
def test_killed_server_fails_the_sweep_in_one_line_and_a_restart_resumes_it(
    vllm_server, scripted_llama, tiny_prm, tmp_path
):
    from tiny_models import SAMPLE_PROBLEMS

    model_args = {
        "pretrained": str(scripted_llama), "backend": "openai", "base_url": vllm_server.base_url,
        "max_retries": 1, "prm": str(tiny_prm), "prm_type": "rlhflow", "beam_width": 2,
        "num_iterations": 3, "max_tokens": 24, "seed": 7,
    }  # fmt: skip
    out = tmp_path / "out"
    recipe = write_sweep(tmp_path / "in", out, model_args)
    total = len(SWEEP_RUNS) * len(SAMPLE_PROBLEMS)
    log = tmp_path / "stderr.txt"
    with log.open("w") as err:
        proc = subprocess.Popen(
            sweep_cmd(recipe), stdout=subprocess.DEVNULL, stderr=err, env=sweep_env(tmp_path / "in")
        )
    try:
        deadline = time.time() + 600
        while sum(map(len, records(out).values())) < 2:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "the sweep recorded nothing within 600 s"
            time.sleep(0.05)
        vllm_server.kill()
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    before = records(out)
    recorded = sum(map(len, before.values()))
    assert 2 <= recorded < total
    assert proc.returncode == 2, log.read_text()[-3000:]
    last = log.read_text().rstrip("\n").splitlines()[-1]
    assert last.startswith(
        f"tts-eval sweep: error: policy engine backend=openai pretrained={scripted_llama} failed on "
    ), log.read_text()[-3000:]
    assert last.endswith(
        f"; gave up after 1 retry; server base_url={vllm_server.base_url} model={scripted_llama}"
    )

    vllm_server.start()  # same port: the recipe is unchanged
    rerun = subprocess.run(
        sweep_cmd(recipe),
        capture_output=True,
        text=True,
        env=sweep_env(tmp_path / "in"),
        timeout=900,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = records(out)
    for name, lines in before.items():
        assert after[name][: len(lines)] == lines  # nothing recorded was lost or rewritten
    for lines in after.values():
        assert sorted(json.loads(x)["doc_id"] for x in lines) == list(range(len(SAMPLE_PROBLEMS)))
    assert sum(map(len, after.values())) == total

    # and the resumed results are those of an uninterrupted sweep
    clean_out = tmp_path / "clean_out"
    clean = write_sweep(tmp_path / "clean", clean_out, model_args)
    proc = subprocess.run(
        sweep_cmd(clean),
        capture_output=True,
        text=True,
        env=sweep_env(tmp_path / "clean"),
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, lines in records(clean_out).items():
        want = {json.loads(x)["doc_id"]: comparable(x) for x in lines}
        got = {json.loads(x)["doc_id"]: comparable(x) for x in after[name]}
        diffs = [
            (d, k, str(got[d][k])[:600], str(want[d][k])[:600])
            for d in want
            for k in want[d]
            if got[d].get(k) != want[d][k]
        ]
        assert not diffs, diffs


# ----------------------------------------------------------------------------------------------
# The real SmolLM2 model (last: it swaps the server's model)
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.real_model
def test_real_model_greedy_steps_equal_in_process_vllm(
    smollm2, vllm_servers, math500_path, monkeypatch
):
    """SmolLM2 on a server and in-process: real math500 prompts, greedy steps (STEP at "\\n\\n",
    EOS, LENGTH) and the next step continued from the first one's token ids are identical."""
    from test_real_model import _messages, _problems

    server = vllm_servers.serve(smollm2, max_model_len=2048)
    remote = load_engine("openai", str(smollm2), base_url=server.base_url)
    step = SamplingParams(temperature=0, max_tokens=64, stop=("\n\n",))
    free = SamplingParams(temperature=0, max_tokens=48)
    ps = [tuple(remote.render_prompt(_messages(p))) for p in _problems(6)]
    requests = [GenerationRequest(p, step) for p in ps] + [
        GenerationRequest(p, free) for p in ps[:3]
    ]
    got = remote.generate(requests)
    continued = [
        GenerationRequest(r.prompt_ids + g.completions[0].token_ids, step)
        for r, g in zip(requests[:6], got[:6], strict=True)
        if g.completions[0].finish_reason is FinishReason.STEP
    ]
    got += remote.generate(continued)
    remote.close()
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    local = load_engine("vllm", str(smollm2), dtype="float32", seed=0, max_model_len=2048)
    try:
        want = local.generate(requests) + local.generate(continued)
    finally:
        local.close()
    for w, g in zip(want, got, strict=True):
        assert g.completions == w.completions
    reasons = {g.completions[0].finish_reason for g in got}
    assert reasons == {FinishReason.STEP, FinishReason.EOS, FinishReason.LENGTH}
    assert continued, "some first steps should have ended at the delimiter"


# ----------------------------------------------------------------------------------------------
# Reproducibility through a server (issue 23 item 17; last: it swaps the server's model)
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.vllm
def test_deterministic_requests_reproduce_a_run_bit_for_bit(vllm_servers, tiny_llama):
    """A vLLM server's numbers depend on the batch a request lands in and on the prefix-cache
    hits left by what ran before (run twice against one server, particle filtering counted 164
    vs 229 requests). With ``deterministic=true`` the requests go out one at a time in request
    order after a reset of the server's prefix cache: two runs against the same warm server get
    the same token ids AND log-probabilities, bit for bit, while a third, concurrent run on the
    cache the others left computes other log-probabilities (the cause)."""
    from tiny_models import SAMPLE_PROBLEMS

    server = vllm_servers.serve(tiny_llama)
    proxy = Proxy(server.base_url)
    proxy.inject = {"logprobs": 1}  # the server's numbers, not only its sampled tokens
    engine = load_engine("openai", str(tiny_llama), base_url=server.base_url)
    # long prompts (~600 tokens): the server's matrix products then round differently when a
    # prompt is computed whole (cold cache) or only its tail (warm cache), or in a larger batch
    steps = " ".join(["We add the numbers, then we check the sum once more."] * 40)
    prompts = [
        tuple(engine.render_prompt([{"role": "user", "content": f"{q} {steps}"}]))
        for q in SAMPLE_PROBLEMS
    ]
    engine.close()
    requests = [
        GenerationRequest(p, SamplingParams(n=2, temperature=0.8, max_tokens=32, seed=100 + i))
        for i, p in enumerate(prompts)
    ]
    sent = [(list(r.prompt_ids), r.params.seed + j) for r in requests for j in range(2)]

    def run(deterministic: bool):
        proxy.arrivals, proxy.answers, proxy.max_inflight = [], [], 0
        engine = load_engine(
            "openai", str(tiny_llama), base_url=proxy.base_url, deterministic=deterministic
        )
        try:
            outputs = engine.generate(requests)
        finally:
            engine.close()
        numbers = {
            (tuple(body["prompt"]), body["seed"]): (
                answer["choices"][0]["token_ids"],
                answer["choices"][0]["logprobs"]["token_logprobs"],
            )
            for body, answer in proxy.answers
            if "seed" in body  # not the start-up probe
        }
        order = [(body["prompt"], body["seed"]) for body in proxy.arrivals if "seed" in body]
        return [o.completions for o in outputs], numbers, order, proxy.max_inflight

    try:
        first = run(True)
        second = run(True)  # the server's cache is warm now; the reset empties it again
        assert proxy.paths.count("/reset_prefix_cache") == 2
        assert first[2] == second[2] == sent and first[3] == second[3] == 1
        assert len(first[1]) == len(sent) and second[1] == first[1]
        assert second[0] == first[0]
        concurrent = run(False)
        assert concurrent[3] > 1 and len(concurrent[1]) == len(sent)
        assert concurrent[1] != first[1]  # same requests, other numbers: why runs differed
    finally:
        proxy.close()
