"""lm-eval's ``model_args`` for ``--model tts``: flat ``k=v,...`` onto a checked :class:`TTSConfig`.

:func:`parse_model_args` reads flat ``k=v,...`` (or a mapping, or ``config=<recipe.yaml>``)
together with what lm-eval's own flags ask (``--seed``, ``--gen_kwargs``, ``--batch_size``,
``--device``; :data:`LM_EVAL_FLAGS`); every key is checked before anything loads, each error one
line naming the key (``model_args KEY=VALUE is invalid; accepted: ...``,
:class:`~tts_eval.errors.SettingError`). Precedence: model_args (and recipe) > lm-eval flag > the
task's generation_kwargs (``max_gen_toks`` only, applied per request by ``tts_eval.lm_model``) >
default.

A strategy's own options (its spec's options dataclass, e.g. ``beam_width`` of the tree
strategies, ``pf_temperature`` of the particle ones) given with a strategy that does not read them
are refused, whatever their value; from a recipe (``config=``, or a sweep's shared ``model_args``)
they are dropped for such a strategy, with a log line, since a recipe serves several strategies. A
shared setting the strategy does not read (``selection`` with ``strategy=majority``, say) is
recorded as given and logged as unused.

What this module does not do: load anything, or decide what identifies a result
(``tts_eval.config``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import typing
from collections.abc import Collection, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from tts_eval.config import TTSConfig
from tts_eval.errors import DataError, SettingError
from tts_eval.search import SearchConfig, get_spec, search_keys, shared_keys, strategy_names
from tts_eval.search.confidence import DEFAULT_SELF_SCORE
from tts_eval.search.spec import SHARED_READS, not_read, option_owners
from tts_eval.settings import (
    PRM_KEYS,
    EngineConfig,
    PRMConfig,
    check_float,
    check_int,
    coerce,
    coerce_fields,
    invalid,
)

logger = logging.getLogger(__name__)

# Keys that belong to TTSConfig itself.
TOP_KEYS = (
    "system_prompt",
    "trace_path",
    "eager_load",
    "data_parallel_size",
    "ray_address",
    "answer",
)
# prm=self: no PRM model; the policy's own confidence scores the steps (``self_score``).
SELF_PRM = "self"
LM_EVAL_DEFAULT_DEVICE = "cuda:0"  # what lm-eval's CLI sends when --device is not given
# vLLM's share of GPU memory when a PRM runs beside it on the same GPU (otherwise the engine default).
PRM_SHARED_GPU_MEMORY_UTILIZATION = 0.5
# Values given with escapes on the command line ("\n\n").
ESCAPED_KEYS = ("step_delimiter", "system_prompt", "prm_step_separator")
_PRM_FIELD_KEYS = {field: key for key, field in PRM_KEYS.items()}


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


def _check_self_prm(raw: Mapping[str, Any], strategy: str) -> None:
    """``prm=self`` loads no PRM: PRM settings given with it are refused, and so is a strategy
    that cannot score with the policy's confidence (one line each)."""
    if strategy in strategy_names() and not get_spec(strategy).self_scored:
        raise invalid(
            "prm",
            SELF_PRM,
            f"a PRM path or hub id with strategy={strategy} (it reads PRM scores as "
            "probabilities, as particle weights or difficulty bins; the policy's confidence "
            "is not one)",
        )
    for key in raw:
        if key in PRM_KEYS and key != "prm":
            raise SettingError(
                key,
                raw[key],
                "no PRM setting with prm=self",
                message=f"model_args {key}={raw[key]} is invalid with prm=self (no PRM model is "
                "loaded: the policy's own confidence scores the steps; see self_score)",
            )


def _pruning_without_prm(value: Any) -> SettingError:
    return SettingError(
        "prune_steps",
        value,
        "0 without a PRM",
        message=f"model_args prune_steps={value} is invalid without a PRM; accepted: 0 (pruning "
        "scores partial samples: add prm=<path or hub id> or prm=self, with strategy=best_of_n)",
    )


