"""Every setting of tts-eval, validated and typed, and the one adapter from lm-eval's ``model_args``.

One place for what a run is told to do:

- the grammar every setting shares: the device grammar (``auto``, ``cpu``, ``mps``, ``cuda[:N]``,
  ``xpu[:N]``), the dtype list, the hub-id pattern, and one message style for every bad value:
  ``model_args KEY=VALUE is invalid; accepted: ...`` (``invalid``);
- the strategy registry (:data:`STRATEGY_INFO`): the one list of strategy names, read by the
  parser, the search package, compute-optimal routing tables and sweep recipes;
- the frozen configs: :class:`EngineConfig` (policy), :class:`PRMConfig`, :class:`SearchConfig`
  (with the compute-optimal routing table it may name), :class:`RayOptions`, and
  :class:`TTSConfig`, which holds them all plus the answer setting (``answer=math | number |
  regex:<pattern>``);
- :func:`parse_model_args`: flat ``k=v,...`` (or a mapping, or ``config=<recipe.yaml>``) onto a
  :class:`TTSConfig`, together with what lm-eval's own flags ask (``--seed``, ``--gen_kwargs``,
  ``--batch_size``, ``--device``; :data:`LM_EVAL_FLAGS`); every key is checked before anything
  loads. Precedence: model_args (and recipe) > lm-eval flag > the task's generation_kwargs
  (``max_gen_toks`` only, applied per request by ``tts_eval.lm_model``) > default;
- :func:`results_fingerprint`: a digest of every setting that can change what a run returns (the
  key of lm-eval's response cache for ``--model tts``).

What this module does not do: load tokenizers or models, render chats (``tts_eval.engines``), run
searches (``tts_eval.search``) or build answer specs (``tts_eval.grader``). It imports only the
standard library (and PyYAML, lazily, for recipes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import typing
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Grammar shared by every setting
# --------------------------------------------------------------------------------------------

DEVICE_GRAMMAR = "auto, cpu, mps, cuda, cuda:N, xpu, xpu:N"
_DEVICE_RE = re.compile(r"auto|cpu|mps|(?:cuda|xpu)(?::\d+)?")
# "auto": the engine's or PRM's default (bfloat16 on a GPU, float32 on CPU for the PRM; the model's
# own dtype for the policy).
DTYPES = ("auto", "float32", "float16", "bfloat16")
# "org/name" or a bare legacy name ("gpt2"); hub ids never contain more than one slash.
_HUB_ID_RE = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")


def invalid(key: str, value: Any, accepted: str, *, scope: str = "model_args") -> ValueError:
    """The one error of a bad setting: ``model_args KEY=VALUE is invalid; accepted: ...``."""
    return ValueError(f"{scope} {key}={_show(value)} is invalid; accepted: {accepted}")


def _show(value: Any) -> str:
    if isinstance(value, str):
        # Control characters are shown escaped (as typed on a command line): one line, always.
        text = "".join(repr(c)[1:-1] if c.isspace() and c != " " else c for c in value)
        return text if text else "''"
    return repr(value)


def check_int(key: str, value: Any, minimum: int, *, scope: str = "model_args") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise invalid(key, value, f"an integer >= {minimum}", scope=scope)


def check_float(key: str, value: Any, accepted: str, ok, *, scope: str = "model_args") -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not ok(value)
    ):
        raise invalid(key, value, accepted, scope=scope)


def check_choice(key: str, value: Any, choices: tuple[str, ...], *, scope: str = "model_args"):
    if value not in choices:
        raise invalid(key, value, ", ".join(choices), scope=scope)


def check_device(key: str, value: Any) -> None:
    if not isinstance(value, str) or not _DEVICE_RE.fullmatch(value):
        raise invalid(key, value, DEVICE_GRAMMAR)


def looks_like_hub_id(name: str) -> bool:
    """True for ``org/name`` or a bare ``name`` (what ``from_pretrained`` may fetch)."""
    return bool(_HUB_ID_RE.fullmatch(name)) and not name.startswith((".", "~"))


def check_model_path(key: str, path: str) -> None:
    """Reject a model argument that is neither an existing path nor a plausible hub id."""
    if os.path.exists(os.path.expanduser(path)) or looks_like_hub_id(path):
        return
    raise invalid(
        key, path, "an existing model directory or a hub id (org/name); no such directory"
    )


# --------------------------------------------------------------------------------------------
# The strategy registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrategyInfo:
    """One search strategy: its name and what it needs.

    ``needs_prm``: it cannot run without a process reward model. ``tree``: it keeps
    ``n // beam_width`` beams or subtrees (``n`` must be a multiple of ``beam_width``; lookahead
    applies). ``routable``: a compute-optimal routing table may send problems to it. ``keys``: the
    settings only it reads (refused with any other strategy; recorded only for it).
    """

    name: str
    summary: str
    needs_prm: bool
    tree: bool = False
    routable: bool = True
    keys: tuple[str, ...] = ()


STRATEGY_INFO: Mapping[str, StrategyInfo] = {
    info.name: info
    for info in (
        StrategyInfo("majority", "n samples, majority vote over answers", needs_prm=False),
        StrategyInfo("best_of_n", "n samples, PRM-weighted or best single answer", True),
        StrategyInfo("beam_search", "step-level beam search, n // beam_width beams", True, True),
        StrategyInfo("dvts", "n // beam_width independent subtrees (diverse verifier)", True, True),
        StrategyInfo(
            "compute_optimal", "per-problem strategy from a difficulty probe", True, routable=False
        ),
        StrategyInfo(
            "particle_filtering",
            "n particles resampled by PRM weight each step (Puri et al. 2025)",
            True,
            routable=False,
            keys=("resampling", "pf_temperature"),
        ),
        StrategyInfo(
            "particle_gibbs",
            "pg_iterations sweeps of particle filtering with reference particles",
            True,
            routable=False,
            keys=("resampling", "pf_temperature", "pg_iterations", "pg_reference_particles"),
        ),
    )
}
STRATEGIES = tuple(STRATEGY_INFO)
TREE_STRATEGIES = tuple(s for s, info in STRATEGY_INFO.items() if info.tree)
ROUTABLE_STRATEGIES = tuple(s for s, info in STRATEGY_INFO.items() if info.routable)
AGGREGATIONS = ("last", "min", "prod", "mean")
SELECTIONS = ("naive", "weighted")
RESAMPLINGS = ("multinomial", "systematic")
# setting -> the strategies that read it (the others refuse it)
STRATEGY_KEYS: Mapping[str, tuple[str, ...]] = {
    key: tuple(s for s, info in STRATEGY_INFO.items() if key in info.keys)
    for info in STRATEGY_INFO.values()
    for key in info.keys
}


# --------------------------------------------------------------------------------------------
# Policy engine
# --------------------------------------------------------------------------------------------

BACKENDS = ("hf", "vllm", "openai")
# KV-cache block sizes (tokens) vLLM's attention backends accept.
BLOCK_SIZES = (16, 32, 64, 128, 256)

# EngineConfig fields that concern backend=openai only (a policy behind an OpenAI-compatible server).
OPENAI_KEYS = (
    "base_url",
    "api_key",
    "model",
    "max_concurrency",
    "timeout_s",
    "max_retries",
    "deterministic",
)


@dataclass(frozen=True)
class EngineConfig:
    """A policy engine, validated on construction (before anything loads).

    ``device`` and ``batch_size`` (rows per forward pass) concern ``backend=hf``;
    ``gpu_memory_utilization``, ``tensor_parallel_size``, ``enforce_eager`` (None: True on CPU,
    False on GPU) and ``block_size`` (tokens per KV-cache block, the granularity of vLLM's prefix
    cache; None: vLLM's platform default, 128 on CPU) concern ``backend=vllm``; :data:`OPENAI_KEYS` concern ``backend=openai`` (the
    server's ``/v1`` URL, its API key (None: ``OPENAI_API_KEY``), the served model name (None: the
    only one the server lists), parallel requests, seconds per request, retries per request, and
    ``deterministic``: one request at a time in request order, from a prefix cache reset at
    start-up, so that a re-run against the same server reproduces the run; see
    ``tts_eval.engines.openai``); ``pretrained`` then names the tokenizer that renders prompts. ``seed`` seeds requests that
    carry no seed of their own (hf) or vLLM's global generator (vllm). ``chat_template`` (a Jinja
    string) replaces the tokenizer's own, for models that ship none.
    """

    pretrained: str
    backend: str = "hf"
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    batch_size: int | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    enforce_eager: bool | None = None
    block_size: int | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    chat_template: str | None = None
    base_url: str | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    model: str | None = None
    max_concurrency: int = 64
    timeout_s: float = 600.0
    max_retries: int = 4
    deterministic: bool = False

    def __post_init__(self) -> None:
        check_choice("backend", self.backend, BACKENDS)
        self._check_openai_keys()
        if not isinstance(self.pretrained, str) or not self.pretrained.strip():
            raise invalid("pretrained", self.pretrained, "a model directory or hub id")
        check_choice("dtype", self.dtype, DTYPES)
        check_device("device", self.device)
        check_int("seed", self.seed, 0)
        for key in ("batch_size", "max_model_len"):
            if getattr(self, key) is not None:
                check_int(key, getattr(self, key), 1)
        check_float(
            "gpu_memory_utilization",
            self.gpu_memory_utilization,
            "a fraction in (0, 1]",
            lambda v: 0 < v <= 1,
        )
        check_int("tensor_parallel_size", self.tensor_parallel_size, 1)
        if self.block_size is not None:
            if self.backend != "vllm":
                raise invalid(
                    "block_size",
                    self.block_size,
                    "only with backend=vllm (a server sets its own with backend=openai)",
                )
            if isinstance(self.block_size, bool) or self.block_size not in BLOCK_SIZES:
                raise invalid("block_size", self.block_size, ", ".join(map(str, BLOCK_SIZES)))
        if self.backend == "hf" and self.tensor_parallel_size != 1:
            raise invalid(
                "tensor_parallel_size",
                self.tensor_parallel_size,
                "1 with backend=hf (it runs on one device; use backend=vllm to shard)",
            )

    def _check_openai_keys(self) -> None:
        if self.backend != "openai":
            for f in dataclasses.fields(self):
                if f.name in OPENAI_KEYS and getattr(self, f.name) != f.default:
                    shown = "***" if f.name == "api_key" else getattr(self, f.name)
                    raise invalid(f.name, shown, "only with backend=openai")
            return
        if self.base_url in (None, ""):
            raise ValueError(
                "model_args base_url is required with backend=openai; accepted: the server's "
                "/v1 URL, e.g. http://localhost:8000/v1"
            )
        if not isinstance(self.base_url, str) or not re.fullmatch(
            r"https?://[^\s/]+(/\S*)?", self.base_url
        ):
            raise invalid(
                "base_url",
                self.base_url,
                "an http:// or https:// URL, e.g. http://localhost:8000/v1",
            )
        for key in ("api_key", "model"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise invalid(key, "***" if key == "api_key" else value, "a non-empty string")
        check_int("max_concurrency", self.max_concurrency, 1)
        check_float("timeout_s", self.timeout_s, "seconds > 0", lambda v: v > 0)
        check_int("max_retries", self.max_retries, 0)
        if not isinstance(self.deterministic, bool):
            raise invalid("deterministic", self.deterministic, "true or false")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> EngineConfig:
        """Build from keyword options, naming any unknown one (instead of a bare TypeError)."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise ValueError(
                f"unknown engine option(s) {', '.join(unknown)}; accepted: {', '.join(names)}"
            )
        return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# Process reward model
