"""The score heads of the transformers PRMs, and reading their weights from a checkpoint.

Heads are our own small modules whose weights are read from the checkpoint files by name (no
``trust_remote_code``; the backbone loads through ``from_pretrained``):

- ``label_softmax``: rows of ``lm_head.weight`` for the "+" and "-" tokens; P("+") (rlhflow,
  math_shepherd; tied embeddings are used when the checkpoint has no ``lm_head.weight``),
- ``qwen_reward``: ``score.0`` Linear(h, h) -> ReLU -> ``score.2`` Linear(h, 2); P(class 1),
- ``value_sigmoid``: ``v_head.summary`` Linear(h, 1); sigmoid (Skywork),
- ``token_class``: the ``*ForTokenClassification`` head (``score`` or ``classifier``); P(class 1).

What this module does not do: run the backbone or plan forwards (``hf``, ``planning``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import DataError, MissingFileError

# --------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------


class LabelSoftmaxHead(nn.Module):
    """P(first label) of a softmax over two vocabulary rows of the LM head."""

    def __init__(self, rows: torch.Tensor) -> None:
        super().__init__()
        self.rows = nn.Parameter(rows.float(), requires_grad=False)  # [2, hidden]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.softmax(hidden.float() @ self.rows.T, dim=-1)[..., 0]


class ClassProbHead(nn.Module):
    """P(class 1) of a 2-class head, or the sigmoid of a 1-logit head."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.float()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.module(hidden.float())
        if logits.shape[-1] == 1:
            return torch.sigmoid(logits[..., 0])
        return torch.softmax(logits, dim=-1)[..., 1]


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


# --------------------------------------------------------------------------------------------
# Checkpoint reading (named tensors only; the backbone loads through from_pretrained)
# --------------------------------------------------------------------------------------------


def _local_file(path: str, name: str) -> str | None:
    if os.path.isdir(path):
        candidate = os.path.join(path, name)
        return candidate if os.path.exists(candidate) else None
    try:  # a Hub id: files are in (or go to) the HF cache
        from huggingface_hub import hf_hub_download

        return hf_hub_download(path, name)
    except Exception:  # noqa: BLE001 - absence of an optional file is the expected case here
        return None


def read_named_tensors(path: str, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Read the tensors ``names`` (those present) from a checkpoint's safetensors or .bin files."""
    wanted = set(names)
    found: dict[str, torch.Tensor] = {}
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        index = _local_file(path, index_name)
        if index is not None:
            weight_map = json.loads(Path(index).read_text())["weight_map"]
            files = sorted({weight_map[n] for n in wanted if n in weight_map})
        elif _local_file(path, single) is not None:
            files = [single]
        else:
            continue
        for fname in files:
            local = _local_file(path, fname)
            if local is None:
                continue
            if fname.endswith(".safetensors"):
                from safetensors import safe_open

                with safe_open(local, framework="pt") as f:
                    for n in wanted & set(f.keys()):
                        found[n] = f.get_tensor(n)
            else:
                state = torch.load(local, map_location="cpu", weights_only=True, mmap=True)
                found.update({n: state[n] for n in wanted if n in state})
        return found
    raise MissingFileError(f"no model.safetensors or pytorch_model.bin checkpoint under {path}")


def _require(found: dict[str, torch.Tensor], names: Sequence[str], path: str, what: str) -> None:
    missing = [n for n in names if n not in found]
    if missing:
        raise DataError(f"{what} weights {missing} not found in the checkpoint {path}")


def build_head(
    kind: str, path: str, backbone: nn.Module, label_ids: Sequence[int] = ()
) -> nn.Module:
    """The score head ``kind`` for the checkpoint at ``path`` (see the module docstring)."""
    if kind == "label_softmax":
        found = read_named_tensors(path, ["lm_head.weight"])
        if "lm_head.weight" in found:
            weight = found["lm_head.weight"]
        elif getattr(backbone.config, "tie_word_embeddings", False):
            weight = backbone.get_input_embeddings().weight.detach().cpu()
        else:
            raise DataError(f"LM head weight 'lm_head.weight' not found in the checkpoint {path}")
        return LabelSoftmaxHead(weight[list(label_ids)])
    if kind == "qwen_reward":
        names = ["score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"]
        found = read_named_tensors(path, names)
        _require(found, names, path, "Qwen PRM reward head")
        mlp = nn.Sequential(
            _linear(found["score.0.weight"], found["score.0.bias"]),
            nn.ReLU(),
            _linear(found["score.2.weight"], found["score.2.bias"]),
        )
        return ClassProbHead(mlp)
    if kind == "value_sigmoid":
        names = ["v_head.summary.weight", "v_head.summary.bias"]
        found = read_named_tensors(path, names)
        _require(found, names, path, "Skywork value head")
        return ClassProbHead(_linear(found[names[0]], found[names[1]]))
    if kind == "token_class":
        for prefix in ("score", "classifier"):
            found = read_named_tensors(path, [f"{prefix}.weight", f"{prefix}.bias"])
            if f"{prefix}.weight" in found:
                head = _linear(found[f"{prefix}.weight"], found.get(f"{prefix}.bias"))
                if head.out_features not in (1, 2):
                    raise DataError(
                        f"token-classification PRM head has {head.out_features} labels; "
                        "expected 2 (P(class 1) is the score) or 1 (sigmoid)"
                    )
                return ClassProbHead(head)
        raise DataError(
            f"token-classification head weights ('score.weight' or 'classifier.weight') not found "
            f"in the checkpoint {path}"
        )
    raise DataError(f"unknown head kind {kind!r}")
