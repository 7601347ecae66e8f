"""The transformers policy engine: portable step generation on CPU or one GPU.

:class:`HFEngine` implements :class:`tts_eval.types.PolicyEngine` with its own decoding loop over a
KV cache (not ``model.generate``) so that every completion draws from its own
``torch.Generator``: completion ``j`` of a request with ``params.seed = s`` is seeded with ``s + j``
(vLLM's convention), which makes it reproducible regardless of what else shares the batch.
Requests are expanded into rows (one per completion), sorted by prompt length and run in chunks of
``batch_size`` rows with left padding; each distinct request in a chunk is prefilled once and its
cache copied to its rows. A row stops at the first of:

- an EOS id (tokenizer's or generation config's): ``FinishReason.EOS``, the EOS token is kept;
- its decoded continuation containing one of ``params.stop``: ``FinishReason.STEP``, keeping the
  tokens up to and including the one that completed the stop string;
- ``params.max_tokens`` tokens, or the model's maximum length: ``FinishReason.LENGTH``.

Temperature 0 is greedy (argmax); otherwise softmax at the temperature, nucleus (top_p) filtering,
and an inverse-CDF draw with one uniform number from the row's generator per token.

Log-probabilities (``SamplingParams.logprobs = k``): for the rows that ask, every step also takes
the float32 log-softmax of the same logits at temperature 1 (:func:`token_logprobs`: the generated
token's value and the top ``k``), the numbers vLLM returns in its default ``raw_logprobs`` mode;
rows that do not ask cost nothing extra. ``k`` may be anything up to the model's vocabulary.

Progress: ``HFEngine.progress`` (``None`` by default: a bar only for calls longer than a couple of
seconds; ``True`` always, ``False`` never) shows a tqdm bar on stderr over the call's completions,
with requests done, tokens generated and tokens/s (:mod:`tts_eval.engines.progress`). Errors: bad
requests raise ``ValueError`` before any forward pass, running out of device memory raises
:class:`~tts_eval.errors.OutOfMemoryError`, and anything else that fails inside the decoding loop
raises a one-line :class:`~tts_eval.errors.EngineError` naming the model and the requests of the
failing chunk.

Prompt cost: every completion queries its prompt (``prompt_tokens`` = prompt length x ``n``, as in
vLLM); within a chunk a request's prompt is prefilled once and copied to its other rows, and those
copies are ``cached_prompt_tokens``. ``HFEngine.counters`` (:class:`PromptCounters`) sums what
the prefills actually ran.

What this module does not do: reuse KV across calls, tensor parallelism, or continuous batching
(use ``backend=vllm`` for throughput).
"""

from __future__ import annotations

import inspect
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tts_eval.engines.chat import (
    DEFAULT_HF_BATCH_SIZE,
    eos_token_ids,
    load_tokenizer,
    render_chat,
)
from tts_eval.engines.counters import PromptCounters
from tts_eval.engines.failures import engine_error
from tts_eval.engines.progress import GenerationProgress
from tts_eval.errors import MissingDependencyError, OutOfMemoryError, SettingError
from tts_eval.memory import free_device_memory, torch_oom_types
from tts_eval.settings import EngineConfig
from tts_eval.types import (
    Completion,
    FinishReason,
    GenerationOutput,
    GenerationRequest,
    SamplingParams,
    TokenLogprobs,
)

logger = logging.getLogger(__name__)

_TORCH_HINT = "backend=hf needs torch and transformers: pip install tts-scaling-eval"


@dataclass
class _Row:
    """One completion being generated (mutable decoding state)."""

    request: int
    index: int
    seed: int
    params: SamplingParams
    prompt_len: int
    tokens: list[int] = field(default_factory=list)
    finish: FinishReason | None = None
    generator: Any = None
    logprobs: list[TokenLogprobs] | None = None  # one per token when the request asked


def validate_stops(stop: Sequence[str]) -> None:
    """Stop strings must be non-empty (an empty one would end every completion at once)."""
    for s in stop:
        if not isinstance(s, str) or not s:
            raise ValueError(f"stop string {s!r} is invalid; accepted: non-empty strings")