# --------------------------------------------------------------------------------------------

PRM_TYPE_NAMES = ("rlhflow", "math_shepherd", "qwen_prm", "skywork", "token_classification")
STEP_SEPARATOR_TYPES = ("skywork", "token_classification")
# The entry-point group through which installed packages add PRM formats (tts_eval.prm.registry).
PRM_FORMATS_GROUP = "tts_eval.prm_formats"
# PRM types registered in this process (tts_eval.prm.register_prm_format): name -> whether it
# takes prm_step_separator.
_REGISTERED_PRM_TYPES: dict[str, bool] = {}


def installed_prm_formats() -> tuple[str, ...]:
    """Names of the PRM formats installed packages declare in :data:`PRM_FORMATS_GROUP` (read
    from package metadata: nothing is imported)."""
    from importlib.metadata import entry_points

    return tuple(ep.name for ep in entry_points(group=PRM_FORMATS_GROUP))


def prm_type_names() -> tuple[str, ...]:
    """Every accepted ``prm_type``: built in, registered in this process, then installed."""
    names = [*PRM_TYPE_NAMES, *_REGISTERED_PRM_TYPES]
    return tuple(names + [n for n in installed_prm_formats() if n not in names])


def note_prm_type(name: str, *, step_separator: bool) -> None:
    """Record a PRM type registered in this process (called by ``register_prm_format``)."""
    _REGISTERED_PRM_TYPES[name] = step_separator


