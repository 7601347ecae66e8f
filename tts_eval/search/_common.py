"""Shared pieces of the strategies: seeds, step segmentation, partial solutions and requests.

- :func:`derive_seed`: a stable hash (BLAKE2b, not Python's ``hash()``) of the run seed, the
  problem uid, a purpose, the candidate's lineage and the iteration; never of a batch position.
- :func:`segment_steps`: splits a solution's text at the step delimiter into raw steps (which
  concatenate back to the text exactly) and their PRM views (delimiter removed, stripped).
  Whitespace-only pieces are never steps: they are glued to the previous step (or the next one at
  the start). After a STEP completion, text after the last delimiter (the rest of the token that
  completed it) is pending: it joins the next step's view, and is never scored on its own.
- :class:`Node`: an immutable partial solution; :func:`extend` appends one completion to it and
  decides whether it finished (EOS, or a STEP whose new step passes ``AnswerSpec.is_final_step``)
  or is truncated (a LENGTH cut-off, or the per-solution ``max_tokens`` budget spent).
- Per-step token cap: a strategy whose options declare ``max_step_tokens`` (the tree and particle
  strategies) has every step request (:func:`step_request`, the last iteration's and lookahead
  rollouts' included) ask for at most that many tokens, as the reference scripts cap each step at
  their ``max_tokens``. A completion that hits that cap (LENGTH, with solution budget left) ends
  as a step: :func:`extend` records a *cut* at the end of its text (``Node.cuts``, character
  offsets) where the step ends although no delimiter follows, and the node goes on (finished when
  that step is a final-answer step). :func:`segment_steps` splits at cuts as at delimiters;
  :func:`capped_steps` names the steps that ended at the cap (the trace's
  ``settings["capped_steps"]``).

What this module does not do: choose candidates, vote, or call an engine/PRM.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
from dataclasses import dataclass, field, replace

from tts_eval.search.confidence import DEFAULT_SELF_SCORE, token_value
from tts_eval.search.config import SearchConfig
from tts_eval.types import (
    AnswerSpec,
    Candidate,
    Completion,
    FinishReason,
    GenerationRequest,
    PRMRequest,
    Problem,
    SamplingParams,
)

SEED_BITS = 31  # seeds fit a signed 32-bit int, which every backend accepts


def derive_seed(base: int, *parts: object) -> int:
    """A seed in ``[0, 2**31)`` that depends only on ``base`` and ``parts`` (JSON-encodable)."""
    payload = json.dumps([base, *parts], separators=(",", ":"), ensure_ascii=True)
    digest = hashlib.blake2b(payload.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (1 << SEED_BITS)


def segment_steps(
    text: str, delimiter: str, open_tail: bool = False, cuts: tuple[int, ...] = ()
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(raw_steps, views)`` of a solution text (see the module docstring).

    ``cuts``: character offsets where a step ended at the per-step token cap; the text is split
    there too (each piece before a cut is closed; whitespace-only pieces glue on as usual).
    ``"".join(raw_steps) == text`` whenever the text has any non-whitespace content.
    """
    if cuts:
        return _segment_cut(text, delimiter, open_tail, cuts)
    pieces = text.split(delimiter)
    raw_pieces = [piece + delimiter for piece in pieces[:-1]] + [pieces[-1]]
    tail = raw_pieces.pop() if open_tail else ""
    raws: list[str] = []
    views: list[str] = []
    lead = ""
    for raw, piece in zip(raw_pieces, pieces, strict=False):
        content = piece.strip()
        if content:
            raws.append(lead + raw)
            views.append(content)
            lead = ""
        elif raws:
            raws[-1] += raw
        else:
            lead += raw
    if tail:
        if raws:
            raws[-1] += tail
        else:
            lead += tail
    return tuple(raws), tuple(views)


def _segment_cut(
    text: str, delimiter: str, open_tail: bool, cuts: tuple[int, ...]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(text)), len(text)]
    open_tail = open_tail and len(text) not in cuts  # a cut at the end closes the last step
    raws: list[str] = []
    views: list[str] = []
    lead = ""
    for k, (start, end) in enumerate(itertools.pairwise(bounds)):
        last = k == len(bounds) - 2
        piece_raws, piece_views = segment_steps(text[start:end], delimiter, open_tail and last)
        if not piece_raws:  # whitespace only (or a pending tail): glued to the previous step
            chunk = text[start:end]
            if raws:
                raws[-1] += chunk
            else:
                lead += chunk
            continue
        raws.extend((lead + piece_raws[0], *piece_raws[1:]))
        views.extend(piece_views)
        lead = ""
    return tuple(raws), tuple(views)


