"""Builders of tiny, random, fully local models for tests and benchmarks (no Hub access).

``build_tokenizer(dir)`` trains a small byte-level BPE tokenizer with ``tokenizers`` that knows the
special tokens every PRM format needs, and a Llama-3-style chat template. ``build_llama(dir)``
saves a random tiny Llama (2 heads of 64, so vLLM's CPU backend accepts it) next to it. Everything
is written with ``save_pretrained`` so the real loading code (``from_pretrained``, ``vllm.LLM``)
is what the tests exercise.

What this module does not do: produce sensible text. Weights are random; tests that need exact
search semantics use fakes of the engine and PRM protocols instead.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MATH500 = ROOT.parent / "shared" / "data" / "math500" / "test.jsonl"
# A few MATH-style problems for tests and benchmarks that need prompts, not the data set.
SAMPLE_PROBLEMS = (
    "What is $1+1$?",
    "Compute $\\frac{1}{2} + \\frac{1}{3}$.",
    "Solve for $x$: $x^2 - 4 = 0$.",
    "What is the sum of the first ten positive integers?",
    "Find the area of a circle of radius $3$.",
    "How many positive divisors does $36$ have?",
)

BOS = "<|begin_of_text|>"
EOT = "<|eot_id|>"
PAD = "<|pad|>"
HEADER_START = "<|start_header_id|>"
HEADER_END = "<|end_header_id|>"
# Tokens some PRM formats read scores at; added as ordinary (non-special) tokens so decoding keeps
# them. "+" and "-" are single characters the BPE learns anyway, they are listed for clarity.
PRM_TOKENS = [" ки", "<extra_0>", "\n\n"]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

_FALLBACK_CORPUS = [
    "## Step 1: Compute the sum. We have $2 + 3 = 5$.\n\n"
    "## Step 2: Therefore the final answer is $\\boxed{5}$. I hope it is correct.",
    "What is $\\frac{1}{2} + \\frac{1}{3}$? Solve for $x$ in $x^2 - 4 = 0$.",
    "The answer is $\\sqrt{2}$, $\\pi$, $(1, 2)$, $[0, 1)$ and $x = -3$.",
]


def _corpus() -> list[str]:
    texts = list(_FALLBACK_CORPUS)
    if MATH500.exists():
        with MATH500.open() as f:
            for line in f:
                row = json.loads(line)
                texts += [row["problem"], row["solution"]]
    return texts


def build_tokenizer(path: Path, vocab_size: int = 512):
    """Train and save a byte-level BPE tokenizer (a ``PreTrainedTokenizerFast``) under ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOT, PAD, HEADER_START, HEADER_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOT,
        pad_token=PAD,
        additional_special_tokens=[HEADER_START, HEADER_END],
    )
    fast.add_tokens(PRM_TOKENS)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return fast


def build_llama(path: Path, *, hidden: int = 128, layers: int = 2, seed: int = 0) -> Path:
    """Save a tokenizer and a random tiny LlamaForCausalLM under ``path``; return ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tok = build_tokenizer(path)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        head_dim=64,
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    return path


# Next-token distribution of build_scripted_llama: token -> probability (the rest is spread evenly).
SCRIPTED_TOKENS = {"\n\n": 0.15, EOT: 0.05, "\\boxed{1}": 0.03, "\\boxed{2}": 0.03}


def build_scripted_llama(path: Path, *, hidden: int = 128, seed: int = 0) -> Path:
    """A tiny Llama whose next-token distribution is (almost) the same in every context.

    The residual stream is dominated by one dimension that every token embedding sets high, and the
    final norm keeps only that dimension, so the logits are ``c * lm_head[:, 0]``, which is rigged to
    the probabilities of ``SCRIPTED_TOKENS``: solutions then have steps ("\\n\\n"), end (EOS) and
    carry boxed answers ("\\boxed{1}" / "\\boxed{2}" are single tokens), so search, voting and PRM
    scoring have real work to do. Loads through the normal code paths (transformers and vLLM).
    """
    import math

    import torch
    from transformers import LlamaForCausalLM

    path = build_llama(path, hidden=hidden, seed=seed)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.add_tokens([t for t in SCRIPTED_TOKENS if t not in tok.get_vocab()])
    tok.save_pretrained(path)
    model = LlamaForCausalLM.from_pretrained(path)
    model.resize_token_embeddings(len(tok))
    vocab = len(tok)
    rest = (1.0 - sum(SCRIPTED_TOKENS.values())) / (vocab - len(SCRIPTED_TOKENS))
    logp = torch.full((vocab,), math.log(rest))
    for text, p in SCRIPTED_TOKENS.items():
        logp[tok.convert_tokens_to_ids(text)] = math.log(p)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 10.0
        model.model.norm.weight.zero_()
        model.model.norm.weight[0] = 1.0
        scale = math.sqrt(hidden)  # what RMSNorm makes of a residual dominated by one dimension
        model.lm_head.weight[:, 0] = logp / scale
    model.config.vocab_size = vocab
    model.save_pretrained(path)
    return path
