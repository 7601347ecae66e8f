"""Input formats of the supported PRMs: text/token ids to feed and positions to read scores at.

Each format is a frozen object built from the PRM's tokenizer (``from_tokenizer`` checks that the
tokenizer has the tokens the format needs and raises a one-line ``PRMTokenizerError`` otherwise)
with one pure method, ``format(problem, steps) -> FormattedInput``: the exact token ids the model
sees and, for every step, the position whose model output gives that step's score. Formats never
run a model, so they are golden-tested on their own and shared by any execution backend.

- ``rlhflow``: chat; user = problem + " " + step 1, then one user turn per step, each answered
  by an assistant "+"; read at the token before each assistant "+".
- ``math_shepherd``: problem + " " + the steps, each followed by " ки", joined by "\\n"; read at
  each "ки" tag.
- ``qwen_prm``: chat; Qwen's system prompt, user = problem, assistant = the steps each followed
  by ``<extra_0>``; read at each ``<extra_0>``.
- ``skywork``: bos + problem + "\\n", then each step's ids followed by the step token ("\\n");
  read at each step token.
- ``token_classification`` (TRL PRMTrainer): [bos] + problem, then each step's ids followed by
  the separator's ids; read at the last separator token of each step.

Steps are normalised with ``steps.clean_step`` (surrounding whitespace stripped) by every format.

What this module does not do: load models, compute scores, batch, or cache.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from ..errors import DataError
from .steps import clean_step

QWEN_PRM_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_STEP_TOKEN = "<extra_0>"
MATH_SHEPHERD_TAG = " ки"
GOOD_LABEL = "+"
BAD_LABEL = "-"
# Private-use characters used to mark where a label goes in a chat-templated text; one that does
# not occur in the request is chosen per call.
_SENTINELS = ("\ue000", "\ue001", "\ue002", "\ue003", "\U000f0000")


class PRMTokenizerError(DataError):
    """The PRM's tokenizer lacks something its format needs (a label or step token, a template)."""


class PRMFormatError(DataError):
    """A request could not be rendered in the PRM's format (e.g. a tag merged into a neighbour)."""


@dataclass(frozen=True)
class FormattedInput:
    """What one request looks like to the PRM.

    ``token_ids`` are fed to the model as is; ``read_positions[i]`` is the index into
    ``token_ids`` whose output scores step ``i``; ``text`` is the rendered text (for formats
    that concatenate token ids, the concatenation of the pieces' texts).
    """

    token_ids: tuple[int, ...]
    read_positions: tuple[int, ...]
    text: str


class PRMFormat(Protocol):
    prm_type: ClassVar[str]

    def format(self, problem: str, steps: Sequence[str]) -> FormattedInput: ...


# --------------------------------------------------------------------------------------------
# small helpers (pure)
# --------------------------------------------------------------------------------------------


def _encode(tokenizer: Any, text: str, *, special: bool = False) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def single_token_id(tokenizer: Any, text: str, *, prm_type: str, fix: str) -> int:
    """The id of ``text`` if the tokenizer encodes it as exactly one token, else a clear error."""
    ids = _encode(tokenizer, text)
    if len(ids) != 1:
        raise PRMTokenizerError(
            f"prm_type={prm_type} needs {text!r} as a single token, but this tokenizer encodes it "
            f"as {len(ids)} tokens {ids}; {fix}"
        )
    return ids[0]


def _require_fast(tokenizer: Any, prm_type: str) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise PRMTokenizerError(
            f"prm_type={prm_type} needs a fast tokenizer (character offsets); load it with "
            "AutoTokenizer.from_pretrained(..., use_fast=True)"
        )