@dataclass(frozen=True)
class Node:
    """A partial (or complete) solution of one problem inside a search.

    ``lineage`` names the node in its search tree (child indices from the root); seeds are
    derived from it. ``rank_score`` is what the strategy ranks by: the aggregated step scores, or
    with lookahead the aggregated scores of the rolled-out prefix. ``cuts``: character offsets
    in ``text`` where a step ended at the per-step token cap (module docstring).
    ``token_values``: per generated token, the policy's confidence value that ``self_score``
    reads (:func:`tts_eval.search.confidence.token_value`; empty when the run reads none);
    ``pieces``: ``(tokens, characters)`` of the solution at the end of each appended completion
    (where a self-scored step's prefix ends).
    """

    lineage: tuple[int, ...]
    group: int = 0
    token_ids: tuple[int, ...] = ()
    text: str = ""
    finish_reason: FinishReason = FinishReason.STEP
    finished: bool = False
    truncated: bool = False
    step_scores: tuple[float, ...] = ()
    rank_score: float = 0.0
    cuts: tuple[int, ...] = ()
    token_values: tuple[float, ...] = field(default=(), repr=False)
    pieces: tuple[tuple[int, int], ...] = field(default=(), repr=False)
    _views: tuple[str, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def active(self) -> bool:
        """Can be continued by another step."""
        return not (self.finished or self.truncated)

    @property
    def open_tail(self) -> bool:
        return self.active and self.finish_reason is FinishReason.STEP

    def views(self, delimiter: str) -> tuple[str, ...]:
        """PRM views of the steps (cached: a search uses one delimiter throughout)."""
        if self._views is None:
            object.__setattr__(
                self, "_views", segment_steps(self.text, delimiter, self.open_tail, self.cuts)[1]
            )
        return self._views  # type: ignore[return-value]


def extend(
    node: Node,
    completion: Completion,
    *,
    index: int,
    config: SearchConfig,
    answers: AnswerSpec,
) -> Node:
    """The child of ``node`` obtained by appending ``completion`` (the ``index``-th sample)."""
    delimiter = config.step_delimiter
    reason = completion.finish_reason
    if reason is FinishReason.STEP and delimiter not in completion.text:
        raise ValueError(
            f"engine returned a STEP completion whose text lacks the step delimiter "
            f"{delimiter!r}; engines must keep the stop string in Completion.text "
            f"(got {completion.text[-40:]!r})"
        )
    text = node.text + completion.text
    token_ids = node.token_ids + tuple(completion.token_ids)
    cuts = node.cuts
    cap = step_cap(config)
    if (
        reason is FinishReason.LENGTH
        and cap is not None
        and len(completion.token_ids) >= cap
        and len(token_ids) < config.max_tokens
        and completion.text.strip()
    ):
        # the step hit the per-step cap with solution budget left: it ends as a step
        reason, cuts = FinishReason.STEP, (*cuts, len(text))
    values = node.token_values + completion_values(completion, config)
    finished = reason is FinishReason.EOS
    truncated = reason is FinishReason.LENGTH
    views = None
    if reason is FinishReason.STEP:
        before = node.views(delimiter)
        after = segment_steps(text, delimiter, open_tail=True, cuts=cuts)[1]
        finished = len(after) > len(before) and bool(answers.is_final_step(after[-1]))
        if not finished and len(token_ids) >= config.max_tokens:
            truncated, reason = True, FinishReason.LENGTH
        if not (finished or truncated):
            views = after  # the child keeps an open tail: same segmentation
    return Node(
        lineage=(*node.lineage, index),
        group=node.group,
        token_ids=token_ids,
        text=text,
        finish_reason=reason,
        finished=finished,
        truncated=truncated,
        step_scores=node.step_scores,
        rank_score=node.rank_score,
        cuts=cuts,
        token_values=values,
        pieces=(*node.pieces, (len(token_ids), len(text))),
        _views=views,
    )


def completion_values(completion: Completion, config: SearchConfig) -> tuple[float, ...]:
    """The per-token confidence values of a completion that a run reading the policy's confidence
    keeps (``config.self_score``'s, DeepConf's token confidence by default); none otherwise. An
    engine that returned no log-probabilities to a request that asked is an error."""
    if config.logprobs_k is None:
        return ()
    if completion.logprobs is None:
        raise ValueError(
            f"engine returned no log-probabilities for a request with logprobs="
            f"{config.logprobs_k}; engines must return them when SamplingParams.logprobs is set"
        )
    kind = config.self_score or DEFAULT_SELF_SCORE
    return tuple(token_value(entry, kind) for entry in completion.logprobs)


def step_cap(config: SearchConfig) -> int | None:
    """The per-step token cap of ``config`` (its strategy's ``max_step_tokens``; None: none)."""
    return getattr(config.options, "max_step_tokens", None)


def capped_steps(node: Node, config: SearchConfig) -> list[int]:
    """Indices (into the node's traced steps) of the steps that ended at the per-step cap."""
    if not node.cuts:
        return []
    raws, _ = segment_steps(node.text, config.step_delimiter, node.open_tail, node.cuts)
    ends = list(itertools.accumulate(len(r) for r in raws))
    return sorted({bisect.bisect_left(ends, cut) for cut in node.cuts if cut <= ends[-1]})


def capped_record(nodes: list[Node], config: SearchConfig) -> dict[str, object]:
    """``{"capped_steps": [...]}`` (per traced node, the steps that ended at the per-step cap)
    when the strategy caps steps; nothing otherwise."""
    if step_cap(config) is None:
        return {}
    return {"capped_steps": [capped_steps(node, config) for node in nodes]}


def step_request(
    problem: Problem,
    token_ids: tuple[int, ...],
    config: SearchConfig,
    *,
    n: int,
    seed: int,
    final: bool,
    temperature: float | None = None,
) -> GenerationRequest:
    """Continue ``problem.prompt_ids + token_ids`` by one step (to the end when ``final``), at most
    ``max_step_tokens`` tokens when the strategy caps steps."""
    remaining = config.max_tokens - len(token_ids)
    if remaining < 1:
        raise AssertionError("a node with no token budget left must not be extended")
    cap = step_cap(config)
    params = SamplingParams(
        n=n,
        temperature=config.temperature if temperature is None else temperature,
        top_p=config.top_p,
        max_tokens=remaining if cap is None else min(remaining, cap),
        logprobs=config.logprobs_k,
        stop=() if final else (config.step_delimiter,),
        seed=seed,
    )
    return GenerationRequest(prompt_ids=tuple(problem.prompt_ids) + tuple(token_ids), params=params)


def prm_request(problem: Problem, node: Node, config: SearchConfig) -> PRMRequest:
    """The PRM request of a node's steps; with ``self_score`` it carries the node's token values
    and where each step's prefix ends in tokens (the end of the completion that closed it)."""
    delimiter = config.step_delimiter
    views = node.views(delimiter)
    if config.self_score is None:
        return PRMRequest(problem=problem.text, steps=views)
    raws, _ = segment_steps(node.text, delimiter, node.open_tail, node.cuts)
    char_ends = [piece[1] for piece in node.pieces]
    ends = []
    for end in itertools.accumulate(len(raw) for raw in raws):
        at = min(bisect.bisect_left(char_ends, end), len(node.pieces) - 1)
        ends.append(node.pieces[at][0] if node.pieces else 0)
    return PRMRequest(
        problem=problem.text,
        steps=views,
        token_values=node.token_values,
        step_token_ends=tuple(ends),
    )


def scored(node: Node, scores: tuple[float, ...], agg_scores: float) -> Node:
    return replace(node, step_scores=tuple(float(s) for s in scores), rank_score=agg_scores)


def end_reason(node: Node, unfinished: str) -> str:
    """Why a traced solution ended: ``answer`` (a final-answer step), ``eos`` (the model ended it
    without one), ``length`` (cut off at ``max_tokens``), else ``unfinished`` (the strategy's word
    for an open node: a sibling not continued, or open at the iteration cap)."""
    if node.truncated:
        return "length"
    if node.finished:
        return "eos" if node.finish_reason is FinishReason.EOS else "answer"
    return unfinished


def to_candidate(node: Node, config: SearchConfig, answers: AnswerSpec) -> Candidate:
    """The trace record of a node (its answer is extracted whatever its state)."""
    raws, _ = segment_steps(node.text, config.step_delimiter, node.open_tail, node.cuts)
    return Candidate(
        steps=raws,
        step_scores=node.step_scores,
        finish_reason=node.finish_reason,
        finished=node.finished,
        token_ids=node.token_ids,
        answer=answers.extract(node.text) if node.text.strip() else None,
        group=node.group,
    )