def refuses_step_separator(prm_type: str) -> bool:
    """Whether ``prm_type`` is known not to take ``prm_step_separator`` (an installed format not
    loaded yet is checked when it loads)."""
    if prm_type in PRM_TYPE_NAMES:
        return prm_type not in STEP_SEPARATOR_TYPES
    return _REGISTERED_PRM_TYPES.get(prm_type) is False


# model_args key -> PRMConfig field
PRM_KEYS = {
    "prm": "path",
    "prm_type": "prm_type",
    "prm_device": "device",
    "prm_dtype": "dtype",
    "prm_batch_tokens": "batch_tokens",
    "prm_cache_bytes": "cache_bytes",
    "prm_block_size": "block_size",
    "prm_step_separator": "step_separator",
}
_PRM_KEY_OF = {field: key for key, field in PRM_KEYS.items()}


def _prm_key(field: str) -> str:
    return _PRM_KEY_OF.get(field, f"prm_{field}")


@dataclass(frozen=True)
class PRMConfig:
    """How to load a PRM. ``None`` device/dtype (or ``auto``): cuda + bfloat16 when a GPU is
    visible, else cpu + float32. ``cache_bytes=0`` disables prefix reuse. ``step_separator`` is the
    step token of ``skywork`` and the separator of ``token_classification`` (default "\\n")."""

    path: str
    prm_type: str | None = None
    device: str | None = None
    dtype: str | None = None
    batch_tokens: int = 8192
    cache_bytes: int = 2 << 30
    block_size: int = 16
    step_separator: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, (str, os.PathLike)) or not str(self.path):
            raise invalid("prm", self.path, "a PRM model directory or hub id")
        if self.prm_type is not None and self.prm_type not in PRM_TYPE_NAMES:
            check_choice("prm_type", self.prm_type, prm_type_names())
        if self.device is not None:
            check_device("prm_device", self.device)
        if self.dtype is not None:
            check_choice("prm_dtype", self.dtype, DTYPES)
        for name in ("batch_tokens", "block_size"):
            check_int(_prm_key(name), getattr(self, name), 1)
        check_int(_prm_key("cache_bytes"), self.cache_bytes, 0)
        if self.step_separator is not None:
            if not isinstance(self.step_separator, str) or not self.step_separator:
                raise invalid("prm_step_separator", self.step_separator, "a non-empty string")
            if self.prm_type is not None and refuses_step_separator(self.prm_type):
                takes = [*STEP_SEPARATOR_TYPES, *(n for n, s in _REGISTERED_PRM_TYPES.items() if s)]
                raise invalid(
                    "prm_step_separator",
                    self.step_separator,
                    f"only with prm_type={' or '.join(takes)}, not prm_type={self.prm_type}",
                )

    def resolved_device(self, gpu_available: bool) -> str:
        """The device the PRM runs on: the setting, or cuda when a GPU is visible, else cpu."""
        if self.device in (None, "auto"):
            return "cuda" if gpu_available else "cpu"
        return self.device

    def resolved_dtype(self, device: str) -> str:
        """The PRM's dtype: the setting, or bfloat16 on a GPU and float32 elsewhere."""
        if self.dtype in (None, "auto"):
            return "bfloat16" if device.startswith("cuda") else "float32"
        return self.dtype