def _require_template(tokenizer: Any, prm_type: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise PRMTokenizerError(
            f"prm_type={prm_type} renders a chat but this tokenizer has no chat_template; use the "
            "PRM's own tokenizer (tokenizer_config.json with a chat_template)"
        )


def _sentinel_for(texts: Sequence[str]) -> str:
    for sentinel in _SENTINELS:
        if not any(sentinel in t for t in texts):
            return sentinel
    raise PRMFormatError("request text contains every private-use sentinel character")


def _substitute(rendered: str, sentinel: str, label: str) -> tuple[str, list[tuple[int, int]]]:
    """Replace each ``sentinel`` in ``rendered`` by ``label``; return the text and label spans."""
    pieces = rendered.split(sentinel)
    spans: list[tuple[int, int]] = []
    out: list[str] = [pieces[0]]
    pos = len(pieces[0])
    for piece in pieces[1:]:
        spans.append((pos, pos + len(label)))
        out += [label, piece]
        pos += len(label) + len(piece)
    return "".join(out), spans


def _tokens_at(offsets: Sequence[tuple[int, int]], span: tuple[int, int]) -> list[int]:
    start, end = span
    return [i for i, (a, b) in enumerate(offsets) if a < end and b > start and b > a]


def locate_tokens(
    tokenizer: Any,
    text: str,
    spans: Sequence[tuple[int, int]],
    expected_id: int,
    *,
    special: bool,
    what: str,
) -> tuple[list[int], list[int]]:
    """Tokenise ``text``; return its ids and, per character span, the index of its one token.

    Each span must be covered by exactly one token whose id is ``expected_id`` (so a tag is never
    silently read off a merged or split token).
    """
    enc = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    positions = []
    for span in spans:
        hits = _tokens_at(offsets, span)
        if len(hits) != 1 or ids[hits[0]] != expected_id:
            got = [ids[h] for h in hits]
            raise PRMFormatError(
                f"{what} at characters {span} tokenised as {got}, expected the single token "
                f"{expected_id}; the neighbouring text merged with it"
            )
        positions.append(hits[0])
    return ids, positions


def _clean(problem: str, steps: Sequence[str]) -> tuple[str, list[str]]:
    return problem.strip(), [clean_step(s) for s in steps]


def _render_labelled_chat(
    tokenizer: Any,
    problem: str,
    steps: Sequence[str],
    messages: Callable[[str, Sequence[str], str], list[dict[str, str]]],
    label: str,
    *,
    unit: str,
    **template_kwargs: Any,
) -> tuple[str, list[tuple[int, int]]]:
    """Render ``messages(problem, steps, mark)`` with the chat template, ``label`` at each mark.

    A sentinel absent from the request stands in for the mark while templating, so the character
    span of every ``label`` in the returned text is known exactly; there must be one per step
    (else ``PRMFormatError``, naming the lost ``unit``).
    """
    sentinel = _sentinel_for([problem, *steps])
    rendered = tokenizer.apply_chat_template(
        messages(problem, steps, sentinel), tokenize=False, **template_kwargs
    )
    text, spans = _substitute(rendered, sentinel, label)
    if len(spans) != len(steps):
        raise PRMFormatError(f"the chat template kept {len(spans)} of {len(steps)} {unit}")
    return text, spans


def _concat_steps(
    tokenizer: Any, prefix_ids: list[int], steps: Sequence[str], separator_ids: Sequence[int]
) -> tuple[list[int], list[int]]:
    """``prefix_ids``, then each step's ids followed by ``separator_ids``.

    Returns the ids and, per step, the position of its last separator token (where it is read).
    """
    ids = list(prefix_ids)
    positions = []
    for step in steps:
        ids += _encode(tokenizer, step) + list(separator_ids)
        positions.append(len(ids) - 1)
    return ids, positions


_EMPTY = FormattedInput((), (), "")


# --------------------------------------------------------------------------------------------
# formats
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RLHFlowFormat:
    """RLHFlow Llama3.1-8B-PRM-{Deepseek,Mistral}-Data: one user turn per step, assistant "+"."""

    prm_type: ClassVar[str] = "rlhflow"
    tokenizer: Any
    good_id: int
    bad_id: int

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> RLHFlowFormat:
        _require_fast(tokenizer, cls.prm_type)
        _require_template(tokenizer, cls.prm_type)
        fix = "use the RLHFlow PRM's own tokenizer"
        good = single_token_id(tokenizer, GOOD_LABEL, prm_type=cls.prm_type, fix=fix)
        bad = single_token_id(tokenizer, BAD_LABEL, prm_type=cls.prm_type, fix=fix)
        return cls(tokenizer, good, bad)

    def messages(self, problem: str, steps: Sequence[str], label: str) -> list[dict[str, str]]:
        problem, steps = _clean(problem, steps)
        out: list[dict[str, str]] = []
        for k, step in enumerate(steps):
            out.append({"role": "user", "content": f"{problem} {step}" if k == 0 else step})
            out.append({"role": "assistant", "content": label})
        return out

    def format(self, problem: str, steps: Sequence[str]) -> FormattedInput:
        if not steps:
            return _EMPTY
        text, spans = _render_labelled_chat(
            self.tokenizer, problem, steps, self.messages, GOOD_LABEL, unit="assistant turns"
        )
        ids, label_pos = locate_tokens(
            self.tokenizer, text, spans, self.good_id, special=False, what="assistant '+'"
        )
        # The score of step k is P("+") predicted at the token before the k-th assistant "+".
        return FormattedInput(tuple(ids), tuple(p - 1 for p in label_pos), text)


@dataclass(frozen=True)
class MathShepherdFormat:
    """peiyi9979/math-shepherd-mistral-7b-prm: steps tagged with " ки", read P("+") at each tag."""

    prm_type: ClassVar[str] = "math_shepherd"
    tokenizer: Any
    tag_id: int
    good_id: int
    bad_id: int

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> MathShepherdFormat:
        _require_fast(tokenizer, cls.prm_type)
        fix = "use the Math-Shepherd PRM's own tokenizer"
        good = single_token_id(tokenizer, GOOD_LABEL, prm_type=cls.prm_type, fix=fix)
        bad = single_token_id(tokenizer, BAD_LABEL, prm_type=cls.prm_type, fix=fix)
        probe = "1" + MATH_SHEPHERD_TAG
        span = (len(probe) - len(MATH_SHEPHERD_TAG.lstrip()), len(probe))
        enc = tokenizer(probe, add_special_tokens=False, return_offsets_mapping=True)
        hits = _tokens_at([tuple(o) for o in enc["offset_mapping"]], span)
        if len(hits) != 1:
            raise PRMTokenizerError(
                f"prm_type={cls.prm_type} needs the step tag {MATH_SHEPHERD_TAG!r} as one token, "
                f"but this tokenizer splits it into {len(hits)} tokens; {fix}"
            )
        return cls(tokenizer, enc["input_ids"][hits[0]], good, bad)

    @staticmethod
    def render(problem: str, steps: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
        """The text and the character span of each tag's "ки" (without its leading space)."""
        problem, steps = _clean(problem, steps)
        parts = [problem, " "]
        pos = len(problem) + 1
        spans = []
        core = len(MATH_SHEPHERD_TAG.lstrip())
        for k, step in enumerate(steps):
            piece = ("\n" if k else "") + step + MATH_SHEPHERD_TAG
            parts.append(piece)
            pos += len(piece)
            spans.append((pos - core, pos))
        return "".join(parts), spans

    def format(self, problem: str, steps: Sequence[str]) -> FormattedInput:
        if not steps:
            return _EMPTY
        text, spans = self.render(problem, steps)
        ids, pos = locate_tokens(
            self.tokenizer, text, spans, self.tag_id, special=True, what="step tag 'ки'"
        )
        return FormattedInput(tuple(ids), tuple(pos), text)


@dataclass(frozen=True)
class QwenPRMFormat:
    """Qwen2.5-Math-PRM: system prompt, problem, steps each followed by ``<extra_0>``."""

    prm_type: ClassVar[str] = "qwen_prm"
    tokenizer: Any
    step_id: int
    system_prompt: str = QWEN_PRM_SYSTEM_PROMPT

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> QwenPRMFormat:
        _require_fast(tokenizer, cls.prm_type)
        _require_template(tokenizer, cls.prm_type)
        step = single_token_id(
            tokenizer,
            QWEN_STEP_TOKEN,
            prm_type=cls.prm_type,
            fix="use the Qwen2.5-Math-PRM tokenizer (it defines <extra_0>)",
        )
        return cls(tokenizer, step)

    def messages(self, problem: str, steps: Sequence[str], mark: str) -> list[dict[str, str]]:
        problem, steps = _clean(problem, steps)
        return [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": problem},
            {"role": "assistant", "content": "".join(step + mark for step in steps)},
        ]

    def format(self, problem: str, steps: Sequence[str]) -> FormattedInput:
        if not steps:
            return _EMPTY
        text, spans = _render_labelled_chat(
            self.tokenizer,
            problem,
            steps,
            self.messages,
            QWEN_STEP_TOKEN,
            unit="step marks",
            add_generation_prompt=False,
        )
        ids, pos = locate_tokens(
            self.tokenizer, text, spans, self.step_id, special=False, what="<extra_0>"
        )
        return FormattedInput(tuple(ids), tuple(pos), text)


@dataclass(frozen=True)
class SkyworkFormat:
    """Skywork-o1-Open-PRM: bos + problem + "\\n", each step's ids then the step token."""

    prm_type: ClassVar[str] = "skywork"
    tokenizer: Any
    step_token: str
    step_id: int

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, step_token: str = "\n") -> SkyworkFormat:
        step_id = single_token_id(
            tokenizer,
            step_token,
            prm_type=cls.prm_type,
            fix="pass a step token the tokenizer knows as one token (default '\\n')",
        )
        return cls(tokenizer, step_token, step_id)

    def format(self, problem: str, steps: Sequence[str]) -> FormattedInput:
        if not steps:
            return _EMPTY
        problem, steps = _clean(problem, steps)
        prefix = (self.tokenizer.bos_token or "") + problem + "\n"
        ids, positions = _concat_steps(
            self.tokenizer, _encode(self.tokenizer, prefix), steps, [self.step_id]
        )
        text = prefix + "".join(step + self.step_token for step in steps)
        return FormattedInput(tuple(ids), tuple(positions), text)


@dataclass(frozen=True)
class TokenClassificationFormat:
    """TRL PRMTrainer models: [bos] + problem, each step's ids then the separator's ids."""

    prm_type: ClassVar[str] = "token_classification"
    tokenizer: Any
    separator: str
    separator_ids: tuple[int, ...]

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, separator: str = "\n") -> TokenClassificationFormat:
        sep_ids = tuple(_encode(tokenizer, separator))
        if not sep_ids:
            raise PRMTokenizerError(
                f"prm_type={cls.prm_type}: separator {separator!r} encodes to no tokens; pass the "
                "step_separator the PRM was trained with (TRL default '\\n')"
            )
        return cls(tokenizer, separator, sep_ids)

    def format(self, problem: str, steps: Sequence[str]) -> FormattedInput:
        if not steps:
            return _EMPTY
        problem, steps = _clean(problem, steps)
        bos_id = getattr(self.tokenizer, "bos_token_id", None)
        prefix_ids = ([bos_id] if bos_id is not None else []) + _encode(self.tokenizer, problem)
        ids, positions = _concat_steps(self.tokenizer, prefix_ids, steps, self.separator_ids)
        bos = self.tokenizer.bos_token if bos_id is not None else ""
        text = bos + problem + "".join(step + self.separator for step in steps)
        return FormattedInput(tuple(ids), tuple(positions), text)


FORMATS: Mapping[str, Any] = {
    f.prm_type: f
    for f in (
        RLHFlowFormat,
        MathShepherdFormat,
        QwenPRMFormat,
        SkyworkFormat,
        TokenClassificationFormat,
    )
}
