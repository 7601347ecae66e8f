"""PRM types, their auto-detection table, and ``load_prm`` (settings: ``tts_eval.settings.PRMConfig``).

``load_prm(path, prm_type=None, ...)`` validates its arguments, reads the checkpoint's
``config.json``, picks the PRM type (explicit ``prm_type`` or the first matching row of
``DETECTION_RULES``: exact architecture, architecture suffix, or a pattern on the model's name),
loads the tokenizer and builds the format (which checks the step/label tokens), and only then loads
the weights through ``tts_eval.prm.hf``. Every bad input is a one-line ``SettingError`` (or
``DataError``) naming the argument and what is accepted, raised before any large model loads.

Adding a PRM format without editing this file: build a :class:`PRMTypeSpec` (its name, a format
class like those of ``formats``, the score head: one of :data:`HEAD_KINDS` or a function that
builds one, and optionally what auto-detects it) and either call :func:`register_prm_format` (this
process only) or expose the spec in an installed package's ``tts_eval.prm_formats`` entry-point
group under its name (every process: lm-eval's CLI, ``tts-eval``, Ray workers). Installed formats
are listed from package metadata (``prm_type=`` is checked against them before anything loads) and
imported when first used; built-in detection rules win over those of added formats.

What this module does not do: format requests (``formats``) or run models (``hf``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError, SettingError
from ..settings import (
    PRM_FORMATS_GROUP,
    PRM_TYPE_HEADS,
    PRM_TYPE_NAMES,
    STEP_SEPARATOR_TYPES,
    PRMConfig,
    invalid,
    looks_like_hub_id,
    note_prm_type,
    prm_type_names,
)
from .adapter import PRMAdapter
from .formats import FORMATS

logger = logging.getLogger(__name__)

# Score heads tts_eval.prm.hf.build_head reads from a checkpoint: P("+") of the label logits
# (the format has good_id, bad_id), Qwen's reward MLP, Skywork's value head, a token classifier.
HEAD_KINDS = ("label_softmax", "qwen_reward", "value_sigmoid", "token_class")
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class PRMTypeSpec:
    """One PRM format: its name, the head it reads, the models it covers, and how it is built.

    ``format``: a class with ``from_tokenizer(tokenizer)`` (``from_tokenizer(tokenizer,
    step_separator)`` when ``step_separator`` is True) returning an object whose
    ``format(problem, steps)`` gives a :class:`~tts_eval.prm.formats.FormattedInput`, and a
    ``prm_type`` attribute equal to the name (the formats of ``tts_eval.prm.formats`` are the
    examples). ``head``: one of :data:`HEAD_KINDS` (``label_softmax`` needs the format object's
    ``good_id`` and ``bad_id``), or ``head(path, backbone, fmt)`` returning a torch module that maps
    the backbone's last hidden states (..., hidden) to one score in [0, 1] per position.
    ``architectures`` (exact ``config.json`` entries) and ``name_pattern`` (a regex searched in the
    lowercased path and ``_name_or_path``) let ``prm_type`` be left out for added formats.
    """

    prm_type: str
    head: str | Callable[..., Any]
    models: str
    format: Any = None
    step_separator: bool = False
    architectures: tuple[str, ...] = ()
    name_pattern: str | None = None

    def __post_init__(self) -> None:
        where = f"PRMTypeSpec {self.prm_type!r}"
        if not isinstance(self.prm_type, str) or not _NAME_RE.fullmatch(self.prm_type):
            raise ValueError(
                f"{where}: prm_type must be a lowercase name ([a-z][a-z0-9_]*), "
                f"got {self.prm_type!r}"
            )
        if not (self.head in HEAD_KINDS or callable(self.head)):
            raise ValueError(
                f"{where}: head={self.head!r} is invalid; accepted: {', '.join(HEAD_KINDS)}, "
                "or a function (path, backbone, fmt) -> torch module"
            )
        if not callable(getattr(self.format, "from_tokenizer", None)):
            raise ValueError(
                f"{where}: format={self.format!r} has no from_tokenizer(tokenizer); accepted: a "
                "format class like those of tts_eval.prm.formats"
            )
        if getattr(self.format, "prm_type", self.prm_type) != self.prm_type:
            raise ValueError(
                f"{where}: its format's prm_type is {self.format.prm_type!r}; they must agree"
            )
        if isinstance(self.architectures, str):
            raise ValueError(f"{where}: architectures must be a tuple of names, not a string")
        if self.name_pattern is not None:
            try:
                re.compile(self.name_pattern)
            except re.error as exc:
                raise ValueError(f"{where}: name_pattern {self.name_pattern!r}: {exc}") from None

    def detection_rules(self) -> tuple[DetectionRule, ...]:
        """The rows this spec adds to auto-detection (after the built-in ones)."""
        rules = [DetectionRule(self.prm_type, architecture=a) for a in self.architectures]
        if self.name_pattern is not None:
            rules.append(DetectionRule(self.prm_type, name_pattern=self.name_pattern))
        return tuple(rules)


PRM_TYPES: Mapping[str, PRMTypeSpec] = {
    spec.prm_type: spec
    for spec in (
        PRMTypeSpec(
            "rlhflow",
            "label_softmax",
            "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data, RLHFlow/Llama3.1-8B-PRM-Mistral-Data",
            FORMATS["rlhflow"],
        ),
        PRMTypeSpec(
            "math_shepherd",
            "label_softmax",
            "peiyi9979/math-shepherd-mistral-7b-prm",
            FORMATS["math_shepherd"],
        ),
        PRMTypeSpec(
            "qwen_prm",
            "qwen_reward",
            "Qwen/Qwen2.5-Math-PRM-7B, Qwen/Qwen2.5-Math-PRM-72B",
            FORMATS["qwen_prm"],
        ),
        PRMTypeSpec(
            "skywork",
            "value_sigmoid",
            "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B, Skywork/Skywork-o1-Open-PRM-Qwen-2.5-7B",
            FORMATS["skywork"],
            step_separator=True,
        ),
        PRMTypeSpec(
            "token_classification",
            "token_class",
            "PRMs trained with TRL's PRMTrainer",
            FORMATS["token_classification"],
            step_separator=True,
        ),
    )
}
# Formats added in this process (register_prm_format), including installed ones once loaded.
_ADDED: dict[str, PRMTypeSpec] = {}
SUPPORTED = tuple(PRM_TYPES)
if SUPPORTED != PRM_TYPE_NAMES:  # the settings list the same PRM types, in the same order
    raise ImportError(f"prm.registry types {SUPPORTED} != settings.PRM_TYPE_NAMES {PRM_TYPE_NAMES}")
_STEP_SEPARATORS = tuple(name for name, spec in PRM_TYPES.items() if spec.step_separator)
if _STEP_SEPARATORS != STEP_SEPARATOR_TYPES:
    raise ImportError(f"prm.registry {_STEP_SEPARATORS} != settings {STEP_SEPARATOR_TYPES}")
if {n: spec.head for n, spec in PRM_TYPES.items()} != PRM_TYPE_HEADS:  # backends follow heads
    raise ImportError(f"prm.registry heads differ from settings.PRM_TYPE_HEADS {PRM_TYPE_HEADS}")


@dataclass(frozen=True)
class DetectionRule:
    """A row of the detection table: a PRM type and the one thing that identifies it."""

    prm_type: str
    architecture: str | None = None  # exact entry of config.json "architectures"
    architecture_suffix: str | None = None
    name_pattern: str | None = None  # regex searched in the lowercased path / _name_or_path

    def matches(self, names: list[str], architectures: list[str]) -> bool:
        if self.architecture is not None:
            return self.architecture in architectures
        if self.architecture_suffix is not None:
            return any(a.endswith(self.architecture_suffix) for a in architectures)
        if self.name_pattern is not None:
            return any(re.search(self.name_pattern, n) for n in names)
        return False


DETECTION_RULES: tuple[DetectionRule, ...] = (
    DetectionRule("qwen_prm", architecture="Qwen2ForProcessRewardModel"),
    DetectionRule("skywork", architecture="Qwen2ForPrmModel"),
    DetectionRule("qwen_prm", name_pattern=r"qwen2\.5-math-prm"),
    DetectionRule("skywork", name_pattern=r"skywork-o1-open-prm"),
    DetectionRule("rlhflow", name_pattern=r"rlhflow|llama3\.1-8b-prm"),
    DetectionRule("math_shepherd", name_pattern=r"math-shepherd"),
    DetectionRule("token_classification", architecture_suffix="ForTokenClassification"),
)


class PRMPathError(SettingError):
    """The PRM path does not point at a model (``model_args prm=PATH is invalid; accepted: ...``)."""


def _supported() -> str:
    return ", ".join(prm_type_names())


def register_prm_format(spec: PRMTypeSpec) -> PRMTypeSpec:
    """Make ``spec.prm_type`` a ``prm_type`` of this process (``load_prm``, ``--model_args
    prm_type=``), detected by its ``architectures`` / ``name_pattern`` where no built-in rule
    matches. Registering an equal spec again is a no-op; a built-in name or another spec under a
    taken name is a one-line :class:`~tts_eval.errors.DataError`. For other processes (lm-eval's CLI, Ray workers),
    declare the spec in the ``tts_eval.prm_formats`` entry-point group of an installed package."""
    if not isinstance(spec, PRMTypeSpec):
        raise TypeError(f"register_prm_format takes a PRMTypeSpec, got {type(spec).__name__}")
    name = spec.prm_type
    if name in PRM_TYPES:
        raise DataError(f"prm_type {name!r} is built in; register the format under another name")
    if _ADDED.get(name, spec) != spec:
        raise DataError(f"prm_type {name!r} is already registered ({_ADDED[name].format!r})")
    _ADDED[name] = spec
    note_prm_type(name, step_separator=spec.step_separator)
    return spec


def _installed() -> dict[str, Any]:
    """The entry points of :data:`PRM_FORMATS_GROUP` by name (nothing imported)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=PRM_FORMATS_GROUP)}