# --------------------------------------------------------------------------------------------
# Search (and the compute-optimal routing table it may name)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchConfig:
    """Settings of a search; defaults follow the published setup (DESIGN.md, Strategies).

    ``n`` is the budget: samples for majority/best_of_n, candidates per iteration for
    beam_search (``n // beam_width`` beams are kept), ``n // beam_width`` subtrees of
    ``beam_width`` candidates each for dvts, particles for particle_filtering, particles over all
    ``pg_iterations`` sweeps for particle_gibbs. ``max_tokens`` is a per-solution budget over all
    of its steps. ``compute_optimal_table`` is a JSON routing table (:func:`load_table`); ``None``
    uses the built-in default. ``resampling``, ``pf_temperature``, ``pg_iterations`` and
    ``pg_reference_particles`` belong to the particle strategies (:data:`STRATEGY_KEYS`).
    """

    strategy: str = "best_of_n"
    n: int = 4
    beam_width: int = 4
    num_iterations: int = 40
    agg: str = "last"
    selection: str = "weighted"
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 2048
    seed: int = 0
    step_delimiter: str = "\n\n"
    lookahead: int = 0
    compute_optimal_table: str | None = None
    resampling: str = "multinomial"
    pf_temperature: float = 1.0
    pg_iterations: int = 1
    pg_reference_particles: int = 1

    def __post_init__(self) -> None:
        check_choice("strategy", self.strategy, STRATEGIES)
        check_int("n", self.n, 1)
        check_int("beam_width", self.beam_width, 1)
        check_int("num_iterations", self.num_iterations, 1)
        check_choice("agg", self.agg, AGGREGATIONS)
        check_choice("selection", self.selection, SELECTIONS)
        check_float("temperature", self.temperature, "a number >= 0", lambda v: v >= 0)
        check_float("top_p", self.top_p, "a number in (0, 1]", lambda v: 0 < v <= 1)
        check_int("max_tokens", self.max_tokens, 1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise invalid("seed", self.seed, "an integer")
        if not isinstance(self.step_delimiter, str) or not self.step_delimiter:
            raise invalid("step_delimiter", self.step_delimiter, "a non-empty string (\\n\\n)")
        check_int("lookahead", self.lookahead, 0)
        if self.strategy in TREE_STRATEGIES:
            if self.n < self.beam_width or self.n % self.beam_width:
                lower = max(self.beam_width, self.n - self.n % self.beam_width)
                upper = lower + self.beam_width if lower < self.n else lower
                raise invalid(
                    "n",
                    self.n,
                    f"a multiple of beam_width={self.beam_width} for strategy={self.strategy} "
                    f"(e.g. n={lower}" + (f" or n={upper})" if upper != lower else ")"),
                )
        if self.lookahead and self.strategy not in (*TREE_STRATEGIES, "compute_optimal"):
            raise invalid(
                "lookahead",
                self.lookahead,
                f"0 with strategy={self.strategy} (lookahead applies to "
                f"{', '.join(TREE_STRATEGIES)})",
            )
        table = self.compute_optimal_table
        if table is not None:
            if not isinstance(table, (str, os.PathLike)) or not str(table):
                raise invalid("compute_optimal_table", table, "a path to a JSON routing table")
            if self.strategy != "compute_optimal":
                raise invalid(
                    "compute_optimal_table",
                    os.fspath(table),
                    f"only with strategy=compute_optimal, not strategy={self.strategy}",
                )
        if self.strategy == "compute_optimal":
            load_table(table).check_budget(self.n)
        self._check_particle_settings()

    def _check_particle_settings(self) -> None:
        check_choice("resampling", self.resampling, RESAMPLINGS)
        check_float("pf_temperature", self.pf_temperature, "a number > 0", lambda v: v > 0)
        check_int("pg_iterations", self.pg_iterations, 1)
        check_int("pg_reference_particles", self.pg_reference_particles, 0)
        for key in STRATEGY_KEYS:
            if getattr(self, key) != _SEARCH_DEFAULTS[key]:
                check_strategy_key(key, getattr(self, key), self.strategy)
        if self.strategy != "particle_gibbs":
            return
        sweeps, refs = self.pg_iterations, self.pg_reference_particles
        if self.n % sweeps:
            fits = [k for k in range(1, self.n + 1) if self.n % k == 0]
            raise invalid(
                "n",
                self.n,
                f"a multiple of pg_iterations={sweeps} for strategy=particle_gibbs (n particles "
                f"are split into pg_iterations sweeps; pg_iterations dividing n={self.n}: "
                f"{', '.join(map(str, fits))})",
            )
        if refs >= self.n // sweeps:
            raise invalid(
                "pg_reference_particles",
                refs,
                f"an integer below n/pg_iterations={self.n // sweeps} (the particles of a sweep; "
                "at least one must be free)",
            )

    @property
    def info(self) -> StrategyInfo:
        return STRATEGY_INFO[self.strategy]

    def settings(self) -> dict[str, object]:
        """The settings as a JSON-ready dict (recorded in every ``SearchResult``).

        Settings of :data:`STRATEGY_KEYS` are recorded only for the strategies that read them.
        """
        out = asdict(self)
        if out["compute_optimal_table"] is not None:
            out["compute_optimal_table"] = os.fspath(out["compute_optimal_table"])
        for key, owners in STRATEGY_KEYS.items():
            if self.strategy not in owners:
                del out[key]
        return out


_SEARCH_DEFAULTS: Mapping[str, Any] = {f.name: f.default for f in dataclasses.fields(SearchConfig)}


def check_strategy_key(key: str, value: Any, strategy: str) -> None:
    """Refuse a setting of :data:`STRATEGY_KEYS` given with a strategy that does not read it."""
    owners = STRATEGY_KEYS.get(key)
    if owners is not None and strategy not in owners:
        raise invalid(
            key, value, f"only with strategy={' or '.join(owners)}, not strategy={strategy}"
        )


TABLE_FORMAT = "tts-eval/compute-optimal-table"
TABLE_VERSION = 1
_TABLE_KEYS = ("format", "version", "probe_n", "bin_edges", "entries")
_ENTRY_KEYS = ("bin", "budget", "strategy", "beam_width", "lookahead", "selection", "agg")
_OVERRIDES = ("beam_width", "lookahead", "selection", "agg")


@dataclass(frozen=True)
class Route:
    """The strategy settings a (bin, budget) cell of a routing table sends problems to."""

    strategy: str
    overrides: tuple[tuple[str, object], ...] = ()

    def config_for(self, base: SearchConfig) -> SearchConfig:
        return dataclasses.replace(
            base, strategy=self.strategy, compute_optimal_table=None, **dict(self.overrides)
        )


@dataclass(frozen=True)
class ComputeOptimalTable:
    """A validated routing table for ``strategy=compute_optimal`` (``tts_eval.search``)::

        {"format": "tts-eval/compute-optimal-table", "version": 1,
         "probe_n": 4, "bin_edges": [0.2, 0.4, 0.6, 0.8],
         "entries": [{"bin": 1, "budget": 16, "strategy": "beam_search", "beam_width": 4,
                      "lookahead": 0, "selection": "weighted", "agg": "last"}, ...]}

    ``strategy`` is one of :data:`ROUTABLE_STRATEGIES`; ``beam_width``, ``lookahead``,
    ``selection``, ``agg`` are optional overrides of the run's settings. Every budget listed must
    have an entry for every bin, and each entry must make a valid :class:`SearchConfig` at
    ``n=budget``. Bin 1 holds the easiest problems (probe score >= the last edge).
    """

    probe_n: int
    bin_edges: tuple[float, ...]
    routes: Mapping[tuple[int, int], Route]
    source: str = "default"

    @property
    def num_bins(self) -> int:
        return len(self.bin_edges) + 1

    @property
    def budgets(self) -> tuple[int, ...]:
        return tuple(sorted({budget for _, budget in self.routes}))

    def bin_of(self, score: float) -> int:
        """1 (easiest) .. num_bins (hardest): one more than the number of edges above ``score``."""
        return 1 + sum(1 for edge in self.bin_edges if score < edge)

    def check_budget(self, n: int) -> None:
        if n not in self.budgets:
            raise invalid(
                "n",
                n,
                f"a budget of compute_optimal_table ({self.source}): "
                f"{', '.join(map(str, self.budgets))}",
            )

    def route(self, bin_: int, n: int) -> Route:
        self.check_budget(n)
        return self.routes[(bin_, n)]


def _table_error(source: str, where: str, message: str) -> ValueError:
    return ValueError(f"compute_optimal_table {source}: {where} {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_table(data: Any, source: str = "<dict>") -> ComputeOptimalTable:
    """Validate a routing table given as decoded JSON; every error is one line."""
    if not isinstance(data, dict):
        raise _table_error(source, "top level", f"must be an object with {', '.join(_TABLE_KEYS)}")
    unknown = sorted(set(data) - set(_TABLE_KEYS))
    if unknown:
        raise _table_error(
            source, "top level", f"has unknown keys {unknown}; accepted: {', '.join(_TABLE_KEYS)}"
        )
    if data.get("format") != TABLE_FORMAT:
        raise _table_error(
            source, "format", f"must be {TABLE_FORMAT!r}, got {data.get('format')!r}"
        )
    if data.get("version") != TABLE_VERSION:
        raise _table_error(
            source, "version", f"must be {TABLE_VERSION}, got {data.get('version')!r}"
        )
    probe_n = data.get("probe_n")
    if not _is_int(probe_n) or probe_n < 1:
        raise _table_error(source, "probe_n", f"must be an integer >= 1, got {probe_n!r}")
    edges = data.get("bin_edges")
    if (
        not isinstance(edges, list)
        or not all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in edges)
        or any(not 0 <= e <= 1 for e in edges)
        or any(a >= b for a, b in zip(edges, edges[1:], strict=False))
    ):
        raise _table_error(
            source, "bin_edges", f"must be a strictly increasing list in [0, 1], got {edges!r}"
        )
    num_bins = len(edges) + 1
    entries = data.get("entries")
    if not isinstance(entries, list) or not entries:
        raise _table_error(source, "entries", "must be a non-empty list of objects")
    routes: dict[tuple[int, int], Route] = {}
    for i, entry in enumerate(entries):
        routes.update(_parse_entry(source, f"entries[{i}]", entry, num_bins, routes))
    for budget in sorted({b for _, b in routes}):
        missing = [b for b in range(1, num_bins + 1) if (b, budget) not in routes]
        if missing:
            raise _table_error(source, "entries", f"lack bins {missing} for budget={budget}")
    return ComputeOptimalTable(probe_n, tuple(float(e) for e in edges), routes, source)


def _parse_entry(
    source: str, where: str, entry: Any, num_bins: int, routes: Mapping[tuple[int, int], Route]
) -> dict[tuple[int, int], Route]:
    if not isinstance(entry, dict):
        raise _table_error(source, where, "must be an object")
    unknown = sorted(set(entry) - set(_ENTRY_KEYS))
    if unknown:
        raise _table_error(
            source, where, f"has unknown keys {unknown}; accepted: {', '.join(_ENTRY_KEYS)}"
        )
    bin_, budget, strategy = entry.get("bin"), entry.get("budget"), entry.get("strategy")
    if not _is_int(bin_) or not 1 <= bin_ <= num_bins:
        raise _table_error(
            source, f"{where}.bin", f"must be an integer in 1..{num_bins}, got {bin_!r}"
        )
    if not _is_int(budget) or budget < 1:
        raise _table_error(source, f"{where}.budget", f"must be an integer >= 1, got {budget!r}")
    if strategy not in ROUTABLE_STRATEGIES:
        raise _table_error(
            source,
            f"{where}.strategy",
            f"must be one of {', '.join(ROUTABLE_STRATEGIES)}, got {strategy!r}",
        )
    for key, choices in (("selection", SELECTIONS), ("agg", AGGREGATIONS)):
        if key in entry and entry[key] not in choices:
            raise _table_error(source, f"{where}.{key}", f"must be one of {', '.join(choices)}")
    if (bin_, budget) in routes:
        raise _table_error(source, where, f"duplicates the entry for bin={bin_}, budget={budget}")
    route = Route(strategy, tuple((k, entry[k]) for k in _OVERRIDES if k in entry))
    try:
        route.config_for(SearchConfig(n=budget))
    except ValueError as exc:
        raise _table_error(source, where, f"is not a valid search at n={budget}: {exc}") from None
    return {(bin_, budget): route}


def default_table() -> dict[str, Any]:
    """The built-in routing table as JSON-ready data.

    It follows the published finding: beam search at small budgets (n <= 16) and on hard problems
    (bins 4-5), DVTS at larger budgets on easy/medium problems (bins 1-3), for budgets 1, 2, 4,
    ..., 1024. Its bin edges are a heuristic, not calibrated for any particular PRM: fit a table
    from a sweep for real use (``tts-eval fit-compute-optimal``).
    """
    entries = []
    for exponent in range(11):
        budget = 2**exponent
        for bin_ in range(1, 6):
            strategy = "beam_search" if budget <= 16 or bin_ >= 4 else "dvts"
            entries.append(
                {"bin": bin_, "budget": budget, "strategy": strategy, "beam_width": min(4, budget)}
            )
    return {
        "format": TABLE_FORMAT,
        "version": TABLE_VERSION,
        "probe_n": 4,
        "bin_edges": [0.2, 0.4, 0.6, 0.8],
        "entries": entries,
    }


@lru_cache(maxsize=32)
def _load_cached(path: str, mtime_ns: int) -> ComputeOptimalTable:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"compute_optimal_table {path}: not valid JSON ({exc})") from None
    return parse_table(data, path)