def stop_window(tokens: Sequence[int], stop_bytes: int, special_ids: frozenset[int]) -> list[int]:
    """The shortest tail of ``tokens`` whose text must contain any stop string just completed.

    Every non-special token decodes to at least one byte, so a stop string of ``stop_bytes`` bytes
    that ends in the last token starts within the last ``stop_bytes`` non-special tokens; one more
    token is kept so a stop string preceded by a split character still decodes cleanly.
    """
    need = stop_bytes + 1
    start = len(tokens)
    while start > 0 and need > 0:
        start -= 1
        if tokens[start] not in special_ids:
            need -= 1
    return list(tokens[start:])


def pick_token(logits: Any, params: SamplingParams, generator: Any) -> int:
    """Choose the next token from one row's float32 ``logits`` (greedy or seeded top-p)."""
    import torch

    if params.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True, stable=True)
        keep = (torch.cumsum(sorted_p, dim=-1) - sorted_p) < params.top_p
        cdf = torch.cumsum(sorted_p * keep, dim=-1)
    else:
        order = None
        cdf = torch.cumsum(probs, dim=-1)
    u = torch.rand(1, generator=generator, device=generator.device).to(cdf.device) * cdf[-1]
    k = int(torch.searchsorted(cdf, u, right=True).clamp(max=cdf.numel() - 1))
    return int(order[k]) if order is not None else k


