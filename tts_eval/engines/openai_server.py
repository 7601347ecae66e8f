"""The server side of ``backend=openai``: the HTTP client and the start-up checks.

What this module does: build the httpx client (key, timeouts), classify a server's answers into
retryable (:class:`ServerUnavailable`) and final (:class:`ServerRefused`) failures, and
:func:`connect`: find the model a server serves, its max length and vLLM version, probe that it
returns token ids, and check that its tokenizer agrees with the local one (one line naming both
when not); :func:`reset_prefix_cache` for deterministic runs; :func:`post_with_retries`, the
one retry loop of every request (connection errors, 5xx and 429 retried with exponential backoff).
The same client and checks serve a PRM behind a server (``prm_backend=openai``,
:mod:`tts_eval.engines.openai_labels`): :class:`ServerKeys` names the settings in its errors
(``prm_base_url=``, ...), and a tokenizer without a chat template is checked on plain text. What it
does not do: generate (the engine in :mod:`tts_eval.engines.openai` does, over this client), start
or stop servers.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tts_eval.engines.chat import load_tokenizer, render_chat
from tts_eval.engines.failures import first_line
from tts_eval.errors import MissingDependencyError, SettingError
from tts_eval.settings import EngineConfig, invalid

logger = logging.getLogger(__name__)

OPENAI_INSTALL_HINT = "backend=openai needs httpx: pip install 'tts-scaling-eval[openai]'"
# The server feature the protocol needs, and where it is found.
TOKEN_IDS_FEATURE = (
    '"return_token_ids": true in /v1/completions (vLLM 0.10.2 or newer; start the server with '
    "python -m vllm.entrypoints.openai.api_server)"
)
CONNECT_TIMEOUT_S = 10.0
BACKOFF_S = 0.5  # first retry delay; doubled per retry
MAX_BACKOFF_S = 8.0
_PROBE_TEXT = "Step 1: $1 + 1 = 2$.\n\nThe final answer is $\\boxed{2}$."


def import_httpx() -> Any:
    """Import httpx, or fail with one line saying how to install it."""
    try:
        import httpx
    except ImportError as exc:
        raise MissingDependencyError(f"{OPENAI_INSTALL_HINT} ({exc})") from exc
    return httpx


class ServerUnavailable(RuntimeError):
    """An HTTP answer worth retrying (5xx, 429)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerRefused(RuntimeError):
    """An HTTP answer not worth retrying (4xx other than 429)."""


class GaveUp(RuntimeError):
    """A request still failed after ``max_retries`` retries; ``last`` is its last failure."""

    def __init__(self, last: BaseException, retries: int) -> None:
        super().__init__(f"{first_line(last)}; gave up after {retries} retries")
        self.last = last
        self.retries = retries


@dataclass(frozen=True)
class ServerKeys:
    """The ``model_args`` keys that set a server's URL, key, served model and local tokenizer,
    as start-up errors name them (a policy server's, or a PRM server's)."""

    base_url: str = "base_url"
    api_key: str = "api_key"
    model: str = "model"
    pretrained: str = "pretrained"


POLICY_KEYS = ServerKeys()
PRM_SERVER_KEYS = ServerKeys("prm_base_url", "prm_api_key", "prm_model", "prm")


@dataclass(frozen=True)
class ServerInfo:
    """What start-up learned about the server."""

    model: str
    max_model_len: int | None
    version: str | None


def api_key_of(config: EngineConfig) -> str | None:
    """``api_key=``, else ``OPENAI_API_KEY``, else None (no Authorization header)."""
    return config.api_key or os.environ.get("OPENAI_API_KEY") or None


def make_client(config: EngineConfig) -> Any:
    """An ``httpx.Client`` for the server: pooled for ``max_concurrency`` requests."""
    httpx = import_httpx()
    quiet = logging.getLogger("httpx")
    if quiet.level == logging.NOTSET:  # one INFO line per request otherwise; a user's level stays
        quiet.setLevel(logging.WARNING)
    headers = {"Content-Type": "application/json"}
    key = api_key_of(config)
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.Client(
        base_url=config.base_url.rstrip("/"),
        headers=headers,
        timeout=httpx.Timeout(config.timeout_s, connect=min(CONNECT_TIMEOUT_S, config.timeout_s)),
        limits=httpx.Limits(
            max_connections=config.max_concurrency,
            max_keepalive_connections=config.max_concurrency,
        ),
    )


