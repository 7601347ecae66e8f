"""PRM types, their auto-detection table, the frozen ``PRMConfig`` and ``load_prm``.

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
DTYPES = ("float32", "bfloat16", "float16")
_DEVICE = re.compile(r"cpu|mps|(cuda|xpu)(:\d+)?")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


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


def detect_prm_type(path: str, model_config: Mapping[str, Any]) -> str | None:
    """The PRM type of the first matching ``DETECTION_RULES`` row, or None."""
    names = [str(path).lower(), str(model_config.get("_name_or_path", "")).lower()]
    architectures = list(model_config.get("architectures") or [])
    for rule in DETECTION_RULES:
        if rule.matches(names, architectures):
            return rule.prm_type
    return None


@dataclass(frozen=True)
class PRMConfig:
    """How to load a PRM. ``None`` device/dtype: cuda + bfloat16 when a GPU is visible, else
    cpu + float32. ``cache_bytes=0`` disables prefix reuse. ``step_separator`` is the step token
    of ``skywork`` and the separator of ``token_classification`` (default "\\n" for both)."""

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
            raise ValueError(f"prm path must be a non-empty path or Hub id, got {self.path!r}")
        if self.prm_type is not None and self.prm_type not in PRM_TYPES:
            raise ValueError(f"unknown prm_type {self.prm_type!r}; supported: {_supported()}")
        if self.device is not None and not _DEVICE.fullmatch(self.device):
            raise ValueError(
                f"prm device {self.device!r} not understood; use cpu, cuda, cuda:N, mps or xpu"
            )
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"prm dtype {self.dtype!r} not supported; use one of {DTYPES}")
        for name in ("batch_tokens", "block_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"prm {name} must be an integer >= 1, got {value!r}")
        if isinstance(self.cache_bytes, bool) or not isinstance(self.cache_bytes, int):
            raise ValueError(f"prm cache_bytes must be an integer >= 0, got {self.cache_bytes!r}")
        if self.cache_bytes < 0:
            raise ValueError(f"prm cache_bytes must be an integer >= 0, got {self.cache_bytes!r}")
        if self.step_separator is not None:
            if not self.step_separator:
                raise ValueError("prm step_separator must be a non-empty string")
            if self.prm_type not in (None, "skywork", "token_classification"):
                raise ValueError(
                    f"prm step_separator applies to skywork and token_classification only, "
                    f"not prm_type={self.prm_type}"
                )


def read_model_config(path: str) -> dict[str, Any]:
    """The checkpoint's config.json as a dict (local directory or Hub id), or a PRMPathError."""
    path = str(path)
    if os.path.isdir(path):
        cfg = Path(path) / "config.json"
        if not cfg.exists():
            raise PRMPathError(
                f"PRM path {path!r} has no config.json; point prm= at a saved model directory"
            )
        return json.loads(cfg.read_text())
    if os.path.exists(path):
        raise PRMPathError(f"PRM path {path!r} is a file; expected a model directory or Hub id")
    if path.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(path):
        raise PRMPathError(f"PRM path {path!r} does not exist")
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(path, "config.json")).read_text())
    except Exception as err:  # noqa: BLE001 - re-raised as one line naming the argument
        raise PRMPathError(
            f"PRM path {path!r} is not a local directory and its config.json could not be fetched "
            f"from the Hugging Face Hub ({type(err).__name__})"
        ) from err


def build_format(prm_type: str, tokenizer: Any, step_separator: str | None = None):
    """The format object of ``prm_type`` for ``tokenizer`` (checks its step/label tokens)."""
    if prm_type not in FORMATS:
        raise ValueError(f"unknown prm_type {prm_type!r}; supported: {_supported()}")
    cls = FORMATS[prm_type]
    if step_separator is not None and prm_type in ("skywork", "token_classification"):
        return cls.from_tokenizer(tokenizer, step_separator)
    if step_separator is not None:
        raise ValueError(
            f"prm step_separator applies to skywork and token_classification only, "
            f"not prm_type={prm_type}"
        )
    return cls.from_tokenizer(tokenizer)


def resolve_prm_type(config: PRMConfig, model_config: Mapping[str, Any]) -> str:
    if config.prm_type is not None:
        return config.prm_type
    detected = detect_prm_type(str(config.path), model_config)
    if detected is None:
        archs = model_config.get("architectures")
        raise ValueError(
            f"cannot detect the PRM type of {str(config.path)!r} (architectures={archs}); "
            f"pass prm_type= one of: {_supported()}"
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

    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = config.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
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
