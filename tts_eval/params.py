"""Parameter counts of models, read from their local files without loading any weights.

:func:`parameter_count` answers, for a model name as a run names it (a local folder or a hub id),
how many parameters it has and how that was found, in this order:

1. ``--params NAME=1.24e9`` given by the user (matched against the name as given or its short
   name, the last path component);
2. the ``*.safetensors`` headers of the model's folder (the tensor shapes in the JSON header; only
   the files the ``model.safetensors.index.json`` names when there is one): exact;
3. a count recorded by the run itself (lm-eval's ``model_num_parameters`` of a ``--model hf`` run):
   exact, from the loaded model;
4. ``config.json`` of a decoder-only transformer (embeddings, attention with grouped KV heads,
   gated MLP, norms, untied head): an estimate, said so in the method.

The folder of a hub id is its snapshot in the local Hugging Face cache, when there is one
(``huggingface_hub.snapshot_download(..., local_files_only=True)``; nothing is downloaded).

:func:`load_tokenizer` finds a model's tokenizer the same way (local files only), for counting the
tokens of plain lm-eval runs; ``None`` when there is none.

:func:`search_flops` is the FLOPs of one problem's search from its :class:`~tts_eval.types.Cost`
(2 x parameters x tokens processed, the formula ``tts-eval compare`` uses): what the ``tts`` model
records per problem beside its token counts.

What this module does not do: load weights, or compare systems at matched compute
(``tts_eval.workflow.compare``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tts_eval.errors import DataError
from tts_eval.types import Cost

logger = logging.getLogger(__name__)

SAFETENSORS_INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class ParamCount:
    """A model's parameter count and how it was found (``method``, written in the output)."""

    model: str
    params: float
    method: str


def short_name(model: str | None) -> str:
    """``"meta-llama/Llama-3.2-1B-Instruct"`` -> ``"Llama-3.2-1B-Instruct"``; a path's last part."""
    if not model:
        return ""
    return Path(str(model).rstrip("/\\")).name or str(model)


def parse_params(text: str) -> tuple[str, float]:
    """``"NAME=1.24e9"`` -> ``("NAME", 1.24e9)``; one-line error otherwise."""
    name, sep, value = text.rpartition("=")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not sep or not name.strip() or not math.isfinite(number) or number <= 0:
        raise DataError(
            f"--params {text!r} is invalid; accepted: MODEL=COUNT with a positive count "
            "(e.g. meta-llama/Llama-3.1-8B-Instruct=8.03e9)"
        )
    return name.strip(), number


def local_model_dir(model: str) -> Path | None:
    """The local folder of ``model``: itself when it is one, else its snapshot in the HF cache."""
    path = Path(os.path.expanduser(model))
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not cached, not a repo id: there is no local copy
        return None


def read_safetensors_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a ``.safetensors`` file (8-byte little-endian length, then JSON)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise DataError(f"{path} is not a safetensors file (shorter than its header length)")
        (length,) = struct.unpack("<Q", raw)
        if length > 100_000_000:
            raise DataError(f"{path} is not a safetensors file (header length {length})")
        data = f.read(length)
    try:
        header = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{path} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise DataError(f"{path} is not a safetensors file (its header is not a mapping)")
    return header


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files of a folder: those its index names, else ``model.safetensors``, else all."""
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map") or {}
        return [folder / name for name in sorted(set(weight_map.values()))]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    return sorted(folder.glob("*.safetensors"))


def count_safetensors(folder: Path) -> int | None:
    """Parameters in the safetensors files of ``folder`` (from their headers), or ``None``."""
    files = safetensors_files(folder)
    if not files:
        return None
    total = 0
    for path in files:
        for name, entry in read_safetensors_header(path).items():
            if name == "__metadata__":
                continue
            total += math.prod(int(d) for d in entry.get("shape", ()))
    return total


def estimate_from_config(config: Mapping[str, Any]) -> int | None:
    """Parameters of a decoder-only transformer from its ``config.json``; ``None`` if it lacks
    the sizes. Counts embeddings (and an untied output head), per layer q/k/v/o projections
    (grouped KV heads), a gated MLP (3 matrices) and 2 norms, and the final norm; no biases."""
    config = config.get("text_config", config) if isinstance(config, Mapping) else {}
    try:
        vocab = int(config["vocab_size"])
        hidden = int(config["hidden_size"])
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        inter = int(config.get("intermediate_size") or 4 * hidden)
    except (KeyError, TypeError, ValueError):
        return None
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    per_layer = attention + 3 * hidden * inter + 2 * hidden
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", False) else 2)
    return embeddings + layers * per_layer + hidden


def parameter_count(
    model: str,
    given: Mapping[str, float] | None = None,
    recorded: float | None = None,
) -> ParamCount | None:
    """The parameter count of ``model`` (see the module docstring), or ``None`` when unknown."""
    given = given or {}
    for name in (model, short_name(model)):
        if name in given:
            return ParamCount(model, float(given[name]), "given with --params")
    folder = local_model_dir(model)
    if folder is not None:
        count = count_safetensors(folder)
        if count:
            return ParamCount(model, float(count), "safetensors headers")
    if recorded:
        return ParamCount(model, float(recorded), "recorded by lm-eval (model_num_parameters)")
    if folder is not None and (folder / "config.json").is_file():
        try:
            config = json.loads((folder / "config.json").read_text())
        except json.JSONDecodeError:
            config = {}
        count = estimate_from_config(config)
        if count:
            return ParamCount(model, float(count), "estimated from config.json")
    return None


def search_flops(cost: Cost, policy_params: float | None, prm_params: float | None) -> float | None:
    """FLOPs of one problem's search: 2 x policy parameters x (generated tokens + prompt tokens
    the policy prefilled, i.e. not served from its prefix cache) + 2 x PRM parameters x PRM
    tokens. None when a count it needs is unknown (the PRM's only matters when it scored)."""
    if policy_params is None or (cost.prm_tokens and prm_params is None):
        return None
    policy = 2.0 * policy_params * (cost.policy_tokens + max(cost.prefilled_prompt_tokens, 0))
    return policy + (2.0 * prm_params * cost.prm_tokens if cost.prm_tokens else 0.0)


def load_tokenizer(model: str) -> Any | None:
    """The tokenizer of ``model`` from local files only (a folder or the HF cache), or ``None``."""
    folder = local_model_dir(model)
    if folder is None:
        return None
    try:
        from transformers import AutoTokenizer
    except ImportError:
        return None
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # no tokenizer files in the folder: tokens stay unknown
        logger.info("no local tokenizer for %s (%s); its tokens are unknown", model, exc)
        return None