def _detail(response: Any) -> str:
    """The server's error message of a failed HTTP answer (first line, shortened)."""
    try:
        body = response.json()
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message", error) if isinstance(error, dict) else error
        text = str(message)
    except ValueError:
        text = response.text
    text = " ".join(text.split())
    return text[:300] + ("..." if len(text) > 300 else "")


def check_status(response: Any) -> None:
    """Raise ServerUnavailable (5xx, 429) or ServerRefused (other non-2xx) for a failed answer."""
    code = response.status_code
    if code < 400:
        return
    message = f"HTTP {code} from {response.request.url}: {_detail(response)}"
    if code == 429 or code >= 500:
        retry_after = response.headers.get("retry-after")
        try:
            delay = float(retry_after) if retry_after is not None else None
        except ValueError:
            delay = None
        raise ServerUnavailable(message, delay)
    raise ServerRefused(message)


def connect(
    config: EngineConfig,
    client: Any = None,
    tokenizer: Any = None,
    *,
    keys: ServerKeys = POLICY_KEYS,
    probe_token_ids: bool = True,
) -> ServerInfo:
    """The start-up checks of the module docstring; one-line ``SettingError`` for each failure,
    naming the settings as ``keys`` has them.

    Without ``tokenizer``, the probe prompt is the policy tokenizer's rendering of a short chat
    (the tokenizer is loaded here: cheap, no weights). ``probe_token_ids=False`` leaves out the
    ``return_token_ids`` probe (a PRM server is probed for what it needs by its own caller).
    """
    httpx = import_httpx()
    own = client is None
    client = make_client(config) if own else client
    url = config.base_url
    try:
        try:
            response = client.get("/models")
        except httpx.HTTPError as exc:
            raise invalid(
                keys.base_url,
                url,
                f"the URL of a running OpenAI-compatible server; nothing answers there "
                f"({first_line(exc)})",
            ) from None
        if response.status_code in (401, 403):
            raise SettingError(
                keys.api_key,
                "(hidden)",
                "a key the server accepts",
                message=f"the server at {keys.base_url}={url} refused the API key (HTTP "
                f"{response.status_code}: {_detail(response)}); set {keys.api_key}= or "
                "OPENAI_API_KEY",
            )
        models = _listed_models(url, response, keys)
        info = _pick_model(config, models, keys)
        tok = tokenizer if tokenizer is not None else load_tokenizer(config)
        version = _server_version(client, url)
        _check_tokenizer(client, config, info.model, tok, keys)  # before ids reach the model
        if probe_token_ids:
            _probe_token_ids(client, config, info.model, tok, version)
        return ServerInfo(info.model, info.max_model_len, version)
    finally:
        if own:
            client.close()


def _listed_models(url: str, response: Any, keys: ServerKeys) -> list[Mapping[str, Any]]:
    problem = None
    if response.status_code != 200:
        problem = f"GET /models answered HTTP {response.status_code}: {_detail(response)}"
    else:
        try:
            data = response.json().get("data")
        except (ValueError, AttributeError):
            data = None
        if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
            problem = "GET /models did not return an OpenAI model list"
    if problem is not None:
        raise invalid(
            keys.base_url,
            url,
            f"the /v1 URL of an OpenAI-compatible server, e.g. http://localhost:8000/v1 ({problem})",
        )
    return data