@lru_cache(maxsize=1)
def _default_table() -> ComputeOptimalTable:
    return parse_table(default_table(), "built-in default")


def load_table(path: str | os.PathLike[str] | None) -> ComputeOptimalTable:
    """The table at ``path`` (validated), or the built-in default for ``None``."""
    if path is None:
        return _default_table()
    p = Path(path)
    if not p.is_file():
        raise invalid("compute_optimal_table", os.fspath(path), "an existing JSON file")
    return _load_cached(str(p), p.stat().st_mtime_ns)


# --------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------

ANSWER_GRAMMAR = "math, number, regex:<pattern with one group>"


def check_answer(value: Any) -> None:
    """``math`` (boxed math answers), ``number`` (last number) or ``regex:<pattern>``."""
    if value in ("math", "number"):
        return
    if isinstance(value, str) and value.startswith("regex:"):
        try:
            groups = re.compile(value[len("regex:") :]).groups
        except re.error as exc:
            raise invalid("answer", value, f"{ANSWER_GRAMMAR} ({exc})") from None
        if groups >= 1:
            return
    raise invalid("answer", value, ANSWER_GRAMMAR)


# --------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RayOptions:
    """How a Ray searcher uses Ray (the defaults suit one node or a small cluster).

    ``cpus_per_worker``: Ray ``num_cpus`` of each actor. ``max_chunk``: most problems per chunk;
    ``chunks_per_worker``: the chunk plan aims at about this many chunks per worker (smaller
    chunks toward the end). ``max_restarts``: Ray restarts of each actor after its process dies;
    ``max_task_retries``: how often a chunk whose actor died is run again (on the restarted
    actor) before the search fails. ``ready_timeout_s``: how long to wait for the actors to load
    their models (and for resources to appear).
    """

    cpus_per_worker: float = 1.0
    max_chunk: int = 32
    chunks_per_worker: int = 4
    max_restarts: int = 3
    max_task_retries: int = 2
    ready_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        scope = "RayOptions"
        check_float("cpus_per_worker", self.cpus_per_worker, "> 0", lambda v: v > 0, scope=scope)
        for name in ("max_chunk", "chunks_per_worker"):
            check_int(name, getattr(self, name), 1, scope=scope)
        for name in ("max_restarts", "max_task_retries"):
            check_int(name, getattr(self, name), 0, scope=scope)
        check_float(
            "ready_timeout_s", self.ready_timeout_s, "seconds > 0", lambda v: v > 0, scope=scope
        )


