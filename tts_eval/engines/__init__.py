"""Policy engines: ``load_engine("hf" | "vllm" | "openai", pretrained, **options)`` -> an engine.

All backends implement :class:`tts_eval.types.PolicyEngine` with the same semantics (token-id
prompts, per-request seeds, STEP / EOS / LENGTH finish reasons, text = decoding of the token ids):
``hf`` (:class:`~tts_eval.engines.hf.HFEngine`, transformers, CPU or one GPU), ``vllm``
(:class:`~tts_eval.engines.vllm.VLLMEngine`, prefix-cached vLLM) and ``openai``
(:class:`~tts_eval.engines.openai.OpenAIEngine`, a policy behind an OpenAI-compatible vLLM
server; :func:`check_engine` checks that server before anything loads). Everything that can be
checked without weights is checked first: options (:class:`EngineConfig`), the model path, vllm
being importable, and the tokenizer having a chat template.

While generating, both engines raise ``ValueError`` for a bad request (before any work),
:class:`tts_eval.errors.OutOfMemoryError` when a batch does not fit, and a one-line
:class:`tts_eval.errors.EngineError` (naming backend, model and request) for any other backend
failure; both show a tqdm progress bar on stderr for long calls (their ``progress`` attribute:
None = calls longer than a couple of seconds, True = always, False = never).

Partial solutions are continued by token ids: a request's prompt is the problem's prompt ids plus
the ids the model sampled so far, never re-tokenised text. The difference is real: SmolLM2 writes a
step end ".\n\n" as "." "\n" "\n" (three tokens) while its tokenizer encodes the same text with one
"\n\n" token, so re-tokenising would condition the model on a sequence it did not write (and the
next step differs; ``tests/test_real_model.py``). The search-and-learn reference scripts continue
from text; tts-eval follows the model's own path, as vLLM's prefix cache needs anyway.

Importing this package is cheap: torch, transformers and vllm are imported only when an engine is
built.
"""

from __future__ import annotations

from typing import Any

from tts_eval.settings import BACKENDS, EngineConfig, check_model_path
from tts_eval.types import PolicyEngine

__all__ = ["BACKENDS", "EngineConfig", "check_engine", "load_engine"]


def check_engine(config: EngineConfig, *, path_checked: bool = False) -> None:
    """The checks of ``config`` that need no weights: the model path (unless ``path_checked``),
    and for backend=openai the server (reachable, serving the model, returning token ids);
    one-line ``SettingError`` each."""
    if not path_checked:
        check_model_path("pretrained", config.pretrained)
    if config.backend == "openai":
        from tts_eval.engines.openai import connect

        connect(config)


def load_engine(
    backend: str | EngineConfig,
    pretrained: str | None = None,
    *,
    checked: bool = False,
    **kwargs: Any,
) -> PolicyEngine:
    """Build a policy engine from ``(backend, pretrained, **options)`` or from an EngineConfig.

    Options are the fields of :class:`EngineConfig` (device, dtype, seed, batch_size,
    max_model_len, gpu_memory_utilization, tensor_parallel_size, enforce_eager, block_size, revision,
    trust_remote_code, chat_template). ``checked=True``: the caller ran :func:`check_engine`
    already (the model path is checked once per open).
    """
    if isinstance(backend, EngineConfig):
        if pretrained is not None or kwargs:
            raise ValueError("load_engine(config) takes no further arguments")
        config = backend
    else:
        if pretrained is None:
            raise ValueError("load_engine needs pretrained=<path or hub id>")
        config = EngineConfig.from_kwargs(backend=backend, pretrained=pretrained, **kwargs)
    if not checked:
        check_model_path("pretrained", config.pretrained)
    if config.backend == "vllm":
        from tts_eval.engines.vllm import VLLMEngine

        return VLLMEngine(config)
    if config.backend == "openai":
        from tts_eval.engines.openai import OpenAIEngine

        return OpenAIEngine(config)
    from tts_eval.engines.hf import HFEngine

    return HFEngine(config)