def _pick_model(
    config: EngineConfig, models: list[Mapping[str, Any]], keys: ServerKeys = POLICY_KEYS
) -> ServerInfo:
    names = [str(m.get("id")) for m in models]
    where = f"the server at {keys.base_url}={config.base_url}"
    if config.model is None:
        if len(names) != 1:
            raise SettingError(
                keys.model,
                None,
                ", ".join(names) or "none listed",
                message=f"model_args {keys.model} is required: {where} "
                f"serves {len(names)} models; accepted: {', '.join(names) or 'none listed'}",
            )
        chosen = models[0]
    else:
        if config.model not in names:
            raise invalid(
                keys.model,
                config.model,
                f"a model {where} serves: {', '.join(names) or 'none listed'}",
            )
        chosen = models[names.index(config.model)]
    limit = chosen.get("max_model_len")
    max_len = int(limit) if isinstance(limit, int) and limit > 0 else None
    return ServerInfo(str(chosen.get("id")), max_len, None)


def _server_root(base_url: str) -> str:
    """``http://host:port`` of ``http://host:port/v1`` (vLLM's /version, /tokenize live there)."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _server_version(client: Any, base_url: str) -> str | None:
    """vLLM's ``/version`` (None for other servers)."""
    try:
        response = client.get(_server_root(base_url) + "/version")
        if response.status_code == 200:
            version = response.json().get("version")
            return str(version) if version else None
    except Exception:  # not vLLM, or no such route: the version only decorates messages
        return None
    return None


def _probe_token_ids(
    client: Any, config: EngineConfig, model: str, tokenizer: Any, version: str | None
) -> None:
    prompt = render_chat(tokenizer, [{"role": "user", "content": "Hi"}])
    body = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0}
    body["return_token_ids"] = True
    server = f"the server at base_url={config.base_url}" + (f" (vLLM {version})" if version else "")
    try:
        response = client.post("/completions", json=body)
        check_status(response)
        choices = response.json()["choices"]
    except ServerRefused as exc:  # e.g. "Token id 34519 is out of vocabulary"
        raise _unusable(
            config,
            f"{server} cannot complete a token-id prompt for model {model!r}: {exc}; "
            f"is pretrained={config.pretrained} the tokenizer of {model}?",
        ) from None
    except ServerUnavailable as exc:
        raise _unusable(
            config, f"{server} cannot complete a token-id prompt for model {model!r}: {exc}"
        ) from None
    except Exception as exc:
        raise _unusable(
            config,
            f"{server} answered a one-token /completions probe unexpectedly: {first_line(exc)}",
        ) from None
    ids = choices[0].get("token_ids") if choices and isinstance(choices[0], dict) else None
    if not isinstance(ids, list):
        raise _unusable(
            config, f"{server} returns no token ids; backend=openai needs {TOKEN_IDS_FEATURE}"
        )


def _unusable(config: EngineConfig, message: str) -> SettingError:
    """A server at ``base_url`` that answers but cannot serve token-id prompts (one line)."""
    return SettingError(
        "base_url",
        config.base_url,
        f"an OpenAI-compatible server with {TOKEN_IDS_FEATURE}",
        message=message,
    )


def first_difference(a: Sequence[int], b: Sequence[int]) -> int:
    """The first index where ``a`` and ``b`` differ (the shorter length if one is a prefix)."""
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def _check_tokenizer(
    client: Any, config: EngineConfig, model: str, tokenizer: Any, keys: ServerKeys = POLICY_KEYS
) -> None:
    """A vLLM server's ``/tokenize`` must agree with the local tokenizer (others: not checked).

    Two texts: a short solution, and a chat rendered with the local template (its special
    tokens; left out for a tokenizer without a chat template), each tokenised on both sides
    without added special tokens; the first difference is a one-line error naming
    ``pretrained`` (``keys.pretrained``) and the served model.
    """
    texts = [_PROBE_TEXT]
    if getattr(tokenizer, "chat_template", None):
        texts.append(tokenizer.decode(render_chat(tokenizer, [{"role": "user", "content": "Hi"}])))
    for text in texts:
        try:
            response = client.post(
                _server_root(config.base_url) + "/tokenize",
                json={"model": model, "prompt": text, "add_special_tokens": False},
            )
            theirs = response.json().get("tokens") if response.status_code == 200 else None
        except Exception:
            theirs = None
        if not isinstance(theirs, list):
            logger.debug("the server has no /tokenize; tokenizer agreement not checked")
            return
        ours = list(tokenizer.encode(text, add_special_tokens=False))
        theirs = [int(t) for t in theirs]
        if theirs != ours:
            at = first_difference(theirs, ours)
            raise invalid(
                keys.pretrained,
                config.pretrained,
                f"the tokenizer of the model the server serves ({model}); the server tokenises "
                f"{text!r} as {theirs[at : at + 8]}, this tokenizer as {ours[at : at + 8]} "
                f"from token {at} on",
            )


