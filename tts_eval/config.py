"""The one adapter from lm-eval's flat ``--model_args`` onto tts-eval's frozen configs.

``parse_model_args("pretrained=...,prm=...,strategy=dvts,n=64")`` returns a :class:`TTSConfig` made of
an engine config (``tts_eval.engines.EngineConfig``), an optional PRM config
(``tts_eval.prm.PRMConfig``, from the ``prm*`` keys) and a search config
(``tts_eval.search.SearchConfig``). Every key is checked before anything loads: an unknown key, a
key without a value or a value of the wrong type is a one-line ``ValueError`` that names the key and
what is accepted. ``config=<recipe.yaml>`` loads a recipe first; explicit keys override its keys.

What this module does not do: load models or run anything.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# model_args key -> PRMConfig field
PRM_KEYS = {
    "prm": "path",
    "prm_type": "prm_type",
    "prm_device": "device",
    "prm_dtype": "dtype",
    "prm_batch_tokens": "batch_tokens",
}
# Keys that belong to TTSConfig itself.
TOP_KEYS = ("system_prompt", "trace_path", "eager_load", "data_parallel_size", "ray_address")
# Keys lm-eval's CLI passes to every model (--batch_size, --max_batch_size, --device).
LM_EVAL_EXTRA_KEYS = ("batch_size", "max_batch_size", "device")
LM_EVAL_DEFAULT_DEVICE = "cuda:0"
# vLLM's share of GPU memory when a PRM runs beside it on the same GPU (otherwise the engine default).
PRM_SHARED_GPU_MEMORY_UTILIZATION = 0.5
# Values given with escapes on the command line ("\n\n").
ESCAPED_KEYS = ("step_delimiter", "system_prompt")


@dataclass(frozen=True)
class TTSConfig:
    """Everything ``--model tts`` needs, validated."""

    engine: Any  # tts_eval.engines.EngineConfig
    search: Any  # tts_eval.search.SearchConfig
    prm: Any | None = None  # tts_eval.prm.PRMConfig
    system_prompt: str | None = None
    trace_path: str | None = None
    eager_load: bool = True
    data_parallel_size: int = 1
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.data_parallel_size < 1:
            raise ValueError(
                f"model_args data_parallel_size={self.data_parallel_size} is invalid; "
                "accepted: an integer >= 1"
            )


def _sub_configs():
    from tts_eval.engines import EngineConfig
    from tts_eval.prm import PRMConfig
    from tts_eval.search import SearchConfig

    return EngineConfig, PRMConfig, SearchConfig


def accepted_keys() -> list[str]:
    engine_cls, _, search_cls = _sub_configs()
    names = {f.name for f in dataclasses.fields(engine_cls)}
    names |= {f.name for f in dataclasses.fields(search_cls)}
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


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Convert a model_args value to the field's annotated type (int, float, bool, str, Optional)."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), annotation) if args else annotation
    if isinstance(value, str) and value.strip().lower() in ("none", "null", ""):
        if optional:
            return None
        if base is not str:
            raise ValueError(f"model_args {key} needs a value ({getattr(base, '__name__', base)})")
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
        name = getattr(base, "__name__", str(base))
        raise ValueError(f"model_args {key}={value!r} is not a valid {name}") from None
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
        raise ValueError(f"model_args config={path}: no such recipe file (see configs/*.yaml)")
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
    """Validate flat ``model_args`` (string or mapping) and build a :class:`TTSConfig`."""
    raw = split_arg_string(args) if isinstance(args, str) else dict(args)
    if "config" in raw:
        raw = {**load_recipe(raw.pop("config")), **raw}
    accepted = accepted_keys()
    for key in raw:
        if key not in accepted:
            raise ValueError(
                f"unknown model_args key {key!r} for --model tts; accepted: {', '.join(accepted)}"
            )
    if "pretrained" not in raw or raw["pretrained"] in (None, ""):
        raise ValueError("model_args pretrained=<path or hub id> is required for --model tts")

    engine_cls, prm_cls, search_cls = _sub_configs()
    engine_fields = {f.name for f in dataclasses.fields(engine_cls)}
    search_fields = {f.name for f in dataclasses.fields(search_cls)}

    extra = dict(extra or {})
    engine_vals = {k: v for k, v in raw.items() if k in engine_fields}
    # lm-eval's CLI always sends device="cuda:0" (its default), which says nothing: only a device
    # the user chose with --device reaches the engine; otherwise the engine's "auto" decides.
    cli_device = extra.get("device")
    if cli_device not in (None, LM_EVAL_DEFAULT_DEVICE) and "device" not in engine_vals:
        engine_vals["device"] = cli_device
    search_vals = {k: v for k, v in raw.items() if k in search_fields}
    has_prm = raw.get("prm") not in (None, "")
    if "strategy" not in search_vals and not has_prm:
        # No PRM and no strategy: plain sampling, i.e. majority over n samples (n=1 by default).
        search_vals["strategy"] = "majority"
        search_vals.setdefault("n", 1)
    prm_vals = {PRM_KEYS[k]: v for k, v in raw.items() if k in PRM_KEYS}
    if has_prm and "gpu_memory_utilization" not in engine_vals:
        prm_device = str(prm_vals.get("device") or "")
        if not prm_device.startswith("cpu"):
            # The PRM shares the GPU with vLLM's policy: leave it half of the memory by default.
            engine_vals["gpu_memory_utilization"] = PRM_SHARED_GPU_MEMORY_UTILIZATION
    top_vals = {k: raw[k] for k in TOP_KEYS if k in raw}

    engine = _build(engine_cls, engine_vals, {f: f for f in engine_vals})
    search = _build(search_cls, search_vals, {f: f for f in search_vals})
    prm = None
    if has_prm:
        prm = _build(prm_cls, prm_vals, {v: k for k, v in PRM_KEYS.items()})
    elif len(prm_vals) > ("path" in prm_vals):
        given = ", ".join(k for k in raw if k in PRM_KEYS and k != "prm")
        raise ValueError(f"model_args {given} given without prm=<path or hub id of the PRM>")
    if prm is None and search.strategy != "majority":
        raise ValueError(
            f"model_args strategy={search.strategy} needs a PRM: add prm=<path or hub id> "
            "(or use strategy=majority, which needs none)"
        )
    return _build(
        TTSConfig,
        {"engine": engine, "search": search, "prm": prm, **top_vals},
        {"engine": "engine", "search": "search", "prm": "prm", **{k: k for k in top_vals}},
    )
