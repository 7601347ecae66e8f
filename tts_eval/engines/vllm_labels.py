"""Label and head reads on vLLM in this process: what ``prm_backend=vllm`` runs the PRMs on.

:class:`VLLMLabelReader` holds the PRM as its own ``vllm.LLM`` (built by
:func:`tts_eval.engines.vllm.open_llm`, with the policy engine's settings: prefix caching on; on
CPU eager, float32 for ``dtype=auto`` without native bfloat16, no chunked prefill, 32-token
blocks, its KV cache bounded by ``VLLM_CPU_KVCACHE_SPACE``; on GPUs its own
``gpu_memory_utilization`` share and ``tensor_parallel_size``). ``read(prompts)`` sends every
prompt as a token-id prompt with a greedy one-token generation asking vLLM's
``logprob_token_ids`` = the two label tokens (vLLM >= 0.32): vLLM returns, for exactly those
tokens, the log-softmax of the raw logits over the whole vocabulary (its default
``logprobs_mode=raw_logprobs``), whatever token it generates; ``allowed_token_ids`` keeps the
generated token one of them. (``logprobs=k`` would return the top ``k`` of the raw distribution,
which need not contain both labels.) Cached prompt tokens are vLLM's own
``RequestOutput.num_cached_tokens`` (whole blocks). Unlike ``prompt_logprobs`` (which vllm-cpu
0.32 serves with no prefix-cache hits), these requests hit the prefix cache, so the step prefixes
of a solution cost what is new.

:class:`VLLMHeadReader` reads the score-head PRMs vLLM runs as pooling models (Qwen's
``Qwen2ForProcessRewardModel``, any ``*ForTokenClassification``) the same way: each prompt ends at
a read position, vLLM's pooling runner returns the head's raw logits (``token_classify``, ``ALL``
token pooling, no activation) for the tokens it computed, and the last row is the read: its
class-1 and class-0 logits are returned as the ``(good, bad)`` pair (a one-logit head: the logit
and 0), so P(good) of the two-way softmax is the transformers head's P(class 1) (or sigmoid).
The requests read the prefix cache (vLLM's default for token pooling is not to, so that every
token gets its row): a cached prefix is not run again, the last token of a prompt always is.

What this module does not do: format PRM inputs or turn reads into scores
(:mod:`tts_eval.prm.labels`), or decide which formats run here (``tts_eval.settings``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tts_eval.engines.failures import first_line
from tts_eval.engines.vllm import close_llm, import_vllm, open_llm
from tts_eval.errors import EngineError
from tts_eval.settings import EngineConfig

logger = logging.getLogger(__name__)


def label_logprobs(entry: Any, ids: Sequence[int]) -> list[float]:
    """The log-probabilities of ``ids`` at one position of a vLLM ``CompletionOutput.logprobs``
    (a dict ``token id -> Logprob``, or ``FlatLogprobs`` with ``flat_logprobs=True``)."""
    if hasattr(entry, "start_indices"):  # FlatLogprobs: position 0 of a one-token output
        start, end = entry.start_indices[0], entry.end_indices[0]
        values = dict(zip(entry.token_ids[start:end], entry.logprobs[start:end], strict=True))
    elif isinstance(entry, Sequence) and entry and isinstance(entry[0], Mapping):
        values = {int(t): float(lp.logprob) for t, lp in entry[0].items()}
    else:
        raise RuntimeError(f"vLLM returned no log-probabilities ({type(entry).__name__})")
    missing = [t for t in ids if t not in values]
    if missing:
        raise RuntimeError(
            f"vLLM returned no log-probability for label token(s) {missing}; label reads need "
            "logprob_token_ids (vLLM 0.32 or newer)"
        )
    return [float(values[t]) for t in ids]


class _VLLMReader:
    """What both readers share: the PRM's own ``vllm.LLM`` (``options``: extra ``vllm.LLM``
    arguments), running token prompts that must fit its ``max_model_len``, and closing it."""

    def __init__(self, config: EngineConfig, **options: Any) -> None:
        if config.backend != "vllm":
            raise ValueError(f"{type(self).__name__} needs backend=vllm, got {config.backend!r}")
        self.config = config
        self._vllm = import_vllm()
        self.llm, on_cpu = open_llm(config, **options)
        self.device = "cpu" if on_cpu else "gpu"
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)

    def _run(self, method: str, prompts: Sequence[tuple[int, ...]], params: Any, **kw: Any) -> Any:
        """``self.llm.<method>`` on ``prompts`` as token prompts; a vLLM failure is one
        ``EngineError`` line."""
        from vllm.inputs import TokensPrompt

        if "llm" not in self.__dict__:
            raise RuntimeError("this PRM was closed; load it again")
        for prompt in prompts:
            if not prompt or len(prompt) >= self.max_model_len:
                raise ValueError(
                    f"a PRM input of {len(prompt)} tokens does not fit the PRM's "
                    f"max_model_len={self.max_model_len} (set prm_max_model_len=)"
                )
        t0 = time.perf_counter()
        try:
            outputs = getattr(self.llm, method)(
                [TokensPrompt(prompt_token_ids=list(p)) for p in prompts],
                params,
                use_tqdm=False,
                **kw,
            )
        except Exception as exc:
            raise EngineError(
                f"PRM {self.config.pretrained} on vLLM failed reading {len(prompts)} step "
                f"prefixes: {first_line(exc)} (vLLM's log above has the full traceback)"
            ) from exc
        logger.debug("vLLM PRM: %d reads in %.2fs", len(prompts), time.perf_counter() - t0)
        return outputs

    def close(self) -> None:
        """Stop vLLM's engine core and free the PRM's memory (idempotent)."""
        close_llm(self)


def _cached(out: Any) -> int | None:
    """vLLM's count of a request's prompt tokens served from its prefix cache (None: unknown)."""
    cached = getattr(out, "num_cached_tokens", None)
    return None if cached is None else int(cached)


class VLLMLabelReader(_VLLMReader):
    """One-token label reads over an in-process ``vllm.LLM`` (see the module docstring)."""

    def __init__(self, config: EngineConfig, good_id: int, bad_id: int) -> None:
        super().__init__(config)
        self.good_id, self.bad_id = int(good_id), int(bad_id)
        labels = [self.good_id, self.bad_id]
        self._params = self._vllm.SamplingParams(
            max_tokens=1,
            temperature=0.0,
            logprob_token_ids=labels,
            allowed_token_ids=labels,
            detokenize=False,
        )

    def read(self, prompts: Sequence[tuple[int, ...]]) -> list[tuple[float, float, int | None]]:
        """``(good, bad, cached prompt tokens)`` per prompt (``tts_eval.prm.labels.LabelRead``)."""
        reads = []
        for out in self._run("generate", prompts, self._params):
            if len(out.outputs) != 1:
                raise RuntimeError(f"vLLM returned {len(out.outputs)} outputs for a label read")
            good, bad = label_logprobs(out.outputs[0].logprobs, (self.good_id, self.bad_id))
            reads.append((good, bad, _cached(out)))
        return reads


class VLLMHeadReader(_VLLMReader):
    """Head reads over an in-process pooling ``vllm.LLM`` (see the module docstring):
    ``good_id``/``bad_id`` are the head's class indices (1 and 0)."""

    good_id, bad_id = 1, 0

    def __init__(self, config: EngineConfig) -> None:
        import_vllm()  # its install hint, before vllm.config is imported
        from vllm.config import PoolerConfig

        pooler = PoolerConfig(task="token_classify", tok_pooling_type="ALL", use_activation=False)
        super().__init__(config, runner="pooling", pooler_config=pooler)
        # vLLM skips the prefix cache for token pooling (its output then covers only the tokens
        # computed); the reads need only the last token's row, which is always computed
        self._params = self._vllm.PoolingParams(
            use_activation=False, skip_reading_prefix_cache=False
        )

    def read(self, prompts: Sequence[tuple[int, ...]]) -> list[tuple[float, float, int | None]]:
        """``(class-1 logit, class-0 logit, cached prompt tokens)`` at each prompt's last token
        (a one-logit head: ``(logit, 0.0, cached)``)."""
        outputs = self._run("encode", prompts, self._params, pooling_task="token_classify")
        reads = []
        for prompt, out in zip(prompts, outputs, strict=True):
            logits = out.outputs.data
            if logits.ndim != 2 or logits.shape[0] < 1 or logits.shape[0] > len(prompt):
                raise RuntimeError(
                    f"vLLM's pooling runner returned logits of shape {tuple(logits.shape)} for a "
                    f"{len(prompt)}-token prompt (expected one row per computed token)"
                )
            last = logits[-1].float().tolist()
            good, bad = (last[0], 0.0) if len(last) == 1 else (last[1], last[0])
            reads.append((good, bad, _cached(out)))
        return reads