def _load_installed(entry_point: Any) -> PRMTypeSpec:
    """Import an installed format's spec and register it; one line for anything wrong with it."""
    where = f"prm_type={entry_point.name}: entry point {entry_point.value!r} of {PRM_FORMATS_GROUP}"
    try:
        spec = entry_point.load()
    except Exception as exc:  # noqa: BLE001 - a plugin's import error, re-raised as one line
        text = str(exc).strip().splitlines()
        raise DataError(
            f"{where} does not load: {type(exc).__name__}: {text[0] if text else ''}"
        ) from exc
    if not isinstance(spec, PRMTypeSpec):
        raise DataError(f"{where} is a {type(spec).__name__}, not a tts_eval.prm.PRMTypeSpec")
    if spec.prm_type != entry_point.name:
        raise DataError(f"{where} holds prm_type={spec.prm_type!r}; the names must agree")
    return register_prm_format(spec)


def prm_type_spec(prm_type: str) -> PRMTypeSpec:
    """The spec of a built-in, registered or installed PRM type (an installed one is imported
    and registered on first use); a one-line error for any other name."""
    spec = PRM_TYPES.get(prm_type) or _ADDED.get(prm_type)
    if spec is not None:
        return spec
    entry_point = _installed().get(prm_type)
    if entry_point is None:
        raise invalid("prm_type", prm_type, _supported())
    return _load_installed(entry_point)


