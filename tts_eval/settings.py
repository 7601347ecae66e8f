"""The grammar every setting shares, and the configs of the models: validated, frozen, typed.

- the grammar: the device grammar (``auto``, ``cpu``, ``mps``, ``cuda[:N]``, ``xpu[:N]``), the
  dtype list, the hub-id pattern, typed conversion of ``model_args`` strings (:func:`coerce`), and
  one error for every bad value: :func:`invalid` builds a
  :class:`~tts_eval.errors.SettingError` whose line reads
  ``model_args KEY=VALUE is invalid; accepted: ...``;
- the frozen configs of what loads: :class:`EngineConfig` (the policy), :class:`PRMConfig`,
  :class:`RayOptions`, and the answer setting (``answer=math | number | regex:<pattern>``).

The settings of a search (``tts_eval.search.config``: the shared ones and each strategy's own,
declared by its spec), the whole run (``tts_eval.config``: :class:`~tts_eval.config.TTSConfig` and
the identity of its results) and lm-eval's ``model_args`` adapter (``tts_eval.model_args``) are
built on this module, each in the layer it belongs to.

What this module does not do: load tokenizers or models, render chats (``tts_eval.engines``), know
strategies (``tts_eval.search``) or read ``model_args`` strings as a whole (``tts_eval.model_args``).
It imports only the standard library.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass
from typing import Any

from tts_eval.errors import SettingError, show_value

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


def invalid(key: str, value: Any, accepted: str, *, scope: str = "model_args") -> SettingError:
    """The one error of a bad setting: ``model_args KEY=VALUE is invalid; accepted: ...``."""
    return SettingError(key, value, accepted, scope=scope)


_show = show_value


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
        check_vllm_share("", self.gpu_memory_utilization, self.tensor_parallel_size)
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
        check_server(self.base_url, self.api_key, self.model, prefix="", server="the server's")
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
            raise SettingError(
                unknown[0],
                kwargs[unknown[0]],
                ", ".join(names),
                message=f"unknown engine option(s) {', '.join(unknown)}; accepted: "
                + ", ".join(names),
            )
        return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# Process reward model
# --------------------------------------------------------------------------------------------

# The built-in PRM types and the score head each reads (tts_eval.prm.registry checks both at
# import); LABEL_HEAD reads the "+"/"-" logits of the LM head.
LABEL_HEAD = "label_softmax"
PRM_TYPE_HEADS = {
    "rlhflow": LABEL_HEAD,
    "math_shepherd": LABEL_HEAD,
    "qwen_prm": "qwen_reward",
    "skywork": "value_sigmoid",
    "token_classification": "token_class",
}
PRM_TYPE_NAMES = tuple(PRM_TYPE_HEADS)
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
    "prm_backend": "backend",
    "prm_gpu_memory_utilization": "gpu_memory_utilization",
    "prm_tensor_parallel_size": "tensor_parallel_size",
    "prm_max_model_len": "max_model_len",
    "prm_base_url": "base_url",
    "prm_api_key": "api_key",
    "prm_model": "model",
    "prm_max_concurrency": "max_concurrency",
    "prm_timeout_s": "timeout_s",
    "prm_max_retries": "max_retries",
}
# Where a PRM runs (``prm_backend``): transformers in this process (its own prefix cache), vLLM
# in this process (its own ``vllm.LLM``), or a vLLM server behind an OpenAI-compatible API.
PRM_BACKENDS = ("hf", "vllm", "openai")
# PRMConfig fields that only one PRM backend reads (any other backend refuses them when they are
# not at their default): the transformers scorer's, the in-process vLLM engine's, the server's.
PRM_BACKEND_FIELDS = {
    "hf": ("device", "batch_tokens", "cache_bytes", "block_size"),
    "vllm": ("gpu_memory_utilization", "tensor_parallel_size", "max_model_len"),
    "openai": ("base_url", "api_key", "model", "max_concurrency", "timeout_s", "max_retries"),
}
# The score heads each backend runs: vLLM reads the "+"/"-" log-probabilities of a one-token
# generation (``tts_eval.prm.labels``) in process or from a server, and the class logits of a
# pooling model (Qwen's reward MLP, token classifiers) in process; Skywork's value head (not a
# vLLM architecture) and heads added in code run on transformers only.
HEAD_BACKENDS = {
    LABEL_HEAD: PRM_BACKENDS,
    "qwen_reward": ("hf", "vllm"),
    "token_class": ("hf", "vllm"),
}
_PRM_KEY_OF = {field: key for key, field in PRM_KEYS.items()}


def check_vllm_share(prefix: str, utilization: Any, tensor_parallel_size: Any) -> None:
    """A vLLM engine's share of the GPU: ``gpu_memory_utilization`` in (0, 1] and
    ``tensor_parallel_size`` >= 1 (named with ``prefix``: the policy's or the PRM's ``prm_``)."""
    check_float(
        f"{prefix}gpu_memory_utilization",
        utilization,
        "a fraction in (0, 1]",
        lambda v: 0 < v <= 1,
    )
    check_int(f"{prefix}tensor_parallel_size", tensor_parallel_size, 1)


def check_server(base_url: Any, api_key: Any, model: Any, *, prefix: str, server: str) -> None:
    """The address settings of a server backend (``base_url``, ``api_key``, ``model``; named
    with ``prefix``: the policy's ``backend=openai`` or the PRM's ``prm_backend=openai``)."""
    name = f"{prefix}base_url"
    example = "http://localhost:8001/v1" if prefix else "http://localhost:8000/v1"
    if base_url in (None, ""):
        raise SettingError(
            name,
            base_url,
            f"{server} /v1 URL, e.g. {example}",
            message=f"model_args {name} is required with {prefix}backend=openai; accepted: "
            f"{server} /v1 URL, e.g. {example}",
        )
    if not isinstance(base_url, str) or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", base_url):
        raise invalid(name, base_url, f"an http:// or https:// URL, e.g. {example}")
    for key, value in (("api_key", api_key), ("model", model)):
        if value is not None and (not isinstance(value, str) or not value):
            shown = "***" if key == "api_key" else value
            raise invalid(f"{prefix}{key}", shown, "a non-empty string")


def _prm_key(field: str) -> str:
    return _PRM_KEY_OF.get(field, f"prm_{field}")


def prm_backends_of(prm_type: str, *, head: Any = None) -> tuple[str, ...]:
    """The ``prm_backend`` values that run ``prm_type``, from its spec's ``head`` (None: known
    for the built-in types only; an added format passes until its spec is loaded)."""
    if head is None:
        if prm_type not in PRM_TYPE_HEADS:
            return PRM_BACKENDS
        head = PRM_TYPE_HEADS[prm_type]
    return HEAD_BACKENDS.get(head, ("hf",))


def check_prm_backend(prm_type: str, backend: str, *, head: Any = None) -> None:
    """A one-line error when ``prm_backend=backend`` cannot run ``prm_type`` (see
    :func:`prm_backends_of`), naming the backends that run it."""
    backends = prm_backends_of(prm_type, head=head)
    if backend not in backends:
        raise invalid(
            "prm_backend",
            backend,
            f"{' or '.join(backends)} for prm_type={prm_type} (vllm runs {_runs_on('vllm')}; "
            f"openai runs {_runs_on('openai')}; the others run on transformers only)",
        )


def _runs_on(backend: str) -> str:
    """The built-in PRM types ``prm_backend=backend`` runs, comma-separated."""
    return ", ".join(t for t in PRM_TYPE_HEADS if backend in prm_backends_of(t))


@dataclass(frozen=True)
class PRMConfig:
    """How to load a PRM. ``None`` device/dtype (or ``auto``): cuda + bfloat16 when a GPU is
    visible, else cpu + float32. ``cache_bytes=0`` disables prefix reuse. ``step_separator`` is the
    step token of ``skywork`` and the separator of ``token_classification`` (default "\\n").

    ``backend`` (:data:`PRM_BACKENDS`): ``hf`` runs the PRM in transformers with the scorer's own
    prefix cache (``device``, ``batch_tokens``, ``cache_bytes``, ``block_size``); ``vllm`` loads
    it as its own ``vllm.LLM`` in this process (``gpu_memory_utilization``: its share of the GPU,
    ``tensor_parallel_size``, ``max_model_len``; on CPU ``VLLM_CPU_KVCACHE_SPACE`` bounds its KV
    cache); ``openai`` scores against a vLLM server (``base_url``, ``api_key`` (None:
    ``OPENAI_API_KEY``), ``model`` (the served name; None: the only one listed),
    ``max_concurrency``, ``timeout_s``, ``max_retries``, as ``backend=openai`` has them; ``path``
    then names the PRM's tokenizer). vllm runs the LM-head and pooling-head formats, openai the
    LM-head ones (:func:`prm_backends_of`). :data:`PRM_BACKEND_FIELDS` lists what only one
    backend reads; another backend refuses them."""

    path: str
    prm_type: str | None = None
    device: str | None = None
    dtype: str | None = None
    batch_tokens: int = 8192
    cache_bytes: int = 2 << 30
    block_size: int = 16
    step_separator: str | None = None
    backend: str = "hf"
    gpu_memory_utilization: float = 0.4
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    base_url: str | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    model: str | None = None
    max_concurrency: int = 64
    timeout_s: float = 600.0
    max_retries: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.path, (str, os.PathLike)) or not str(self.path):
            raise invalid("prm", self.path, "a PRM model directory or hub id")
        self._check_backend()
        if self.prm_type is not None and self.prm_type not in PRM_TYPE_NAMES:
            check_choice("prm_type", self.prm_type, prm_type_names())
        if self.prm_type is not None:
            check_prm_backend(self.prm_type, self.backend)
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

    def _check_backend(self) -> None:
        """``prm_backend`` and the settings only one backend reads (module docstring)."""
        check_choice("prm_backend", self.backend, PRM_BACKENDS)
        for backend, names in PRM_BACKEND_FIELDS.items():
            if backend == self.backend:
                continue
            for f in dataclasses.fields(self):
                if f.name in names and getattr(self, f.name) != f.default:
                    shown = "***" if f.name == "api_key" else getattr(self, f.name)
                    raise invalid(_prm_key(f.name), shown, f"only with prm_backend={backend}")
        if self.backend == "openai" and self.dtype is not None:
            raise invalid(
                "prm_dtype",
                self.dtype,
                "no prm_dtype with prm_backend=openai (the "
                "server loads the PRM in the dtype it was started with)",
            )
        if self.backend == "vllm":
            check_vllm_share("prm_", self.gpu_memory_utilization, self.tensor_parallel_size)
            if self.max_model_len is not None:
                check_int("prm_max_model_len", self.max_model_len, 1)
        if self.backend != "openai":
            return
        check_server(
            self.base_url, self.api_key, self.model, prefix="prm_", server="the PRM server's"
        )
        check_int("prm_max_concurrency", self.max_concurrency, 1)
        check_float("prm_timeout_s", self.timeout_s, "seconds > 0", lambda v: v > 0)
        check_int("prm_max_retries", self.max_retries, 0)

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
# Typed conversion of model_args strings
# --------------------------------------------------------------------------------------------

_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def unescape(text: str) -> str:
    """Python string escapes of ``text`` decoded (``\\n`` -> newline, ``\\u043a`` -> ``к``),
    every other character kept as it is: non-Latin-1 characters (``" ки"``, ``"。"``) pass through
    as escapes of their own, so the decoding does not read their UTF-8 bytes as Latin-1."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


def coerce(key: str, value: Any, annotation: Any, *, escaped: bool = False) -> Any:
    """Convert a ``model_args`` value to a field's annotated type (int, float, bool, str,
    Optional); ``escaped``: a string given with escapes on the command line (``\\n\\n``)."""
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
            if escaped:
                text = unescape(text)
            return text
    except (TypeError, ValueError):
        raise invalid(key, value, accepted) from None
    return value


def coerce_fields(
    cls: type,
    values: typing.Mapping[str, Any],
    key_of: typing.Mapping[str, str] | None = None,
    escaped: typing.Collection[str] = (),
) -> dict[str, Any]:
    """``values`` (field -> raw value) converted to the field types of dataclass ``cls``;
    ``key_of`` names each field's ``model_args`` key in errors (default: the field name)."""
    hints = typing.get_type_hints(cls)
    key_of = key_of or {}
    out = {}
    for name, value in values.items():
        key = key_of.get(name, name)
        out[name] = coerce(key, value, hints[name], escaped=key in escaped)
    return out
