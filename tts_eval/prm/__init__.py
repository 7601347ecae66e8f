"""PRM adapters: score every step of candidate solutions with an open process reward model.

Public API (importing this package loads neither torch nor transformers):

- ``load_prm(path, prm_type=None, device=None, dtype=None, batch_tokens=8192, ...)`` -> a
  ``ProcessRewardModel`` (``PRMAdapter``) for one of ``SUPPORTED`` formats, auto-detected from the
  checkpoint's config/name through ``DETECTION_RULES`` unless ``prm_type`` is given;
- ``PRMConfig`` (frozen, validated) and ``load_prm_from_config``;
- ``split_steps(text, delimiter="\\n\\n")``: the step splitter every caller should use;
- the pure formats (``FORMATS``, ``FormattedInput``) used by the golden tests and any backend;
- ``PRMTypeSpec`` and ``register_prm_format(spec)``: add a PRM format without editing this package
  (or declare the spec in an installed package's ``tts_eval.prm_formats`` entry-point group; see
  ``registry`` and the README's "Adding a PRM").

What this package does not do: generate text or decide which candidates survive (``search``).
"""

from .adapter import PRMAdapter
from .cache import PrefixCache
from .formats import FORMATS, FormattedInput, PRMFormatError, PRMTokenizerError
from .registry import (
    DETECTION_RULES,
    HEAD_KINDS,
    PRM_TYPES,
    SUPPORTED,
    PRMConfig,
    PRMPathError,
    PRMTypeSpec,
    detect_prm_type,
    load_prm,
    load_prm_from_config,
    register_prm_format,
)
from .steps import clean_step, split_steps

__all__ = [
    "DETECTION_RULES",
    "FORMATS",
    "HEAD_KINDS",
    "PRM_TYPES",
    "SUPPORTED",
    "FormattedInput",
    "PRMAdapter",
    "PRMConfig",
    "PRMFormatError",
    "PRMPathError",
    "PRMTokenizerError",
    "PRMTypeSpec",
    "PrefixCache",
    "clean_step",
    "detect_prm_type",
    "load_prm",
    "load_prm_from_config",
    "register_prm_format",
    "split_steps",
]
