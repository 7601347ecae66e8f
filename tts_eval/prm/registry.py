"""PRM types, their auto-detection table, and ``load_prm`` (settings: ``tts_eval.settings.PRMConfig``).

``load_prm(path, prm_type=None, ...)`` validates its arguments, reads the checkpoint's
``config.json``, picks the PRM type (explicit ``prm_type`` or the first matching row of
``DETECTION_RULES``: exact architecture, architecture suffix, or a pattern on the model's name),
loads the tokenizer and builds the format (which checks the step/label tokens), and only then loads
the weights through ``tts_eval.prm.hf``. Every bad input is a one-line ``ValueError`` naming the
argument and what is accepted, raised before any large model loads.

What this module does not do: format requests (``formats``) or run models (``hf``).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..settings import (
    PRM_TYPE_NAMES,
    STEP_SEPARATOR_TYPES,
    PRMConfig,
    invalid,
    looks_like_hub_id,
)
from .adapter import PRMAdapter
from .formats import FORMATS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PRMTypeSpec:
    """One supported PRM format: its name, the head it reads, and the models it covers."""

    prm_type: str
    head: str  # head kind in tts_eval.prm.hf.build_head
    models: str


PRM_TYPES: Mapping[str, PRMTypeSpec] = {
    spec.prm_type: spec
    for spec in (
        PRMTypeSpec(
            "rlhflow",
            "label_softmax",
            "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data, RLHFlow/Llama3.1-8B-PRM-Mistral-Data",
        ),
        PRMTypeSpec("math_shepherd", "label_softmax", "peiyi9979/math-shepherd-mistral-7b-prm"),
        PRMTypeSpec(
            "qwen_prm", "qwen_reward", "Qwen/Qwen2.5-Math-PRM-7B, Qwen/Qwen2.5-Math-PRM-72B"
        ),
        PRMTypeSpec(
            "skywork",
            "value_sigmoid",
            "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B, Skywork/Skywork-o1-Open-PRM-Qwen-2.5-7B",
        ),
        PRMTypeSpec("token_classification", "token_class", "PRMs trained with TRL's PRMTrainer"),
    )
}
SUPPORTED = tuple(PRM_TYPES)
if SUPPORTED != PRM_TYPE_NAMES:  # the settings list the same PRM types, in the same order
    raise ImportError(f"prm.registry types {SUPPORTED} != settings.PRM_TYPE_NAMES {PRM_TYPE_NAMES}")


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


class PRMPathError(ValueError):
    """The PRM path does not point at a model."""


def _supported() -> str:
    return ", ".join(SUPPORTED)


def _path_message(path: str, why: str) -> str:
    return str(invalid("prm", path, f"a PRM model directory with config.json, or a hub id ({why})"))


def detect_prm_type(path: str, model_config: Mapping[str, Any]) -> str | None:
    """The PRM type of the first matching ``DETECTION_RULES`` row, or None."""
    names = [str(path).lower(), str(model_config.get("_name_or_path", "")).lower()]
    architectures = list(model_config.get("architectures") or [])
    for rule in DETECTION_RULES:
        if rule.matches(names, architectures):
            return rule.prm_type
    return None


def read_model_config(path: str) -> dict[str, Any]:
    """The checkpoint's config.json as a dict (local directory or Hub id), or a PRMPathError."""
    path = str(path)
    if os.path.isdir(path):
        cfg = Path(path) / "config.json"
        if not cfg.exists():
            raise PRMPathError(_path_message(path, "it has no config.json"))
        return json.loads(cfg.read_text())
    if os.path.exists(path):
        raise PRMPathError(_path_message(path, "it is a file"))
    if path.startswith("/") or "/" not in path or not looks_like_hub_id(path):
        raise PRMPathError(_path_message(path, "no such directory"))
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(path, "config.json")).read_text())
    except Exception as err:  # noqa: BLE001 - re-raised as one line naming the argument
        raise PRMPathError(
            _path_message(path, f"not local, and the hub did not serve it: {type(err).__name__}")
        ) from err


def build_format(prm_type: str, tokenizer: Any, step_separator: str | None = None):
    """The format object of ``prm_type`` for ``tokenizer`` (checks its step/label tokens)."""
    if prm_type not in FORMATS:
        raise invalid("prm_type", prm_type, _supported())
    cls = FORMATS[prm_type]
    if step_separator is not None and prm_type in STEP_SEPARATOR_TYPES:
        return cls.from_tokenizer(tokenizer, step_separator)
    if step_separator is not None:
        raise invalid("prm_step_separator", step_separator, f"only with {STEP_SEPARATOR_TYPES}")
    return cls.from_tokenizer(tokenizer)


def resolve_prm_type(config: PRMConfig, model_config: Mapping[str, Any]) -> str:
    if config.prm_type is not None:
        return config.prm_type
    detected = detect_prm_type(str(config.path), model_config)
    if detected is None:
        archs = model_config.get("architectures")
        raise ValueError(
            f"model_args prm_type is needed: the PRM type of {str(config.path)!r} cannot be "
            f"detected (architectures={archs}); accepted: {_supported()}"
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
    from transformers import AutoModel

    from .hf import HFScorer, build_head

    device = config.resolved_device(torch.cuda.is_available())
    dtype = config.resolved_dtype(device)
    logger.info("loading PRM %s as prm_type=%s on %s (%s)", path, prm_type, device, dtype)
    backbone = AutoModel.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
    label_ids = (fmt.good_id, fmt.bad_id) if PRM_TYPES[prm_type].head == "label_softmax" else ()
    head = build_head(PRM_TYPES[prm_type].head, path, backbone, label_ids)
    scorer = HFScorer(
        backbone,
        head,
        batch_tokens=config.batch_tokens,
        cache_bytes=config.cache_bytes,
        block_size=config.block_size,
    )
    return PRMAdapter(fmt, scorer, name=path)
