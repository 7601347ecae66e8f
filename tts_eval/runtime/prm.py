"""Loading a PRM on the backend its config asks for (``prm_backend``): hf, vllm or openai.

:func:`load_prm` is what a searcher (in this process or on a Ray worker) calls:

- ``hf``: :func:`tts_eval.prm.load_prm_from_config` (transformers, the scorer's own prefix cache);
- ``vllm``: the PRM as its own ``vllm.LLM`` in this process
  (:class:`~tts_eval.engines.vllm_labels.VLLMLabelReader` for the LM-head formats,
  :class:`~tts_eval.engines.vllm_labels.VLLMHeadReader`, vLLM's pooling runner, for the heads it
  runs), scored by :class:`~tts_eval.prm.labels.LabelReadScorer`;
- ``openai``: the PRM behind an OpenAI-compatible vLLM server
  (:class:`~tts_eval.engines.openai_labels.OpenAILabelReader`), scored the same way.

On vllm and openai the format is the PRM type's own (``tts_eval.prm.formats``, built from the
PRM's local tokenizer): the token ids and read positions are exactly those the transformers scorer
feeds. :func:`check_backend` (called by :func:`tts_eval.runtime.local.preflight`, before any model
loads) refuses a PRM type the backend cannot run, naming the backends that can, once the type is
known (given or detected from ``config.json``).

This module lives in the runtime because it joins two layers that do not know each other: the
PRM formats (``tts_eval.prm``) and the engines that run label reads (``tts_eval.engines``).

What this module does not do: score (``tts_eval.prm``), run models (``tts_eval.engines``).
"""

from __future__ import annotations

import logging

from tts_eval.prm import PRMAdapter, load_prm_from_config
from tts_eval.prm.labels import LabelReadScorer
from tts_eval.prm.registry import (
    build_format,
    prm_type_spec,
    read_model_config,
    resolve_prm_type,
)
from tts_eval.settings import LABEL_HEAD, EngineConfig, PRMConfig, check_prm_backend
from tts_eval.types import ProcessRewardModel

logger = logging.getLogger(__name__)


def check_backend(config: PRMConfig, prm_type: str) -> None:
    """One line, before any model loads, when ``config.backend`` cannot run ``prm_type``."""
    check_prm_backend(prm_type, config.backend, head=prm_type_spec(prm_type).head)


def server_config(config: PRMConfig) -> EngineConfig:
    """The ``EngineConfig`` the OpenAI client and start-up checks read, from the PRM's settings."""
    return EngineConfig(
        pretrained=str(config.path),
        backend="openai",
        base_url=config.base_url,
        api_key=config.api_key,
        model=config.model,
        max_concurrency=config.max_concurrency,
        timeout_s=config.timeout_s,
        max_retries=config.max_retries,
    )


def vllm_config(config: PRMConfig) -> EngineConfig:
    """The ``EngineConfig`` of the PRM's own ``vllm.LLM`` (``open_llm``)."""
    return EngineConfig(
        pretrained=str(config.path),
        backend="vllm",
        dtype=config.dtype or "auto",
        gpu_memory_utilization=config.gpu_memory_utilization,
        tensor_parallel_size=config.tensor_parallel_size,
        max_model_len=config.max_model_len,
    )


def load_prm(config: PRMConfig) -> ProcessRewardModel:
    """The PRM of ``config`` on its backend (see the module docstring)."""
    if config.backend == "hf":
        return load_prm_from_config(config)
    path = str(config.path)
    prm_type = resolve_prm_type(config, read_model_config(path))
    check_backend(config, prm_type)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    fmt = build_format(prm_type, tokenizer, config.step_separator)
    logger.info("loading PRM %s as prm_type=%s on prm_backend=%s", path, prm_type, config.backend)
    if config.backend == "vllm" and prm_type_spec(prm_type).head != LABEL_HEAD:  # pooling
        from tts_eval.engines.vllm_labels import VLLMHeadReader

        reader = VLLMHeadReader(vllm_config(config))
    elif config.backend == "vllm":
        from tts_eval.engines.vllm_labels import VLLMLabelReader

        reader = VLLMLabelReader(vllm_config(config), fmt.good_id, fmt.bad_id)
    else:
        from tts_eval.engines.openai_labels import OpenAILabelReader

        reader = OpenAILabelReader(server_config(config), tokenizer, fmt.good_id, fmt.bad_id)
    return PRMAdapter(fmt, LabelReadScorer(reader, name=path), name=path)