def _added_rules() -> list[DetectionRule]:
    """Detection rows of the added formats: registered ones, then every installed one (a format
    that does not load is skipped with a warning: detection did not ask for it by name)."""
    for name, entry_point in _installed().items():
        if name not in _ADDED and name not in PRM_TYPES:
            try:
                _load_installed(entry_point)
            except ValueError as exc:
                logger.warning("PRM format detection skips %s", exc)
    return [rule for spec in _ADDED.values() for rule in spec.detection_rules()]


def _path_error(path: str, why: str) -> PRMPathError:
    return PRMPathError("prm", path, f"a PRM model directory with config.json, or a hub id ({why})")


def detect_prm_type(path: str, model_config: Mapping[str, Any]) -> str | None:
    """The PRM type of the first matching ``DETECTION_RULES`` row, then of the added formats'
    rows (registered, installed), or None."""
    names = [str(path).lower(), str(model_config.get("_name_or_path", "")).lower()]
    architectures = list(model_config.get("architectures") or [])
    for rule in DETECTION_RULES:
        if rule.matches(names, architectures):
            return rule.prm_type
    for rule in _added_rules():
        if rule.matches(names, architectures):
            return rule.prm_type
    return None


def read_model_config(path: str) -> dict[str, Any]:
    """The checkpoint's config.json as a dict (local directory or Hub id), or a PRMPathError."""
    path = str(path)
    if os.path.isdir(path):
        cfg = Path(path) / "config.json"
        if not cfg.exists():
            raise _path_error(path, "it has no config.json")
        return json.loads(cfg.read_text())
    if os.path.exists(path):
        raise _path_error(path, "it is a file")
    if path.startswith("/") or "/" not in path or not looks_like_hub_id(path):
        raise _path_error(path, "no such directory")
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(path, "config.json")).read_text())
    except Exception as err:  # noqa: BLE001 - re-raised as one line naming the argument
        raise _path_error(
            path, f"not local, and the hub did not serve it: {type(err).__name__}"
        ) from err