def reset_prefix_cache(client: Any, config: EngineConfig) -> bool:
    """Empty the server's prefix cache (vLLM's ``POST /reset_prefix_cache``, offered with
    ``VLLM_SERVER_DEV_MODE=1``) so that a run starts from the cache state every run starts from;
    True when it did, else a warning naming what a re-run then reproduces, and False."""
    url = _server_root(config.base_url) + "/reset_prefix_cache"
    try:
        response = client.post(url)
        answer = response.json() if response.status_code == 200 else None
    except Exception as exc:  # noqa: BLE001 - reported below, the run goes on
        why = first_line(exc)
    else:
        if isinstance(answer, dict) and answer.get("success") is True:
            logger.info("deterministic=true: the prefix cache of the server was reset")
            return True
        why = (
            "it holds blocks of requests in flight (another client?)"
            if isinstance(answer, dict)
            else f"HTTP {response.status_code}; start vLLM with VLLM_SERVER_DEV_MODE=1 to offer it"
        )
    logger.warning(
        "deterministic=true: the prefix cache of the server at %s was not reset (%s); a re-run "
        "reproduces this run only against a server started afresh for each run",
        config.base_url,
        why,
    )
    return False


def post_with_retries(
    client: Any,
    path: str,
    body: Mapping[str, Any],
    *,
    timeout_s: float,
    max_retries: int,
    cancel: threading.Event,
    closed: threading.Event,
    what: str = "backend=openai",
) -> Mapping[str, Any]:
    """POST ``body`` to ``path`` and return the JSON answer, retrying connection errors, 5xx and
    429 ``max_retries`` times with exponential backoff (``Retry-After`` honoured). A timeout (but
    a connect timeout) is final; ``cancel`` / ``closed`` stop the retries (``RuntimeError``);
    what still fails after the retries is :class:`GaveUp`."""
    httpx = import_httpx()
    failure: Exception | None = None
    for attempt in range(max_retries + 1):
        if cancel.is_set() or closed.is_set():
            raise RuntimeError("cancelled: another request of the call failed")
        try:
            response = client.post(path, json=body)
            check_status(response)
            return response.json()
        except httpx.TimeoutException as exc:
            if not isinstance(exc, httpx.ConnectTimeout):
                raise RuntimeError(
                    f"no answer within timeout_s={timeout_s:g} ({first_line(exc)})"
                ) from exc
            failure = exc
            delay = None
        except (httpx.TransportError, ServerUnavailable) as exc:
            failure = exc
            delay = getattr(exc, "retry_after", None)
        if attempt == max_retries:
            break
        wait_s = delay if delay is not None else min(MAX_BACKOFF_S, BACKOFF_S * 2**attempt)
        wait_s *= 1.0 + 0.1 * random.random()  # noqa: S311 (jitter, not security)
        logger.warning(
            "%s: %s; retry %d of %d in %.1fs",
            what,
            first_line(failure),
            attempt + 1,
            max_retries,
            wait_s,
        )
        if cancel.wait(wait_s) or closed.is_set():
            raise RuntimeError("cancelled: another request of the call failed")
    assert failure is not None
    raise GaveUp(failure, max_retries) from failure


def close_client(owner: Any) -> None:
    """Stop ``owner``'s request threads (``_pool``, ``_closed``) and close its connections
    (``_client``); the server keeps running. Idempotent (the pool attribute is removed)."""
    pool = owner.__dict__.pop("_pool", None)
    if pool is None:
        return
    owner._closed.set()
    pool.shutdown(wait=True, cancel_futures=True)
    owner._client.close()
