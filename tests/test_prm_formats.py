"""Golden tests of the PRM input formats (pure: tokenizer only, no model) and of split_steps."""

from __future__ import annotations

import pytest
from tiny_models import build_tokenizer

from tts_eval.prm import split_steps
from tts_eval.prm.formats import (
    FORMATS,
    MathShepherdFormat,
    PRMTokenizerError,
    QwenPRMFormat,
    RLHFlowFormat,
    SkyworkFormat,
    TokenClassificationFormat,
)

PROBLEM = "What is $2+3$?"
STEPS = ("## Step 1: We add $2+3=5$.\n\n", "## Step 2: The final answer is $\\boxed{5}$.")
S1, S2 = (s.strip() for s in STEPS)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("prm-fmt-tok"))


@pytest.fixture(scope="module")
def chatml_tok(tmp_path_factory):
    from prm_models import _qwen_tokenizer

    return _qwen_tokenizer(tmp_path_factory.mktemp("prm-fmt-chatml"))


def _enc(tok, text, special=False):
    return tok(text, add_special_tokens=special)["input_ids"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\n\nb", ("a", "b")),
        ("a\n\nb\n\n", ("a", "b")),  # no empty trailing step
        ("a\n\n\n\nb\n\n  \n\n", ("a", "b")),
        ("  a  \n\n b ", ("a", "b")),
        ("", ()),
        ("\n\n", ()),
        ("one step", ("one step",)),
    ],
)
def test_split_steps(text, expected):
    assert split_steps(text) == expected


def test_split_steps_custom_delimiter_and_bad_delimiter():
    assert split_steps("a\nb\n", delimiter="\n") == ("a", "b")
    with pytest.raises(ValueError, match="delimiter"):
        split_steps("a", delimiter="")


def test_rlhflow_golden(tok):
    fmt = RLHFlowFormat.from_tokenizer(tok)
    out = fmt.format(PROBLEM, STEPS)
    header = "<|start_header_id|>{}<|end_header_id|>\n\n"
    expected = (
        "<|begin_of_text|>"
        + header.format("user") + f"{PROBLEM} {S1}<|eot_id|>"
        + header.format("assistant") + "+<|eot_id|>"
        + header.format("user") + f"{S2}<|eot_id|>"
        + header.format("assistant") + "+<|eot_id|>"
    )  # fmt: skip
    assert out.text == expected
    assert list(out.token_ids) == _enc(tok, expected)
    plus = _enc(tok, "+")[0]
    assert len(out.read_positions) == 2
    # read at the position that predicts each assistant "+": the token right before it
    assert [out.token_ids[p + 1] for p in out.read_positions] == [plus, plus]
    assert [tok.decode([out.token_ids[p]]) for p in out.read_positions] == ["\n\n", "\n\n"]
    assert out.token_ids.count(plus) == 4  # two "+" in the maths text, never read
    assert (fmt.good_id, fmt.bad_id) == (plus, _enc(tok, "-")[0])


def test_math_shepherd_golden(tok):
    fmt = MathShepherdFormat.from_tokenizer(tok)
    out = fmt.format(PROBLEM, STEPS)
    assert out.text == f"{PROBLEM} {S1} ки\n{S2} ки"
    assert list(out.token_ids) == _enc(tok, out.text, special=True)
    tag = _enc(tok, " ки")
    assert len(tag) == 1
    assert [out.token_ids[p] for p in out.read_positions] == tag * 2
    assert out.read_positions[-1] == len(out.token_ids) - 1


def test_math_shepherd_tag_inside_step_is_not_read(tok):
    out = MathShepherdFormat.from_tokenizer(tok).format(PROBLEM, ("x ки y", "z"))
    assert len(out.read_positions) == 2
    assert out.text == f"{PROBLEM} x ки y ки\nz ки"


