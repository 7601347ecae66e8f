"""Builders of tiny random PRM checkpoints, one per supported format (no Hub access).

Each ``build_*`` saves, under a directory, the tokenizer of ``tiny_models.build_tokenizer`` and a
random model of the architecture its PRM type expects, written the way the real checkpoints are
(``save_pretrained``, or safetensors with the extra head tensors the real ones carry), so the
real loading path (``tts_eval.prm.load_prm``) is what tests exercise:

- ``rlhflow``: ``LlamaForCausalLM``; ``math_shepherd``: ``MistralForCausalLM``;
- ``qwen_prm``: a ``Qwen2Model`` under ``model.`` plus the ``score.0`` / ``score.2`` reward MLP,
  architectures ``["Qwen2ForProcessRewardModel"]``, ChatML template with ``<|im_start|>``;
- ``skywork``: ``Qwen2ForCausalLM`` weights plus ``v_head.summary``, architectures
  ``["Qwen2ForPrmModel"]``;
- ``token_classification``: ``Qwen2ForTokenClassification`` with two labels.

Heads get large random weights so step scores spread over (0, 1) instead of sitting at 0.5, which
lets tests tell a misplaced read position apart from a right one.

What this module does not do: produce meaningful scores.
"""

from __future__ import annotations

from pathlib import Path

from tiny_models import build_tokenizer

HIDDEN = 64
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _common(tok) -> dict:
    return dict(
        vocab_size=len(tok),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        initializer_range=0.2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )


def _spread_(tensor, seed: int, std: float = 0.3) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        tensor.copy_(torch.randn(tensor.shape, generator=gen) * std)


def _save_state(path: Path, config, state: dict) -> None:
    from safetensors.torch import save_file

    config.save_pretrained(path)
    save_file(
        {k: v.contiguous().clone() for k, v in state.items()}, str(path / "model.safetensors")
    )


def build_rlhflow(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tok = build_tokenizer(path)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**_common(tok)))
    _spread_(model.lm_head.weight, seed)
    model.save_pretrained(path)
    return path


def build_math_shepherd(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    path = Path(path)
    tok = build_tokenizer(path)
    torch.manual_seed(seed)
    model = MistralForCausalLM(MistralConfig(**_common(tok), sliding_window=4096))
    _spread_(model.lm_head.weight, seed)
    model.save_pretrained(path)
    return path


def _qwen_tokenizer(path: Path):
    tok = build_tokenizer(path)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML_TEMPLATE
    tok.save_pretrained(path)
    return tok


def build_qwen_prm(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2Model

    path = Path(path)
    tok = _qwen_tokenizer(path)
    torch.manual_seed(seed)
    config = Qwen2Config(**_common(tok), num_labels=2)
    config.architectures = ["Qwen2ForProcessRewardModel"]
    backbone = Qwen2Model(config)
    state = {f"model.{k}": v for k, v in backbone.state_dict().items()}
    mlp = torch.nn.Sequential(
        torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 2)
    )
    _spread_(mlp[2].weight, seed)
    state.update({f"score.{k}": v for k, v in mlp.state_dict().items()})
    _save_state(path, config, state)
    return path


def build_skywork(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    tok = build_tokenizer(path)
    torch.manual_seed(seed)
    config = Qwen2Config(**_common(tok))
    model = Qwen2ForCausalLM(config)
    config.architectures = ["Qwen2ForPrmModel"]
    v_head = torch.nn.Linear(HIDDEN, 1)
    _spread_(v_head.weight, seed)
    state = dict(model.state_dict())
    state.update({f"v_head.summary.{k}": v for k, v in v_head.state_dict().items()})
    _save_state(path, config, state)
    return path


def build_token_classification(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForTokenClassification

    path = Path(path)
    tok = build_tokenizer(path)
    torch.manual_seed(seed)
    model = Qwen2ForTokenClassification(Qwen2Config(**_common(tok), num_labels=2))
    _spread_(model.score.weight, seed)
    model.save_pretrained(path)
    return path


BUILDERS = {
    "rlhflow": build_rlhflow,
    "math_shepherd": build_math_shepherd,
    "qwen_prm": build_qwen_prm,
    "skywork": build_skywork,
    "token_classification": build_token_classification,
}
# Directory names that look like the real checkpoints' names (detection reads them).
DIR_NAMES = {
    "rlhflow": "RLHFlow-Llama3.1-8B-PRM-Deepseek-Data",
    "math_shepherd": "math-shepherd-mistral-7b-prm",
    "qwen_prm": "qwen-prm-tiny",
    "skywork": "skywork-tiny",
    "token_classification": "trl-prm-tiny",
}
