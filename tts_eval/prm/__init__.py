"""PRM adapters: score every step of candidate solutions with an open process reward model.

Public API (importing this package loads neither torch nor transformers):

- ``load_prm(path, prm_type=None, device=None, dtype=None, batch_tokens=8192, ...)`` -> a
  ``ProcessRewardModel`` (``PRMAdapter``) for one of ``SUPPORTED`` formats, auto-detected from the
  checkpoint's config/name through ``DETECTION_RULES`` unless ``prm_type`` is given;
- ``PRMConfig`` (frozen, validated) and ``load_prm_from_config``;
- ``split_steps(text, delimiter="\\n\\n")``: the step splitter every caller should use;
- the pure formats (``FORMATS``, ``FormattedInput``) used by the golden tests and any backend.

What this package does not do: generate text or decide which candidates survive (``search``).
"""

from .adapter import PRMAdapter
from .cache import PrefixCache
from .formats import FORMATS, FormattedInput, PRMFormatError, PRMTokenizerError
from .registry import (
    DETECTION_RULES,
    PRM_TYPES,
    SUPPORTED,
    PRMConfig,
    PRMPathError,
    detect_prm_type,
    load_prm,
    load_prm_from_config,
)
from .steps import clean_step, split_steps

__all__ = [
    "DETECTION_RULES",
    "FORMATS",
    "PRM_TYPES",
    "SUPPORTED",
    "FormattedInput",
    "PRMAdapter",
    "PRMConfig",
    "PRMFormatError",
    "PRMPathError",
    "PRMTokenizerError",
    "PrefixCache",
    "clean_step",
    "detect_prm_type",
    "load_prm",
    "load_prm_from_config",
    "split_steps",
]
