"""The whole run: :class:`TTSConfig`, and the one definition of what identifies its results.

:class:`TTSConfig` holds the policy engine's, the PRM's and the search's configs plus the run-level
settings (answer format, system prompt, where traces go, how work is spread).

:func:`result_identity` is the single definition of what identifies a result: every setting that
can change a record, nothing else. It covers the task, the search settings (with the content of a
compute-optimal routing table), the policy (path or hub id, revision, backend, dtype, context
length, chat template, KV-cache block, served model name), the PRM (path, type, dtype, step
separator; its backend, served model name and context length when not at their defaults), the answer format, the system prompt and whether the task's ``max_gen_toks`` sets
``max_tokens``. It leaves out placement and transport (:data:`PLACEMENT_KEYS`): devices, batch
sizes, memory shares, a policy server's address and request settings, Ray workers, where traces
go. Strategy options added later (:data:`tts_eval.search.spec.LATER_OPTION`, such as the sampling
strategies' early-stopping options) are part of it only when not at their default. Everything
else derives from it:

- :func:`results_fingerprint` (the key of lm-eval's response cache for ``--model tts``);
- the sweep's resume key and its results folder's identity (``tts_eval.workflow.plan``);
- the report's settings groups (:func:`shared_search_settings`: the identity's search settings
  without what names a run: strategy, budget and the strategy's own options, but for the options
  that are settings of a whole sweep, such as ``beam_width``).

Models are known by path or hub id and revision, not by their weights.

What this module does not do: parse ``model_args`` (``tts_eval.model_args``) or load anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tts_eval.search import SearchConfig, shared_keys
from tts_eval.search.config import VLLM_MAX_LOGPROBS, later_defaults, shared_defaults
from tts_eval.search.spec import group_option_keys
from tts_eval.settings import EngineConfig, PRMConfig, check_answer, check_int, invalid


@dataclass(frozen=True)
class TTSConfig:
    """Everything ``--model tts`` needs, validated."""

    engine: EngineConfig
    search: SearchConfig
    prm: PRMConfig | None = None
    system_prompt: str | None = None
    trace_path: str | None = None
    eager_load: bool = True
    data_parallel_size: int = 1
    ray_address: str | None = None
    answer: str = "math"
    # True when nobody set max_tokens (model_args, recipe, lm-eval --gen_kwargs max_gen_toks): then
    # a task's own max_gen_toks (its generation_kwargs) is each request's max_tokens.
    max_tokens_from_task: bool = False

    def __post_init__(self) -> None:
        check_int("data_parallel_size", self.data_parallel_size, 1)
        if self.engine.deterministic and self.data_parallel_size > 1:
            raise invalid(
                "deterministic",
                "true",
                "only with data_parallel_size=1 (K workers would interleave their requests on "
                "the server)",
            )
        check_answer(self.answer)
        if not isinstance(self.max_tokens_from_task, bool):
            raise invalid("max_tokens_from_task", self.max_tokens_from_task, "true or false")
        search = self.search
        if self.prm is None and search.spec.needs_prm and search.self_score is None:
            raise invalid(
                "strategy",
                search.strategy,
                "majority without a PRM; strategy="
                f"{search.strategy} needs a PRM: add prm=<path or hub id> (or prm=self)",
            )
        if self.prm is not None and search.self_score is not None and search.spec.needs_prm:
            raise invalid(
                "self_score",
                search.self_score,
                f"only with prm=self (the policy's confidence in place of a PRM), not "
                f"prm={self.prm.path}",
            )
        k = search.logprobs_k
        if k is not None and self.engine.backend in LIMITED_LOGPROBS and k > VLLM_MAX_LOGPROBS:
            raise invalid(
                "confidence_topk",
                search.confidence_topk,
                f"an integer in 1..{VLLM_MAX_LOGPROBS} with backend={self.engine.backend} "
                "(vLLM returns at most max_logprobs=20 log-probabilities per token)",
            )


# Backends that return at most VLLM_MAX_LOGPROBS log-probabilities per token (vLLM's engine and
# server defaults); backend=hf returns any number.
LIMITED_LOGPROBS = ("vllm", "openai")
# Where and how the work runs, never what it returns: left out of the identity. Run level, then
# the policy engine's fields, then the PRM's.
PLACEMENT_KEYS = ("trace_path", "eager_load", "data_parallel_size", "ray_address")
PLACEMENT_ENGINE_KEYS = (
    "device",
    "batch_size",
    "gpu_memory_utilization",
    "tensor_parallel_size",
    "enforce_eager",
    "seed",  # seeds requests without a seed of their own; searches seed every request
    "base_url",
    "api_key",
    "max_concurrency",
    "timeout_s",
    "max_retries",
)
PLACEMENT_PRM_KEYS = (
    "device",
    "batch_tokens",
    "cache_bytes",
    "block_size",
    "gpu_memory_utilization",
    "tensor_parallel_size",
    "base_url",
    "api_key",
    "max_concurrency",
    "timeout_s",
    "max_retries",
)
# PRM settings added after the first identities (prm_backend and what names the PRM on a server):
# part of an identity only when not at their default, so earlier identities stay as they were.
LATER_PRM_KEYS = ("backend", "max_model_len", "model")
# Engine settings added after the first identities: part of an identity only when not at their
# default (a re-run against the same server reproduces the run with deterministic=true).
LATER_ENGINE_KEYS = ("deterministic",)
# Identity keys of the policy and the PRM (engine / PRM field -> identity key). The names of the
# first results-folder manifests (pretrained, revision, dtype, chat_template, prm, prm_type) are
# kept, so their folders are still compared key by key.
_ENGINE_NAMES = {"model": "served_model"}
_PRM_NAMES = {"path": "prm", "prm_type": "prm_type"}
TABLE_DIGEST_KEY = "compute_optimal_table_sha256"


def result_identity(config: TTSConfig, task: str | None = None) -> dict[str, Any]:
    """What identifies the results of ``config`` on ``task`` (see the module docstring); JSON-ready
    and flat but for ``search`` (the search settings, as recorded in every result)."""
    search = config.search.settings()
    for key, default in later_defaults().items():
        if key in search and search[key] == default:
            del search[key]  # identities of runs made before the option existed stay as they were
    identity: dict[str, Any] = {"task": task, "search": search}
    table = identity["search"].get("compute_optimal_table")
    if table is not None and Path(str(table)).is_file():
        identity[TABLE_DIGEST_KEY] = hashlib.sha256(Path(str(table)).read_bytes()).hexdigest()
    for f in dataclasses.fields(config.engine):
        value = getattr(config.engine, f.name)
        if f.name in LATER_ENGINE_KEYS and value == f.default:
            continue  # identities of settings made before the key existed stay as they were
        if f.name not in PLACEMENT_ENGINE_KEYS:
            identity[_ENGINE_NAMES.get(f.name, f.name)] = value
    for f in dataclasses.fields(PRMConfig):
        if f.name not in PLACEMENT_PRM_KEYS:
            value = None if config.prm is None else getattr(config.prm, f.name)
            if f.name in LATER_PRM_KEYS and (config.prm is None or value == f.default):
                continue
            identity[_PRM_NAMES.get(f.name, f"prm_{f.name}")] = (
                os.fspath(value) if isinstance(value, os.PathLike) else value
            )
    for f in dataclasses.fields(config):
        if f.name not in (*PLACEMENT_KEYS, "engine", "search", "prm"):
            identity[f.name] = getattr(config, f.name)
    return json.loads(json.dumps(identity, default=str))


def identity_digest(identity: Mapping[str, Any], size: int = 5) -> str:
    """A short, stable digest of an identity (or any part of one)."""
    payload = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.blake2b(payload.encode(), digest_size=size).hexdigest()


def results_fingerprint(config: TTSConfig) -> str:
    """A digest of :func:`result_identity` of ``config`` (any task): the key of lm-eval's
    response cache for ``--model tts``."""
    return identity_digest(result_identity(config), size=10)


# What names a run rather than its settings group: a strategy at a budget, with its own options.
RUN_NAMING_KEYS = ("strategy", "n")


def shared_search_settings(search: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an identity's search settings that a settings group shares: the shared search
    settings but strategy and budget (missing ones at their defaults), and the group options
    (:data:`tts_eval.search.spec.GROUP_OPTION`, e.g. ``beam_width``) the run has; its other own
    options name its curves instead. A run without a group option (majority has no beam width)
    belongs to every group it agrees with on the rest (:func:`compatible`)."""
    defaults = shared_defaults()
    out = {k: search.get(k, defaults[k]) for k in shared_keys() if k not in RUN_NAMING_KEYS}
    later = later_defaults()
    out.update(
        {
            k: search[k]
            for k in group_option_keys()
            if k in search and not (k in later and search[k] == later[k])
        }
    )
    return out


def compatible(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two :func:`shared_search_settings` agree on every key both have."""
    return all(a[k] == b[k] for k in a.keys() & b.keys())