def top_logprobs(
    ids: Sequence[int], values: Sequence[float], k: int
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The ``k`` most likely of ``(ids, values)`` in :class:`TokenLogprobs` order: most likely
    first, equal values by lower id (backends break such ties each their own way)."""
    pairs = sorted(zip(ids, values, strict=True), key=lambda p: (-p[1], p[0]))[:k]
    return tuple(int(i) for i, _ in pairs), tuple(float(v) for _, v in pairs)


def token_logprobs(logits: Any, tokens: Sequence[int], ks: Sequence[int]) -> list[TokenLogprobs]:
    """:class:`TokenLogprobs` of ``tokens[r]`` and the top ``ks[r]`` under row ``r`` of ``logits``
    (``[rows, vocab]``): the float32 log-softmax at temperature 1, as vLLM's ``raw_logprobs``."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = torch.tensor(list(tokens), dtype=torch.long, device=logp.device)[:, None]
    sampled = logp.gather(-1, picked)[:, 0].tolist()
    widest = max(ks, default=0)
    if widest:
        # one more than asked, so that a tie at the k-th place is broken by id as documented
        values, ids = torch.topk(logp, min(widest + 1, logp.shape[-1]), dim=-1)
        values, ids = values.tolist(), ids.tolist()
    out = []
    for r, k in enumerate(ks):
        top = top_logprobs(ids[r], values[r], k) if k else ((), ())
        out.append(TokenLogprobs(float(sampled[r]), *top))
    return out


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SettingError("device", device, "cpu (no CUDA device is visible here)")
    return device


class HFEngine:
    """Batched, seeded step generation with transformers (see the module docstring)."""

    def __init__(self, config: EngineConfig) -> None:
        if config.backend != "hf":
            raise ValueError(f"HFEngine needs backend=hf, got backend={config.backend!r}")
        self.config = config
        self.tokenizer = load_tokenizer(config)
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError as exc:  # pragma: no cover - torch is a hard dependency
            raise MissingDependencyError(f"{_TORCH_HINT} ({exc})") from exc

        self.device = _resolve_device(config.device)
        dtype = "auto" if config.dtype == "auto" else getattr(torch, config.dtype)
        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(
            config.pretrained,
            dtype=dtype,
            revision=config.revision,
            trust_remote_code=config.trust_remote_code,
        )
        self.model = model.to(self.device).eval()
        logger.info(
            "loaded %s on %s (%s) in %.1fs",
            config.pretrained,
            self.device,
            self.model.dtype,
            time.perf_counter() - t0,
        )
        self.eos_ids = eos_token_ids(self.tokenizer, getattr(model, "generation_config", None))
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else min(self.eos_ids)  # masked out anyway
        self.special_ids = frozenset(int(i) for i in self.tokenizer.all_special_ids)
        self.vocab_size = int(self.model.get_input_embeddings().num_embeddings)
        limit = config.max_model_len or getattr(model.config, "max_position_embeddings", None)
        self.max_model_len: int | None = int(limit) if limit else None
        self.batch_size = config.batch_size or DEFAULT_HF_BATCH_SIZE
        self._seed_rng = random.Random(config.seed)
        forward_params = inspect.signature(self.model.forward).parameters
        self._logits_to_keep = "logits_to_keep" in forward_params
        # Progress bar on stderr: None = only for calls longer than PROGRESS_DELAY_S seconds.
        self.progress: bool | None = None
        self.counters = PromptCounters()

    # ------------------------------------------------------------------------------------------
    def render_prompt(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        return render_chat(self.tokenizer, messages)

    def close(self) -> None:
        """Drop the model weights and free their device memory (the engine is unusable after)."""
        self.__dict__.pop("model", None)
        free_device_memory()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        rows = self._expand(requests)
        t0 = time.perf_counter()
        order = sorted(range(len(rows)), key=lambda k: rows[k].prompt_len)
        chunks = [
            [rows[k] for k in order[start : start + self.batch_size]]
            for start in range(0, len(order), self.batch_size)
        ]
        with GenerationProgress((r.request for r in rows), self.progress, "hf generate") as bar:
            self._run_chunks(chunks, rows, requests, bar)
        prefills = [0] * len(requests)  # prefills per request: once per chunk holding its rows
        for chunk in chunks:
            for i in {r.request for r in chunk}:
                prefills[i] += 1
        outputs = self._outputs(requests, rows, prefills)
        logger.debug(
            "generated %d rows (%d tokens) for %d requests in %.2fs",
            len(rows),
            bar.tokens,
            len(requests),
            time.perf_counter() - t0,
        )
        return outputs

    def _run_chunks(
        self,
        chunks: list[list[_Row]],
        rows: list[_Row],
        requests: Sequence[GenerationRequest],
        bar: GenerationProgress,
    ) -> None:
        """Run every chunk, turning backend failures into OutOfMemoryError / EngineError."""
        chunk: list[_Row] = []
        try:
            for chunk in chunks:
                self._run_chunk(chunk, requests, bar)
        except torch_oom_types() as exc:
            longest = max(r.params.max_tokens for r in rows)
            raise OutOfMemoryError(
                f"policy out of memory on {self.device} generating {len(rows)} rows "
                f"(up to {longest} new tokens each) in chunks of batch_size={self.batch_size}; "
                "lower batch_size= or max_tokens=, or use backend=vllm"
            ) from exc
        except Exception as exc:
            raise engine_error(
                "hf", self.config.pretrained, requests, [r.request for r in chunk], exc
            ) from exc

    def _outputs(
        self, requests: Sequence[GenerationRequest], rows: list[_Row], prefills: list[int]
    ) -> list[GenerationOutput]:
        by_request: list[list[_Row]] = [[] for _ in requests]
        for row in rows:
            by_request[row.request].append(row)
        outputs = []
        for req, req_rows, prefilled in zip(requests, by_request, prefills, strict=True):
            completions = tuple(
                Completion(
                    text=self.tokenizer.decode(r.tokens, skip_special_tokens=True),
                    token_ids=tuple(r.tokens),
                    finish_reason=r.finish,
                    logprobs=None if r.logprobs is None else tuple(r.logprobs),
                )
                for r in sorted(req_rows, key=lambda r: r.index)
            )
            queried = len(req.prompt_ids) * len(req_rows)
            outputs.append(
                GenerationOutput(
                    completions=completions,
                    prompt_tokens=queried,
                    cached_prompt_tokens=queried - len(req.prompt_ids) * prefilled,
                )
            )
        return outputs

    # ------------------------------------------------------------------------------------------
    def _expand(self, requests: Sequence[GenerationRequest]) -> list[_Row]:
        """Validate requests and make one row per completion (before any forward pass)."""
        import torch

        rows: list[_Row] = []
        for i, req in enumerate(requests):
            n_prompt = len(req.prompt_ids)
            if n_prompt == 0:
                raise ValueError(f"request {i}: prompt_ids is empty; render a prompt first")
            bad = [t for t in req.prompt_ids if not 0 <= t < self.vocab_size]
            if bad:
                raise ValueError(
                    f"request {i}: prompt token id {bad[0]} is outside the vocabulary "
                    f"[0, {self.vocab_size})"
                )
            if self.max_model_len is not None and n_prompt >= self.max_model_len:
                raise ValueError(
                    f"request {i}: prompt of {n_prompt} tokens leaves no room under "
                    f"max_model_len={self.max_model_len}"
                )
            validate_stops(req.params.stop)
            k = req.params.logprobs
            if k is not None and k > self.vocab_size:
                raise ValueError(
                    f"request {i}: logprobs={k} is more than the model's vocabulary has; "
                    f"accepted: 0 to {self.vocab_size}"
                )
            seed = req.params.seed
            if seed is None:
                seed = self._seed_rng.randrange(2**31)
            for j in range(req.params.n):
                gen = torch.Generator(device=self.device)
                gen.manual_seed(seed + j)
                row = _Row(i, j, seed + j, req.params, n_prompt, generator=gen)
                row.logprobs = None if k is None else []
                rows.append(row)
        return rows

    def _forward(self, input_ids, attention_mask, position_ids, past):
        kwargs = {"logits_to_keep": 1} if self._logits_to_keep else {}
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past,
            use_cache=True,
            **kwargs,
        )
        return out.logits[:, -1, :].float(), out.past_key_values

    def _run_chunk(
        self, rows: list[_Row], requests: Sequence[GenerationRequest], bar: GenerationProgress
    ) -> None:
        import torch

        dev = self.device
        uniq = list(dict.fromkeys(r.request for r in rows))
        prompts = [requests[i].prompt_ids for i in uniq]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for b, p in enumerate(prompts):
            ids[b, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[b, width - len(p) :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)

        with torch.inference_mode():
            logits, cache = self._forward(ids, mask, pos, None)
            ran = sum(len(p) for p in prompts)
            self.counters.add(
                sum(r.prompt_len for r in rows), sum(r.prompt_len for r in rows) - ran
            )
            slot = {req: b for b, req in enumerate(uniq)}
            row_map = torch.tensor([slot[r.request] for r in rows], device=dev)
            if len(rows) != len(uniq):
                cache.batch_select_indices(row_map)
            logits, mask = logits[row_map], mask[row_map]
            next_pos = pos[row_map, -1] + 1
            active = list(rows)
            while True:
                new_tokens = [
                    pick_token(logits[k], r.params, r.generator) for k, r in enumerate(active)
                ]
                self._record_logprobs(active, logits, new_tokens)
                for r, tok in zip(active, new_tokens, strict=True):
                    self._append(r, tok)
                bar.update(len(active), [r.request for r in active if r.finish is not None])
                keep = [k for k, r in enumerate(active) if r.finish is None]
                if not keep:
                    break
                if len(keep) < len(active):
                    idx = torch.tensor(keep, device=dev)
                    cache.batch_select_indices(idx)
                    mask, next_pos = mask[idx], next_pos[idx]
                    active = [active[k] for k in keep]
                    new_tokens = [new_tokens[k] for k in keep]
                step_ids = torch.tensor(new_tokens, dtype=torch.long, device=dev)[:, None]
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
                logits, cache = self._forward(step_ids, mask, next_pos[:, None], cache)
                next_pos = next_pos + 1

    @staticmethod
    def _record_logprobs(active: list[_Row], logits: Any, new_tokens: list[int]) -> None:
        """Append the :class:`TokenLogprobs` of this step's token to the rows that asked."""
        want = [k for k, r in enumerate(active) if r.logprobs is not None]
        if not want:
            return
        if len(want) < len(active):
            import torch

            logits = logits[torch.tensor(want, device=logits.device)]
        found = token_logprobs(
            logits, [new_tokens[k] for k in want], [active[k].params.logprobs for k in want]
        )
        for k, entry in zip(want, found, strict=True):
            active[k].logprobs.append(entry)  # type: ignore[union-attr]

    def _append(self, row: _Row, token: int) -> None:
        """Add ``token`` to ``row`` and decide whether (and why) the row is finished."""
        row.tokens.append(token)
        if token in self.eos_ids:
            row.finish = FinishReason.EOS
            return
        stop = row.params.stop
        if stop:
            longest = max(len(s.encode("utf-8")) for s in stop)
            window = stop_window(row.tokens, longest, self.special_ids)
            text = self.tokenizer.decode(window, skip_special_tokens=True)
            if any(s in text for s in stop):
                row.finish = FinishReason.STEP
                return
        if len(row.tokens) >= row.params.max_tokens:
            row.finish = FinishReason.LENGTH
        elif (
            self.max_model_len is not None
            and row.prompt_len + len(row.tokens) >= self.max_model_len
        ):
            row.finish = FinishReason.LENGTH