def test_qwen_prm_golden(chatml_tok):
    fmt = QwenPRMFormat.from_tokenizer(chatml_tok)
    out = fmt.format(PROBLEM, STEPS)
    expected = (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n"
        f"<|im_start|>user\n{PROBLEM}<|im_end|>\n"
        f"<|im_start|>assistant\n{S1}<extra_0>{S2}<extra_0><|im_end|>\n"
    )
    assert out.text == expected
    assert list(out.token_ids) == _enc(chatml_tok, expected)
    extra = _enc(chatml_tok, "<extra_0>")
    assert [out.token_ids[p] for p in out.read_positions] == extra * 2
    assert out.read_positions[1] == len(out.token_ids) - 3  # then <|im_end|>, "\n"


def test_skywork_golden(tok):
    fmt = SkyworkFormat.from_tokenizer(tok)
    out = fmt.format(PROBLEM, STEPS)
    nl = _enc(tok, "\n")
    assert out.text == f"<|begin_of_text|>{PROBLEM}\n{S1}\n{S2}\n"
    prompt = _enc(tok, f"<|begin_of_text|>{PROBLEM}\n")
    expected = prompt + _enc(tok, S1) + nl + _enc(tok, S2) + nl
    assert list(out.token_ids) == expected
    assert out.read_positions == (len(prompt) + len(_enc(tok, S1)), len(expected) - 1)
    assert [out.token_ids[p] for p in out.read_positions] == nl * 2


def test_token_classification_golden(tok):
    fmt = TokenClassificationFormat.from_tokenizer(tok, separator="\n\n")
    out = fmt.format(PROBLEM, STEPS)
    sep = _enc(tok, "\n\n")
    expected = [tok.bos_token_id] + _enc(tok, PROBLEM) + _enc(tok, S1) + sep + _enc(tok, S2) + sep
    assert list(out.token_ids) == expected
    assert out.text == f"<|begin_of_text|>{PROBLEM}{S1}\n\n{S2}\n\n"
    first_end = 1 + len(_enc(tok, PROBLEM)) + len(_enc(tok, S1)) + len(sep) - 1
    assert out.read_positions == (first_end, len(expected) - 1)


@pytest.mark.parametrize("prm_type", sorted(FORMATS))
def test_prefix_stability_and_strip(prm_type, tok, chatml_tok):
    """Steps are stripped the same way, and [s1] formats as a token prefix of [s1, s2] up to its
    last read position (what makes prefix reuse pay off)."""
    fmt = FORMATS[prm_type].from_tokenizer(chatml_tok if prm_type == "qwen_prm" else tok)
    one = fmt.format(PROBLEM, STEPS[:1])
    two = fmt.format(PROBLEM, STEPS)
    assert one.read_positions == two.read_positions[:1]
    cut = one.read_positions[0] + 1
    assert one.token_ids[:cut] == two.token_ids[:cut]
    padded = fmt.format(f"  {PROBLEM}\n", tuple(f"\n{s}  \n\n" for s in STEPS))
    assert padded == two
    assert fmt.format(PROBLEM, ()).token_ids == ()


@pytest.mark.parametrize(
    ("cls", "fix_tokenizer", "match"),
    [
        (QwenPRMFormat, None, "<extra_0>"),
        (RLHFlowFormat, "no_template", "chat_template"),
        (SkyworkFormat, "multi_step", "single token"),
    ],
)
def test_tokenizer_lacking_step_token(cls, fix_tokenizer, match, tok, tmp_path):
    if fix_tokenizer is None:
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        raw = Tokenizer(models.BPE())
        raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        raw.train_from_iterator(["hello world"], trainer=trainers.BpeTrainer(vocab_size=300))
        bare = PreTrainedTokenizerFast(tokenizer_object=raw)
        bare.chat_template = tok.chat_template
        with pytest.raises(PRMTokenizerError, match=match) as err:
            cls.from_tokenizer(bare)
    elif fix_tokenizer == "no_template":
        bare = build_tokenizer(tmp_path)
        bare.chat_template = None
        with pytest.raises(PRMTokenizerError, match=match) as err:
            cls.from_tokenizer(bare)
    else:
        with pytest.raises(PRMTokenizerError, match=match) as err:
            cls.from_tokenizer(tok, step_token="zzqx-no-such-token")
    assert "\n" not in str(err.value)