def build_format(prm_type: str, tokenizer: Any, step_separator: str | None = None):
    """The format object of ``prm_type`` for ``tokenizer`` (checks its step/label tokens)."""
    spec = prm_type_spec(prm_type)
    if step_separator is not None and spec.step_separator:
        fmt = spec.format.from_tokenizer(tokenizer, step_separator)
    elif step_separator is not None:
        takes = [*STEP_SEPARATOR_TYPES, *(n for n, added in _ADDED.items() if added.step_separator)]
        raise invalid(
            "prm_step_separator",
            step_separator,
            f"only with prm_type={' or '.join(takes)}, not prm_type={prm_type}",
        )
    else:
        fmt = spec.format.from_tokenizer(tokenizer)
    if spec.head == "label_softmax" and not all(hasattr(fmt, a) for a in ("good_id", "bad_id")):
        raise DataError(
            f"prm_type={prm_type}: head=label_softmax reads the logits of the format's good_id "
            f"and bad_id tokens, which {type(fmt).__name__} does not have"
        )
    return fmt


def resolve_prm_type(config: PRMConfig, model_config: Mapping[str, Any]) -> str:
    """``prm_type`` as given (its format imported, so an installed one that does not load fails
    here, before any model) or detected."""
    if config.prm_type is not None:
        prm_type_spec(config.prm_type)
        return config.prm_type
    detected = detect_prm_type(str(config.path), model_config)
    if detected is None:
        archs = model_config.get("architectures")
        raise SettingError(
            "prm_type",
            None,
            _supported(),
            message=f"model_args prm_type is needed: the PRM type of {str(config.path)!r} cannot "
            f"be detected (architectures={archs}); accepted: {_supported()}",
        )
    return detected


def load_prm(
    path: str,
    prm_type: str | None = None,
    *,
    device: str | None = None,
    dtype: str | None = None,
    batch_tokens: int = 8192,
    cache_bytes: int = 2 << 30,
    block_size: int = 16,
    step_separator: str | None = None,
) -> PRMAdapter:
    """Load the PRM at ``path`` (a local directory or Hub id) as a ``ProcessRewardModel``."""
    config = PRMConfig(
        str(path), prm_type, device, dtype, batch_tokens, cache_bytes, block_size, step_separator
    )
    return load_prm_from_config(config)


def load_prm_from_config(config: PRMConfig) -> PRMAdapter:
    path = str(config.path)
    model_config = read_model_config(path)
    prm_type = resolve_prm_type(config, model_config)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    fmt = build_format(prm_type, tokenizer, config.step_separator)

    import torch

    from .hf import HFScorer, build_head

    device = config.resolved_device(torch.cuda.is_available())
    dtype = config.resolved_dtype(device)
    logger.info("loading PRM %s as prm_type=%s on %s (%s)", path, prm_type, device, dtype)
    backbone = load_backbone(path, getattr(torch, dtype)).to(device)
    spec = prm_type_spec(prm_type)
    if callable(spec.head):
        head = spec.head(path, backbone, fmt)
    else:
        label_ids = (fmt.good_id, fmt.bad_id) if spec.head == "label_softmax" else ()
        head = build_head(spec.head, path, backbone, label_ids)
    scorer = HFScorer(
        backbone,
        head,
        batch_tokens=config.batch_tokens,
        cache_bytes=config.cache_bytes,
        block_size=config.block_size,
    )
    return PRMAdapter(fmt, scorer, name=path)


def load_backbone(path: str, dtype: Any) -> Any:
    """The checkpoint's backbone (``AutoModel.from_pretrained``) without transformers' load report.

    The heads read their own tensors from the checkpoint by name (``tts_eval.prm.heads``), so the
    checkpoint's ``lm_head``/``score``/``v_head`` tensors are expected to be left over, not the
    "UNEXPECTED ... not ok if you expect identical arch" table transformers prints for them on
    every load: they are logged at debug level. Backbone tensors the checkpoint lacks (left
    randomly initialised) are still a warning. A load that fails (tensors of the wrong shape) is
    run again with the report on, so the error comes with transformers' table of what is wrong.
    """
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logger = hf_logging.get_logger("transformers.modeling_utils")
    level = hf_logger.level
    hf_logger.setLevel(logging.ERROR)
    try:
        model, info = AutoModel.from_pretrained(path, dtype=dtype, output_loading_info=True)
    except Exception:
        hf_logger.setLevel(level)
        AutoModel.from_pretrained(path, dtype=dtype)  # fails again, after printing its report
        raise
    finally:
        hf_logger.setLevel(level)
    unexpected = sorted(info.get("unexpected_keys") or ())
    if unexpected:
        logger.debug("PRM %s: checkpoint tensors outside the backbone: %s", path, unexpected)
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        logger.warning(
            "PRM %s: the checkpoint has no weights for %d backbone tensor(s) (%s): they are "
            "randomly initialised",
            path,
            len(missing),
            shown,
        )
    return model
