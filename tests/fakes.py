"""Fakes of the engine, PRM and answer-spec protocols, for exact tests of the search strategies.

Token ids are characters: ``encode(text) = tuple(map(ord, text))`` and :data:`EOS_ID` (0) is the
end-of-sequence token, so a candidate's token-id prefix and its text are interchangeable.

- :class:`ScriptedEngine`: continuations scripted per prefix. ``script`` maps a prefix text to the
  options for the next piece of text. The prefix is the decoded prompt + solution so far; a key
  may also be the part after the prompt's ``sep`` (default ``"|"``), so prompts ``"P1|"`` and
  ``"P2|"`` can share one script. Sample ``i`` of a request takes option ``(offset + i) %
  len(options)`` at every level, ``offset`` being the number of samples already asked for the same
  prompt earlier in the same call (so two beams at one prefix get different options); temperature
  0 takes option 0. An option ending with ``"<eos>"`` ends the solution with EOS. Output is then
  cut exactly like a real engine: at the first stop string (STEP, the stop string kept in the
  text), at EOS (EOS id in ``token_ids``, not in ``text``), or at ``max_tokens`` (LENGTH). A
  prefix missing from the script raises ``KeyError``.
  ``seeded=True`` numbers samples as real engines seed them (sample ``i`` of a request with seed
  ``s`` is seeded ``s + i``): sample ``i`` takes option ``s + i - s0``, ``s0`` being the seed of
  the first request at that prompt, so later waves of a problem continue its first wave's samples.
- :class:`RandomEngine`: pseudo-random steps that depend only on (seed, prompt ids, sample index);
  it refuses requests without a seed. For determinism and batch-independence tests.
  ``seeded=True``: on (``seed + sample index``, prompt ids) instead, as real engines seed sample
  ``j`` of a request with ``seed + j`` (so ``n`` samples drawn in waves are those of one request).
- Log-probabilities: both engines take ``logprobs=``, a :data:`LogprobScript` called for every
  generated token of a request that asks (``SamplingParams.logprobs = k``) with the text before the
  token (decoded prompt + completion so far), the token id and ``k``; without one such a request is
  a one-line ``ValueError``. :class:`TaggedLogprobs` is a ready script: a token's confidence is the
  number in the last ``(c=X)`` tag before it.
- :class:`FakePRM`: the score of a step is the number in its last ``[0.x]`` tag (``default`` if
  none); ``tokens_processed`` is the character count of problem + steps.
- :class:`FakeAnswerSpec`: final step = contains ``\\boxed{``; answer = last boxed content;
  equivalence by exact fractions, so ``1/2 ~ 0.5 ~ \\frac{1}{2}``. Counts its calls.

All fakes record the batches they were called with (``calls``) and, engines and PRM, what they
returned (``outputs``).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction

from tts_eval.types import (
    Completion,
    FinishReason,
    GenerationOutput,
    GenerationRequest,
    PRMOutput,
    PRMRequest,
    Problem,
    SamplingParams,
    TokenLogprobs,
)

EOS_ID = 0
EOS = "<eos>"


def encode(text: str) -> tuple[int, ...]:
    return tuple(ord(ch) for ch in text)


def decode(ids: Sequence[int]) -> str:
    return "".join(chr(i) for i in ids if i != EOS_ID)


def problem(uid: str, text: str | None = None, prompt: str | None = None) -> Problem:
    """A problem whose prompt ids encode ``prompt`` (default ``"<uid>|"``)."""
    prompt = f"{uid}|" if prompt is None else prompt
    return Problem(uid=uid, text=text or f"problem {uid}", prompt_ids=encode(prompt))


def _tokens(piece: str) -> list[int]:
    if piece.endswith(EOS):
        return [*encode(piece[: -len(EOS)]), EOS_ID]
    return list(encode(piece))


# (text before the token: decoded prompt + completion so far, token id, k) -> its log-probabilities
LogprobScript = Callable[[str, int, int], TokenLogprobs]
_TAG = re.compile(r"\(c=(\d+(?:\.\d+)?)\)")


class TaggedLogprobs:
    """A :data:`LogprobScript`: a token's confidence ``X`` is the number of the last ``(c=X)`` tag
    in the text before it (``default`` before any tag). The generated token and each of the top
    ``k`` get log-probability ``-X`` (top ids ``1..k``), so DeepConf's token confidence of every
    token is exactly ``X``."""

    def __init__(self, default: float = 1.0) -> None:
        self.default = default

    def __call__(self, before: str, token: int, k: int) -> TokenLogprobs:
        found = _TAG.findall(before)
        level = float(found[-1]) if found else self.default
        return TokenLogprobs(-level, tuple(range(1, k + 1)), (-level,) * k)


def check_logprobs(params: SamplingParams, script: LogprobScript | None) -> None:
    if params.logprobs is not None and script is None:
        raise ValueError(
            f"logprobs={params.logprobs} asked of a fake engine without a logprobs script; "
            "accepted: logprobs=None"
        )


def _cut(  # stream yields token ids lazily
    stream, params, on_missing, before: str = "", script: LogprobScript | None = None
) -> Completion:
    text = ""
    ids: list[int] = []
    lps: list[TokenLogprobs] | None = None if params.logprobs is None else []

    def done(reason: FinishReason) -> Completion:
        return Completion(text, tuple(ids), reason, None if lps is None else tuple(lps))

    for token in stream:
        if len(ids) >= params.max_tokens:
            return done(FinishReason.LENGTH)
        if lps is not None:
            lps.append(script(before + text, token, params.logprobs))  # type: ignore[misc]
        ids.append(token)
        if token == EOS_ID:
            return done(FinishReason.EOS)
        text += chr(token)
        if any(text.endswith(stop) for stop in params.stop):
            return done(FinishReason.STEP)
    return on_missing(text, ids)


class _NoModel:
    """What a fake engine has of the PolicyEngine protocol besides generating: no tokenizer, no
    length limit, no device; ``close`` counts its calls."""

    tokenizer = None
    max_model_len: int | None = None
    device = None
    closes = 0

    def close(self) -> None:
        self.closes += 1


class ScriptedEngine(_NoModel):
    """See the module docstring."""

    def __init__(
        self,
        script: Mapping[str, Sequence[str]],
        sep: str = "|",
        report_cache: bool = False,
        logprobs: LogprobScript | None = None,
        seeded: bool = False,
    ) -> None:
        self.script = {key: list(options) for key, options in script.items()}
        self.sep = sep
        self.seeded = seeded
        self._first_seed: dict[tuple[int, ...], int] = {}
        self.report_cache = report_cache
        self.logprobs = logprobs
        self.calls: list[list[GenerationRequest]] = []
        self.outputs: list[list[GenerationOutput]] = []

    def render_prompt(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        return list(encode("".join(m["content"] for m in messages) + self.sep))

    def _options(self, prefix: str) -> list[str]:
        if prefix in self.script:
            return self.script[prefix]
        _, found, rest = prefix.partition(self.sep)
        if found and rest in self.script:
            return self.script[rest]
        raise KeyError(f"script has no entry for prefix {prefix!r}")

    def _stream(self, prompt: str, sample: int, greedy: bool):
        text = prompt
        while True:
            options = self._options(text)
            piece = options[0 if greedy else sample % len(options)]
            yield from _tokens(piece)
            if piece.endswith(EOS):
                return
            text += piece

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        self.calls.append(list(requests))
        outputs = []
        offsets: dict[tuple[int, ...], int] = {}
        for request in requests:
            prompt = decode(request.prompt_ids)
            params = request.params
            check_logprobs(params, self.logprobs)
            if self.seeded:
                if params.seed is None:
                    raise ValueError("a seeded ScriptedEngine needs a seed on every request")
                first = self._first_seed.setdefault(request.prompt_ids, params.seed)
                offset = params.seed - first
            else:
                offset = offsets.get(request.prompt_ids, 0)
                offsets[request.prompt_ids] = offset + params.n
            completions = tuple(
                _cut(
                    self._stream(prompt, offset + i, params.temperature == 0),
                    params,
                    self._ran_out,
                    prompt,
                    self.logprobs,
                )
                for i in range(params.n)
            )
            queried = len(request.prompt_ids) * params.n  # every sample queries the prompt
            cached = max(0, queried - 1) if self.report_cache else None
            outputs.append(GenerationOutput(completions, queried, cached))
        self.outputs.append(outputs)
        return outputs

    @staticmethod
    def _ran_out(text, ids):
        raise AssertionError("scripted stream ended without EOS")


class RandomEngine(_NoModel):
    """Seeded pseudo-random solutions: ``steps`` of ``"s<k> [0.xx]"`` then ``\\boxed{a} [0.xx]``.

    Each step ends the solution with probability ``p_final`` (after ``min_steps``); answers are
    drawn from ``answers``. Everything depends only on (seed, prompt ids, sample index), or with
    ``seeded=True`` on (seed + sample index, prompt ids).
    """

    def __init__(
        self,
        answers: Sequence[str] = ("1/2", "0.5", "3", "4", "7"),
        p_final: float = 0.3,
        min_steps: int = 1,
        max_steps: int = 12,
        logprobs: LogprobScript | None = None,
        seeded: bool = False,
    ) -> None:
        self.logprobs = logprobs
        self.seeded = seeded
        self.answers = list(answers)
        self.p_final = p_final
        self.min_steps = min_steps
        self.max_steps = max_steps
        self.calls: list[list[GenerationRequest]] = []
        self.outputs: list[list[GenerationOutput]] = []

    def render_prompt(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        return list(encode("".join(m["content"] for m in messages) + "|"))

    def _stream(self, prompt_ids: tuple[int, ...], seed: int, sample: int, greedy: bool):
        sample = 0 if greedy else sample
        key = (seed + sample, prompt_ids) if self.seeded else (seed, prompt_ids, sample)
        digest = hashlib.sha256(repr(key).encode())
        rng = random.Random(digest.hexdigest())
        for step in range(self.max_steps):
            score = f"[{rng.randint(1, 99) / 100:.2f}]"
            if step + 1 >= self.min_steps and rng.random() < self.p_final:
                yield from _tokens(f"\\boxed{{{rng.choice(self.answers)}}} {score}{EOS}")
                return
            yield from _tokens(f"s{rng.randint(0, 999)} {score}\n\n")
        yield EOS_ID

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        self.calls.append(list(requests))
        outputs = []
        for request in requests:
            params = request.params
            if params.seed is None:
                raise ValueError("RandomEngine needs a seed on every request")
            check_logprobs(params, self.logprobs)
            completions = tuple(
                _cut(
                    self._stream(request.prompt_ids, params.seed, i, params.temperature == 0),
                    params,
                    lambda text, ids: Completion(text, tuple(ids), FinishReason.EOS),
                    decode(request.prompt_ids),
                    self.logprobs,
                )
                for i in range(params.n)
            )
            queried = len(request.prompt_ids) * request.params.n  # every sample queries it
            outputs.append(GenerationOutput(completions, queried, None))
        self.outputs.append(outputs)
        return outputs


_SCORE = re.compile(r"\[([01](?:\.\d+)?)\]")


class FakePRM(_NoModel):
    """Step score = the number in the step's last ``[0.x]`` tag, else ``default``."""

    def __init__(self, default: float = 0.5) -> None:
        self.default = default
        self.calls: list[list[PRMRequest]] = []
        self.outputs: list[list[PRMOutput]] = []

    def step_score(self, step: str) -> float:
        found = _SCORE.findall(step)
        return float(found[-1]) if found else self.default

    def score(self, requests: Sequence[PRMRequest]) -> list[PRMOutput]:
        self.calls.append(list(requests))
        outputs = [
            PRMOutput(
                tuple(self.step_score(step) for step in request.steps),
                len(request.problem) + sum(len(step) for step in request.steps),
            )
            for request in requests
        ]
        self.outputs.append(outputs)
        return outputs


def _boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def _fraction(answer: str) -> Fraction | None:
    frac = re.fullmatch(r"\\frac\{(-?\d+)\}\{(\d+)\}", answer)
    if frac:
        answer = f"{frac.group(1)}/{frac.group(2)}"
    try:
        return Fraction(answer)
    except (ValueError, ZeroDivisionError):
        return None


class FakeAnswerSpec:
    """Boxed answers; ``1/2 ~ 0.5 ~ \\frac{1}{2}`` by exact fractions; counts its calls."""

    def __init__(self) -> None:
        self.canonical_calls = 0
        self.equivalent_calls = 0

    def is_final_step(self, step_text: str) -> bool:
        return "\\boxed{" in step_text

    def extract(self, solution_text: str) -> str | None:
        return _boxed(solution_text)

    def canonical(self, answer: str) -> str:
        self.canonical_calls += 1
        return answer.replace(" ", "")

    def equivalent(self, a: str, b: str) -> bool:
        self.equivalent_calls += 1
        a, b = a.replace(" ", ""), b.replace(" ", "")
        fa, fb = _fraction(a), _fraction(b)
        if fa is not None and fb is not None:
            return fa == fb
        return a == b