# --------------------------------------------------------------------------------------------
# The whole run, and the model_args adapter
# --------------------------------------------------------------------------------------------

# Keys that belong to TTSConfig itself.
TOP_KEYS = (
    "system_prompt",
    "trace_path",
    "eager_load",
    "data_parallel_size",
    "ray_address",
    "answer",
)
LM_EVAL_DEFAULT_DEVICE = "cuda:0"  # what lm-eval's CLI sends when --device is not given
# vLLM's share of GPU memory when a PRM runs beside it on the same GPU (otherwise the engine default).
PRM_SHARED_GPU_MEMORY_UTILIZATION = 0.5
# Values given with escapes on the command line ("\n\n").
ESCAPED_KEYS = ("step_delimiter", "system_prompt", "prm_step_separator")


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
        if self.prm is None and self.search.info.needs_prm:
            raise invalid(
                "strategy",
                self.search.strategy,
                "majority without a PRM; strategy="
                f"{self.search.strategy} needs a PRM: add prm=<path or hub id>",
            )


# Settings that never change what a search returns (where traces are written, when the models
# load, how the work is spread over Ray workers): left out of results_fingerprint.
NON_RESULT_KEYS = ("trace_path", "eager_load", "data_parallel_size", "ray_address")
# The same for the policy engine: where its server is and how it is talked to (not which model).
NON_RESULT_ENGINE_KEYS = ("base_url", "api_key", "max_concurrency", "timeout_s", "max_retries")


def results_fingerprint(config: TTSConfig) -> str:
    """A digest of every setting of ``config`` that can change what a run returns.

    Everything but :data:`NON_RESULT_KEYS` and :data:`NON_RESULT_ENGINE_KEYS` (a policy server's
    address, key and request settings; the served model name counts): the policy and its engine
    settings, the PRM and its settings, every search setting, the answer setting, the system
    prompt, and the content (not only the path) of a compute-optimal routing table. Models are known by path or hub id and
    revision, not by their weights.
    """
    data = asdict(config)
    for key in NON_RESULT_KEYS:
        data.pop(key, None)
    for key in NON_RESULT_ENGINE_KEYS:
        data["engine"].pop(key, None)
    if (
        not config.engine.deterministic
    ):  # a later key: digests of earlier settings stay as they were
        data["engine"].pop("deterministic", None)
    table = config.search.compute_optimal_table
    if table is not None and Path(table).is_file():
        data["compute_optimal_table_sha256"] = hashlib.sha256(Path(table).read_bytes()).hexdigest()
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


# --------------------------------------------------------------------------------------------
# lm-eval's own flags
# --------------------------------------------------------------------------------------------

# What lm-eval's command line asked of the ``simple_evaluate`` call in progress, for
# ``--model tts`` to read when lm-eval creates it (``tts_eval.plugin`` sets it around the call):
# ``gen_kwargs`` (the --gen_kwargs mapping as given, not merged with any task's), ``seed`` (the
# first value of --seed), ``cache_requests``, ``apply_chat_template``,
# ``repeated_model_args`` (keys given twice in --model_args, which lm-eval's parser merges) and
# ``device_flag`` (the --device the user gave, None when none: lm-eval's own ``device`` is
# cuda:0 then).
LM_EVAL_FLAGS: ContextVar[Mapping[str, Any] | None] = ContextVar(
    "tts_eval_lm_eval_flags", default=None
)
# Key of ``TTSLM.get_model_info()`` (merged by lm-eval into the results' ``config``) naming the
# device the policy ran on; ``tts_eval.plugin`` moves it to ``config["device"]``.
POLICY_DEVICE_KEY = "tts_policy_device"
# lm-eval --gen_kwargs key -> SearchConfig field
GEN_KWARGS_FIELDS = {"max_gen_toks": "max_tokens", "temperature": "temperature", "top_p": "top_p"}
# "until" cuts the returned text (per request); do_sample=false means temperature 0.
GEN_KWARGS_ACCEPTED = (*GEN_KWARGS_FIELDS, "do_sample", "until")
_FLAGS = "lm_eval"


