"""Label reads against a vLLM server: what ``prm_backend=openai`` runs the LM-head PRMs on.

:class:`OpenAILabelReader` sends each prompt (token ids) as ``POST {base_url}/completions`` with
``max_tokens=1``, ``temperature=0``, ``logprobs``, and vLLM's extra parameters
``logprob_token_ids`` (the two label tokens: the server returns their full-vocabulary
log-probabilities, vLLM 0.32 or newer) and ``allowed_token_ids`` (the generated token is one of
them), ``return_tokens_as_token_ids`` (``"token_id:<id>"`` keys). The number read is the one the
in-process reader (:mod:`tts_eval.engines.vllm_labels`) reads; JSON floats read back exactly.
Cached prompt tokens are the server's ``usage.prompt_tokens_details.cached_tokens``
(``--enable-prompt-tokens-details``; without it the cost counts every prompt token as prefilled
and the cache share is unknown).

The transport is the policy server's (:mod:`tts_eval.engines.openai_server`): the same client
(key, timeouts, pooled connections), the same retry loop (:func:`post_with_retries`), and the
same start-up checks (:func:`connect`: the server answers and accepts the key, lists the model,
and its ``/tokenize`` agrees with the PRM's local tokenizer), each error naming the ``prm_*``
setting; then a one-read probe checks that the server returns both labels' log-probabilities.
The reads of one call go out concurrently, ``max_concurrency`` at a time.

What this module does not do: format PRM inputs or turn reads into scores
(:mod:`tts_eval.prm.labels`), start servers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tts_eval.engines.failures import first_line
from tts_eval.engines.openai_server import (
    PRM_SERVER_KEYS,
    GaveUp,
    close_client,
    connect,
    make_client,
    post_with_retries,
)
from tts_eval.errors import EngineError, SettingError
from tts_eval.settings import EngineConfig

logger = logging.getLogger(__name__)

TOKEN_ID_PREFIX = "token_id:"
LABEL_READS_FEATURE = (
    '"logprob_token_ids" in /v1/completions (vLLM 0.32 or newer, python -m '
    "vllm.entrypoints.openai.api_server)"
)
_PROBE_TEXT = "Step 1: $1 + 1 = 2$."


def choice_label_logprobs(choice: Mapping[str, Any], ids: Sequence[int]) -> list[float]:
    """The log-probabilities of ``ids`` in one choice's ``logprobs.top_logprobs[0]`` (keys
    ``token_id:<id>``); ``ValueError`` naming what is missing."""
    logprobs = choice.get("logprobs")
    tops = logprobs.get("top_logprobs") if isinstance(logprobs, Mapping) else None
    if not isinstance(tops, list) or not tops or not isinstance(tops[0], Mapping):
        raise ValueError("the server returned no top_logprobs for a label read")
    values: dict[int, float] = {}
    for key, value in tops[0].items():
        if isinstance(key, str) and key.startswith(TOKEN_ID_PREFIX):
            values[int(key[len(TOKEN_ID_PREFIX) :])] = float(value)
    missing = [t for t in ids if t not in values]
    if missing:
        raise ValueError(
            f"the server returned no log-probability for label token(s) {missing}; label reads "
            f"need {LABEL_READS_FEATURE}"
        )
    return [values[t] for t in ids]


class OpenAILabelReader:
    """One-token label reads through an OpenAI-compatible vLLM server (module docstring).

    ``config``: an ``EngineConfig`` with ``backend=openai`` whose ``pretrained`` is the PRM's
    tokenizer path and whose server fields are the PRM's (``prm_base_url``, ...);
    ``tokenizer``: that tokenizer (loaded by the caller: it may have no chat template)."""

    def __init__(self, config: EngineConfig, tokenizer: Any, good_id: int, bad_id: int) -> None:
        if config.backend != "openai":
            raise ValueError(f"OpenAILabelReader needs backend=openai, got {config.backend!r}")
        self.config = config
        self.good_id, self.bad_id = int(good_id), int(bad_id)
        self.device: str | None = None  # the PRM runs in the server's process
        self._client = make_client(config)
        self._closed = threading.Event()
        try:
            self.server = connect(
                config, self._client, tokenizer, keys=PRM_SERVER_KEYS, probe_token_ids=False
            )
            self.model = self.server.model
            self.max_model_len = self.server.max_model_len
            self._probe(list(tokenizer(_PROBE_TEXT, add_special_tokens=False)["input_ids"]))
        except BaseException:
            self._client.close()
            raise
        self._pool = ThreadPoolExecutor(
            max_workers=config.max_concurrency, thread_name_prefix="tts-prm-openai"
        )
        logger.info(
            "prm_backend=openai: PRM %s at %s%s (max_model_len %s)",
            self.model,
            config.base_url,
            f", vLLM {self.server.version}" if self.server.version else "",
            self.max_model_len,
        )

    def _probe(self, prompt: list[int]) -> None:
        """One read: the server must return both labels' log-probabilities."""
        where = f"the PRM server at prm_base_url={self.config.base_url}"
        try:
            data = self._post(self._body(tuple(prompt)), threading.Event())
            choice_label_logprobs(data["choices"][0], (self.good_id, self.bad_id))
        except (GaveUp, RuntimeError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise SettingError(
                "prm_base_url",
                self.config.base_url,
                f"a vLLM server with {LABEL_READS_FEATURE}",
                message=f"{where} cannot serve label reads for model {self.model!r}: "
                f"{first_line(exc)}; prm_backend=openai needs {LABEL_READS_FEATURE}",
            ) from None

    def _body(self, prompt: tuple[int, ...]) -> dict[str, Any]:
        labels = [self.good_id, self.bad_id]
        return {
            "model": self.model,
            "prompt": [int(t) for t in prompt],
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": len(labels),
            "logprob_token_ids": labels,
            "allowed_token_ids": labels,
            "return_tokens_as_token_ids": True,
        }

    def _post(self, body: Mapping[str, Any], cancel: threading.Event) -> Mapping[str, Any]:
        return post_with_retries(
            self._client,
            "/completions",
            body,
            timeout_s=self.config.timeout_s,
            max_retries=self.config.max_retries,
            cancel=cancel,
            closed=self._closed,
            what="prm_backend=openai",
        )

    def _read_one(
        self, prompt: tuple[int, ...], cancel: threading.Event
    ) -> tuple[float, float, int | None]:
        data = self._post(self._body(prompt), cancel)
        choices = data.get("choices") if isinstance(data, Mapping) else None
        if not isinstance(choices, list) or len(choices) != 1:
            raise ValueError("the server answered a label read without exactly one choice")
        good, bad = choice_label_logprobs(choices[0], (self.good_id, self.bad_id))
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details") if isinstance(usage, Mapping) else None
        cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
        return good, bad, int(cached) if isinstance(cached, int) else None

    def read(self, prompts: Sequence[tuple[int, ...]]) -> list[tuple[float, float, int | None]]:
        """``(good, bad, cached prompt tokens)`` per prompt (``tts_eval.prm.labels.LabelRead``)."""
        if "_pool" not in self.__dict__:
            raise RuntimeError("this PRM was closed; load it again")
        limit = self.max_model_len
        for prompt in prompts:
            if not prompt or (limit is not None and len(prompt) >= limit):
                raise ValueError(
                    f"a PRM input of {len(prompt)} tokens does not fit the PRM server's "
                    f"max_model_len={limit}"
                )
        cancel = threading.Event()
        futures = [self._pool.submit(self._read_one, p, cancel) for p in prompts]
        out = []
        try:
            for future in futures:
                out.append(future.result())
        except Exception as exc:
            cancel.set()
            for future in futures:
                future.cancel()
            cause = exc.last if isinstance(exc, GaveUp) else exc
            retries = f" (gave up after {exc.retries} retries)" if isinstance(exc, GaveUp) else ""
            raise EngineError(
                f"PRM server prm_base_url={self.config.base_url} model={self.model} failed a "
                f"label read{retries}: {first_line(cause)}"
            ) from exc
        return out

    def close(self) -> None:
        """Stop the request threads and close the connections (the server keeps running)."""
        close_client(self)