def accepted_keys() -> list[str]:
    names = {f.name for f in dataclasses.fields(EngineConfig)}
    names |= set(search_keys())
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
            raise SettingError(
                key or part,
                value,
                "key=value pairs separated by commas",
                message=f"malformed model_args part {part!r}: expected key=value pairs "
                "separated by commas",
            )
        if key in out:
            raise SettingError(
                key, value, "each key once", message=f"model_args key {key!r} is given twice"
            )
        out[key] = value.strip()
    return out


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """Read a recipe YAML (a flat mapping of model_args keys, optionally under ``model_args:``)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise invalid("config", os.fspath(path), "an existing recipe file (see configs/*.yaml)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if isinstance(data, dict) and isinstance(data.get("model_args"), dict):
        data = data["model_args"]
    if not isinstance(data, dict):
        raise DataError(f"config {path} must be a mapping of model_args keys to values")
    return {str(k): v for k, v in data.items()}


def search_config(
    values: Mapping[str, Any], *, shared: Collection[str] = (), explicit: Collection[str] = ()
) -> SearchConfig:
    """A :class:`SearchConfig` from raw ``model_args`` values of search keys (see the module
    docstring): ``shared`` keys came from a recipe (an option the strategy does not read is
    dropped), ``explicit`` ones were given for this run (one the strategy does not read is
    refused, a shared setting it does not read is logged as unused)."""
    hints = typing.get_type_hints(SearchConfig)
    strategy = values.get("strategy", SearchConfig.strategy)
    if strategy not in strategy_names():
        raise invalid("strategy", strategy, ", ".join(strategy_names()))
    spec = get_spec(strategy)
    kwargs: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in values.items():
        if key in shared_keys():
            kwargs[key] = coerce(key, value, hints[key], escaped=key in ESCAPED_KEYS)
            if key in SHARED_READS and key not in spec.reads and key in explicit:
                logger.warning(
                    "model_args %s=%s: strategy=%s does not read %s (recorded, unused)",
                    key,
                    value,
                    strategy,
                    key,
                )
            continue
        owner = get_spec(option_owners(key)[0])
        typed = coerce(key, value, typing.get_type_hints(owner.options)[key])
        if key in spec.option_names:
            kwargs[key] = typed
        elif key in shared and key not in explicit:
            dropped.append(key)
        else:
            owner.options(**{key: typed})  # a bad value is named as such first
            raise not_read(key, value, strategy)
    if dropped:
        logger.info(
            "recipe settings not read by strategy=%s, not used: %s", strategy, ", ".join(dropped)
        )
    return SearchConfig(**kwargs)


def parse_model_args(
    args: str | Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    *,
    shared: Collection[str] = (),
) -> TTSConfig:
    """Validate flat ``model_args`` (string or mapping) and build a :class:`TTSConfig`.

    ``extra`` holds what lm-eval passes to every model (``device``, ``batch_size``,
    ``max_batch_size``) and what ``--model tts`` learns of its other flags (:data:`LM_EVAL_FLAGS`:
    ``seed``, ``gen_kwargs``, ``repeated_model_args``). A key set in model_args (or the recipe)
    wins over a flag, a flag over the default; only a ``--device`` the user chose reaches the
    engine; ``--batch_size`` follows :func:`batch_size_of_flag`. ``shared``: keys that come from a
    recipe serving several strategies (a sweep's; ``config=`` adds its own).
    """
    flags = dict(extra or {})
    repeated = list(flags.get("repeated_model_args") or ())
    if repeated:
        raise SettingError(
            repeated[0],
            None,
            "each key once",
            message=f"model_args key {repeated[0]!r} is given twice",
        )
    raw = split_arg_string(args) if isinstance(args, str) else dict(args)
    shared = set(shared)
    if "config" in raw:
        recipe = load_recipe(raw.pop("config"))
        shared |= set(recipe) - set(raw)
        raw = {**recipe, **raw}
    explicit = set(raw) - shared
    accepted = accepted_keys()
    for key in raw:
        if key not in accepted:
            raise SettingError(
                key,
                raw[key],
                ", ".join(accepted),
                message=f"unknown model_args key {key!r} for --model tts; accepted: "
                + ", ".join(accepted),
            )
    if raw.get("pretrained") in (None, ""):
        raise SettingError(
            "pretrained",
            raw.get("pretrained"),
            "a model directory or hub id",
            message="model_args pretrained is required; accepted: a model directory or hub id",
        )

    engine_fields = {f.name for f in dataclasses.fields(EngineConfig)}
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
    search_vals = {k: v for k, v in raw.items() if k in search_keys()}
    self_prm = str(raw.get("prm", "")).strip() == SELF_PRM
    has_prm = raw.get("prm") not in (None, "") and not self_prm
    if self_prm:
        _check_self_prm(raw, str(search_vals.get("strategy", SearchConfig.strategy)))
        search_vals.setdefault("self_score", DEFAULT_SELF_SCORE)
    elif "self_score" in explicit:
        strategy = str(search_vals.get("strategy", SearchConfig.strategy))
        if strategy in strategy_names() and get_spec(strategy).needs_prm:
            raise invalid(
                "self_score",
                raw["self_score"],
                "only with prm=self (the policy's confidence in place of a PRM)",
            )
    if "strategy" not in search_vals and not has_prm and not self_prm:
        if "prune_steps" in raw:
            raise _pruning_without_prm(raw["prune_steps"])
        # No PRM and no strategy: plain sampling, i.e. majority over n samples (n=1 by default).
        search_vals["strategy"] = "majority"
        search_vals.setdefault("n", 1)
    elif not has_prm and not self_prm and "prune_steps" in raw:
        raise _pruning_without_prm(raw["prune_steps"])
    _apply_lm_eval_flags(raw, engine_vals, search_vals, flags)
    prm_vals = {PRM_KEYS[k]: v for k, v in raw.items() if k in PRM_KEYS}
    if has_prm and "gpu_memory_utilization" not in engine_vals:
        on_server = str(prm_vals.get("backend", "hf")).strip() == "openai"
        if not on_server and not str(prm_vals.get("device") or "").startswith("cpu"):
            # The PRM shares the GPU with vLLM's policy: leave it half of the memory by default.
            engine_vals["gpu_memory_utilization"] = PRM_SHARED_GPU_MEMORY_UTILIZATION
    top_vals = {k: raw[k] for k in TOP_KEYS if k in raw}

    engine = EngineConfig(**coerce_fields(EngineConfig, engine_vals, escaped=ESCAPED_KEYS))
    search = search_config(search_vals, shared=shared, explicit=explicit)
    prm = None
    if has_prm:
        prm = PRMConfig(**coerce_fields(PRMConfig, prm_vals, _PRM_FIELD_KEYS, escaped=ESCAPED_KEYS))
    elif len(prm_vals) > ("path" in prm_vals):
        given = ", ".join(k for k in raw if k in PRM_KEYS and k != "prm")
        raise SettingError(
            "prm",
            None,
            "a PRM path or hub id",
            message=f"model_args {given} given without prm=<path or hub id of the PRM>",
        )
    top = coerce_fields(TTSConfig, top_vals, escaped=ESCAPED_KEYS)
    return TTSConfig(
        engine=engine,
        search=search,
        prm=prm,
        max_tokens_from_task="max_tokens" not in search_vals,
        **top,
    )