def search_values_of_gen_kwargs(gen_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The search settings lm-eval's ``--gen_kwargs`` asks for (checked; one-line errors).

    ``max_gen_toks`` -> ``max_tokens``, ``temperature``, ``top_p``; ``do_sample=false`` means
    greedy (temperature 0, whatever ``temperature`` says, as in lm-eval's hf model); ``until`` is
    accepted (it cuts the returned text). Any other key is refused: search settings go in
    ``--model_args``.
    """
    scope = f"{_FLAGS} --gen_kwargs"
    for key, value in gen_kwargs.items():
        if key not in GEN_KWARGS_ACCEPTED:
            raise invalid(
                key,
                value,
                f"{', '.join(GEN_KWARGS_ACCEPTED)} with --model tts "
                "(other settings go in --model_args)",
                scope=scope,
            )
    out: dict[str, Any] = {}
    if "max_gen_toks" in gen_kwargs:
        check_int("max_gen_toks", gen_kwargs["max_gen_toks"], 1, scope=scope)
        out["max_tokens"] = gen_kwargs["max_gen_toks"]
    if "temperature" in gen_kwargs:
        value = gen_kwargs["temperature"]
        check_float("temperature", value, "a number >= 0", lambda v: v >= 0, scope=scope)
        out["temperature"] = float(value)
    if "top_p" in gen_kwargs:
        value = gen_kwargs["top_p"]
        check_float("top_p", value, "a number in (0, 1]", lambda v: 0 < v <= 1, scope=scope)
        out["top_p"] = float(value)
    if "do_sample" in gen_kwargs:
        value = gen_kwargs["do_sample"]
        if not isinstance(value, bool):
            raise invalid("do_sample", value, "true or false", scope=scope)
        if not value:
            out["temperature"] = 0.0
    return out


def batch_size_of_flag(value: Any, max_batch_size: Any, backend: str) -> int | None:
    """The hf engine's rows per forward asked with lm-eval's ``--batch_size`` (None: not set).

    ``N >= 2``: N rows (refused with ``backend=vllm``, which batches continuously). ``1`` is
    lm-eval's default and cannot be told from no flag: not applied. ``auto`` / ``auto:N``: the
    engine's default, or ``--max_batch_size`` when given (the most that ``auto`` may pick).
    """
    if value is None:
        return None
    text = str(value).strip().lower()
    if text.startswith("auto"):
        if max_batch_size is None or backend != "hf":
            return None
        check_int("--max_batch_size", max_batch_size, 1, scope=_FLAGS)
        return int(max_batch_size)
    try:
        size = int(text)
    except ValueError:
        raise invalid(
            "--batch_size", value, "an integer >= 1, auto or auto:N", scope=_FLAGS
        ) from None
    if size < 1:
        raise invalid("--batch_size", value, "an integer >= 1, auto or auto:N", scope=_FLAGS)
    if size == 1:
        return None
    if backend != "hf":
        raise invalid(
            "--batch_size",
            value,
            f"1 or auto with backend={backend} (vLLM batches continuously; --batch_size is the "
            "rows per forward of backend=hf)",
            scope=_FLAGS,
        )
    return size


def _apply_lm_eval_flags(
    raw: Mapping[str, Any],
    engine_vals: dict[str, Any],
    search_vals: dict[str, Any],
    flags: Mapping[str, Any],
) -> None:
    """Fill ``engine_vals`` / ``search_vals`` from lm-eval's flags where model_args are silent."""
    applied: list[str] = []
    overridden: list[str] = []

    def offer(target: dict[str, Any], field: str, value: Any, source: str) -> None:
        if field in raw:
            overridden.append(f"{source} (model_args {field}={raw[field]})")
        else:
            target[field] = value
            applied.append(f"{source} -> {field}={value}")

    seed = flags.get("seed")
    # --seed's first value is 0 unless given: the same as the default seed, so only others count.
    if seed is not None and seed != SearchConfig.seed:
        check_int("--seed", seed, 0, scope=_FLAGS)
        offer(search_vals, "seed", seed, f"--seed {seed}")
        if "seed" not in raw:
            engine_vals["seed"] = seed
    gen_kwargs = flags.get("gen_kwargs") or {}
    for field, value in search_values_of_gen_kwargs(gen_kwargs).items():
        key = next(k for k, f in GEN_KWARGS_FIELDS.items() if f == field)
        if field == "temperature" and gen_kwargs.get("do_sample") is False:
            key = "do_sample"
        offer(search_vals, field, value, f"--gen_kwargs {key}={gen_kwargs[key]}")
    backend = str(raw.get("backend", "hf"))
    flag = flags.get("batch_size")
    size = batch_size_of_flag(flag, flags.get("max_batch_size"), backend)
    if size is not None:
        offer(engine_vals, "batch_size", size, f"--batch_size {flag}")
    elif str(flag).strip().lower().startswith("auto") and "batch_size" not in raw:
        what = "the engine's default rows per forward" if backend == "hf" else "continuous batching"
        applied.append(f"--batch_size {flag} -> {what}")
    if applied:
        logger.info("lm-eval flags applied to --model tts: %s", "; ".join(applied))
    if overridden:
        logger.info("lm-eval flags overridden by model_args: %s", "; ".join(overridden))


def accepted_keys() -> list[str]:
    names = {f.name for f in dataclasses.fields(EngineConfig)}
    names |= {f.name for f in dataclasses.fields(SearchConfig)}
    names |= set(PRM_KEYS) | set(TOP_KEYS) | {"config"}
    return sorted(names)


def split_arg_string(arg_string: str) -> dict[str, str]:
    """Parse ``k1=v1,k2=v2`` (values stay strings). A part without ``=`` is an error."""
    out: dict[str, str] = {}
    for part in arg_string.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(
                f"malformed model_args part {part!r}: expected key=value pairs separated by commas"
            )
        if key in out:
            raise ValueError(f"model_args key {key!r} is given twice")
        out[key] = value.strip()
    return out


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert a model_args value to the field's annotated type (int, float, bool, str, Optional)."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), annotation) if args else annotation
    accepted = _TYPE_NAMES.get(base, getattr(base, "__name__", str(base)))
    if isinstance(value, str) and value.strip().lower() in ("none", "null", ""):
        if optional:
            return None
        if base is not str:
            raise invalid(key, value, accepted)
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes"):
                return True
            if text in ("false", "0", "no"):
                return False
            raise ValueError
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if base is float:
            return float(value)
        if base is str:
            text = str(value)
            if key in ESCAPED_KEYS:
                text = text.encode("utf-8").decode("unicode_escape")
            return text
    except (TypeError, ValueError):
        raise invalid(key, value, accepted) from None
    return value


def _build(cls: type, values: Mapping[str, Any], key_of: Mapping[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {field: _coerce(key_of[field], v, hints[field]) for field, v in values.items()}
    return cls(**kwargs)


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """Read a recipe YAML (a flat mapping of model_args keys, optionally under ``model_args:``)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise invalid("config", os.fspath(path), "an existing recipe file (see configs/*.yaml)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if isinstance(data, dict) and isinstance(data.get("model_args"), dict):
        data = data["model_args"]
    if not isinstance(data, dict):
        raise ValueError(f"config {path} must be a mapping of model_args keys to values")
    return {str(k): v for k, v in data.items()}


def parse_model_args(
    args: str | Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> TTSConfig:
    """Validate flat ``model_args`` (string or mapping) and build a :class:`TTSConfig`.

    ``extra`` holds what lm-eval passes to every model (``device``, ``batch_size``,
    ``max_batch_size``) and what ``--model tts`` learns of its other flags (:data:`LM_EVAL_FLAGS`:
    ``seed``, ``gen_kwargs``, ``repeated_model_args``). A key set in model_args (or the recipe)
    wins over a flag, a flag over the default; only a ``--device`` the user chose reaches the
    engine; ``--batch_size`` follows :func:`batch_size_of_flag`.
    """
    flags = dict(extra or {})
    repeated = list(flags.get("repeated_model_args") or ())
    if repeated:
        raise ValueError(f"model_args key {repeated[0]!r} is given twice")
    raw = split_arg_string(args) if isinstance(args, str) else dict(args)
    if "config" in raw:
        raw = {**load_recipe(raw.pop("config")), **raw}
    accepted = accepted_keys()
    for key in raw:
        if key not in accepted:
            raise ValueError(
                f"unknown model_args key {key!r} for --model tts; accepted: {', '.join(accepted)}"
            )
    if raw.get("pretrained") in (None, ""):
        raise ValueError("model_args pretrained is required; accepted: a model directory or hub id")

    engine_fields = {f.name for f in dataclasses.fields(EngineConfig)}
    search_fields = {f.name for f in dataclasses.fields(SearchConfig)}
    engine_vals = {k: v for k, v in raw.items() if k in engine_fields}
    # Only a device the user chose with --device reaches the engine; otherwise the engine's
    # "auto" decides. lm-eval's run command sends device="cuda:0" when no --device is given;
    # "device_flag" (tts_eval.plugin) says what was given. Without it (a model built outside
    # simple_evaluate), cuda:0 is taken for that default.
    if "device_flag" in flags:
        cli_device = flags["device_flag"]
    else:
        cli_device = flags.get("device")
        cli_device = None if cli_device == LM_EVAL_DEFAULT_DEVICE else cli_device
    if cli_device is not None and "device" not in engine_vals:
        engine_vals["device"] = cli_device
    search_vals = {k: v for k, v in raw.items() if k in search_fields}
    has_prm = raw.get("prm") not in (None, "")
    if "strategy" not in search_vals and not has_prm:
        # No PRM and no strategy: plain sampling, i.e. majority over n samples (n=1 by default).
        search_vals["strategy"] = "majority"
        search_vals.setdefault("n", 1)
    _apply_lm_eval_flags(raw, engine_vals, search_vals, flags)
    prm_vals = {PRM_KEYS[k]: v for k, v in raw.items() if k in PRM_KEYS}
    if has_prm and "gpu_memory_utilization" not in engine_vals:
        if not str(prm_vals.get("device") or "").startswith("cpu"):
            # The PRM shares the GPU with vLLM's policy: leave it half of the memory by default.
            engine_vals["gpu_memory_utilization"] = PRM_SHARED_GPU_MEMORY_UTILIZATION
    top_vals = {k: raw[k] for k in TOP_KEYS if k in raw}

    engine = _build(EngineConfig, engine_vals, {f: f for f in engine_vals})
    search = _build(SearchConfig, search_vals, {f: f for f in search_vals})
    for key in search_vals:  # given at its default value, SearchConfig cannot tell
        check_strategy_key(key, search_vals[key], search.strategy)
    prm = None
    if has_prm:
        prm = _build(PRMConfig, prm_vals, _PRM_KEY_OF)
    elif len(prm_vals) > ("path" in prm_vals):
        given = ", ".join(k for k in raw if k in PRM_KEYS and k != "prm")
        raise ValueError(f"model_args {given} given without prm=<path or hub id of the PRM>")
    fixed = {"engine": engine, "search": search, "prm": prm}
    fixed["max_tokens_from_task"] = "max_tokens" not in search_vals
    return _build(
        TTSConfig, {**fixed, **top_vals}, {**{k: k for k in fixed}, **{k: k for k in top_vals}}
    )
