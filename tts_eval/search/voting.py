"""Pure voting and selection over candidate traces, with deterministic, documented tie rules.

Only *eligible* candidates take part in any selection: ``finished`` (EOS or a final-answer step,
never a length cut-off) and with an extracted ``answer``. Every rule returns an index into the
sequence it was given, or ``None`` when no candidate is eligible, so it works on any subset of a
result's candidates (e.g. random subsets for accuracy@n).

Answers are grouped by mathematical equivalence through the task's :class:`AnswerSpec`:
``canonical`` keys first (equal keys are the same group without further checks), then
``equivalent`` against each existing group's representative (its first member) in order of
appearance; the first match wins. :class:`AnswerGrouper` caches keys and pairwise verdicts, so
grouping 256 answers costs at most one ``equivalent`` call per (new key, group) pair and
regrouping subsets costs nothing.

Tie rules (all deterministic, independent of floating-point summation order because sums are
taken in candidate order):

- ``aggregate``: an empty score list aggregates to 0.0 (the lowest possible PRM score).
- ``naive_best``: highest aggregated score; ties go to the lowest index.
- ``majority_vote``: the largest group; ties go to the group that appears first; the group's
  first member (lowest index) is selected.
- ``weighted_vote``: the group with the largest sum of aggregated scores; ties go to the larger
  group, then to the group that appears first; the group's highest-scored member is selected
  (ties: lowest index).

What this module does not do: extract answers (the task's ``AnswerSpec``), grade against gold
answers beyond :func:`pass_at_n`, or call any model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tts_eval.search.config import AGGREGATIONS, SELECTIONS
from tts_eval.types import AnswerSpec, Candidate


def aggregate(scores: Sequence[float], agg: str) -> float:
    """Collapse per-step PRM scores into one: ``last``, ``min``, ``prod`` or ``mean``."""
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg must be one of {', '.join(AGGREGATIONS)}; got {agg!r}")
    if not scores:
        return 0.0
    if agg == "last":
        return float(scores[-1])
    if agg == "min":
        return float(min(scores))
    if agg == "prod":
        return float(math.prod(scores))
    return float(math.fsum(scores) / len(scores))


def is_eligible(candidate: Candidate) -> bool:
    """Whether a candidate may be selected: finished, with an extracted answer."""
    return candidate.finished and candidate.answer is not None


class AnswerGrouper:
    """Groups answers by equivalence under one ``AnswerSpec``, caching keys and verdicts.

    One grouper may serve a whole run (all problems): verdicts depend only on the two answers.
    """

    def __init__(self, spec: AnswerSpec) -> None:
        self.spec = spec
        self._keys: dict[str, str] = {}
        self._verdicts: dict[tuple[str, str], bool] = {}

    def key(self, answer: str) -> str:
        key = self._keys.get(answer)
        if key is None:
            key = self._keys[answer] = self.spec.canonical(answer)
        return key

    def _equivalent(self, answer: str, key: str, rep: str, rep_key: str) -> bool:
        pair = (key, rep_key)
        verdict = self._verdicts.get(pair)
        if verdict is None:
            verdict = bool(self.spec.equivalent(answer, rep))
            self._verdicts[pair] = verdict
            self._verdicts[(rep_key, key)] = verdict
        return verdict

    def group(self, answers: Sequence[str | None]) -> list[int | None]:
        """Group id per answer (ids numbered by first appearance); ``None`` answers get ``None``."""
        group_of_key: dict[str, int] = {}
        reps: list[tuple[str, str]] = []  # (representative answer, its key) per group
        out: list[int | None] = []
        for answer in answers:
            if answer is None:
                out.append(None)
                continue
            key = self.key(answer)
            gid = group_of_key.get(key)
            if gid is None:
                gid = next(
                    (
                        i
                        for i, (rep, rep_key) in enumerate(reps)
                        if self._equivalent(answer, key, rep, rep_key)
                    ),
                    None,
                )
                if gid is None:
                    gid = len(reps)
                    reps.append((answer, key))
                group_of_key[key] = gid
            out.append(gid)
        return out


def group_answers(
    answers: Sequence[str | None], spec: AnswerSpec, grouper: AnswerGrouper | None = None
) -> list[int | None]:
    """Group ids of ``answers`` by equivalence (see :class:`AnswerGrouper`)."""
    return (grouper or AnswerGrouper(spec)).group(answers)


def _eligible_groups(
    candidates: Sequence[Candidate], grouper: AnswerGrouper
) -> dict[int, list[int]]:
    """Group id -> indices of its eligible members, groups in order of first appearance."""
    answers = [c.answer if is_eligible(c) else None for c in candidates]
    groups: dict[int, list[int]] = {}
    for index, gid in enumerate(grouper.group(answers)):
        if gid is not None:
            groups.setdefault(gid, []).append(index)
    return groups


def naive_best(candidates: Sequence[Candidate], agg: str = "last") -> int | None:
    """Index of the eligible candidate with the highest aggregated score (ties: lowest index)."""
    return naive_best_by(candidates, [aggregate(c.step_scores, agg) for c in candidates])


def naive_best_by(candidates: Sequence[Candidate], weights: Sequence[float]) -> int | None:
    """Index of the eligible candidate with the highest weight (ties: lowest index)."""
    best: int | None = None
    best_weight = -math.inf
    for index, (candidate, weight) in enumerate(zip(candidates, weights, strict=True)):
        if is_eligible(candidate) and weight > best_weight:
            best, best_weight = index, weight
    return best


def majority_vote(candidates: Sequence[Candidate], grouper: AnswerGrouper) -> int | None:
    """First member of the most frequent answer group (ties: the group appearing first)."""
    best: list[int] | None = None
    for members in _eligible_groups(candidates, grouper).values():
        if best is None or len(members) > len(best):
            best = members
    return None if best is None else best[0]


def weighted_vote(
    candidates: Sequence[Candidate], grouper: AnswerGrouper, agg: str = "last"
) -> int | None:
    """Best member of the answer group with the largest summed aggregated score.

    Ties between groups: larger group, then the group appearing first. Within the group: highest
    score, then lowest index.
    """
    scores = [aggregate(c.step_scores, agg) for c in candidates]
    return weighted_vote_by(candidates, grouper, scores)


def weighted_vote_by(
    candidates: Sequence[Candidate], grouper: AnswerGrouper, weights: Sequence[float]
) -> int | None:
    """:func:`weighted_vote` with the given per-candidate ``weights`` instead of PRM scores
    (particle weights, for the particle strategies); the same tie rules."""
    if len(weights) != len(candidates):
        raise ValueError(f"{len(weights)} weights for {len(candidates)} candidates")
    best_key: tuple[float, int] | None = None
    best_members: list[int] = []
    for members in _eligible_groups(candidates, grouper).values():
        total = 0.0
        for index in members:
            total += weights[index]
        key = (total, len(members))
        if best_key is None or key > best_key:
            best_key, best_members = key, members
    if best_key is None:
        return None
    return max(best_members, key=lambda i: (weights[i], -i))


def select(
    candidates: Sequence[Candidate], selection: str, grouper: AnswerGrouper, agg: str = "last"
) -> int | None:
    """Dispatch to ``naive_best`` / ``weighted_vote`` / ``majority_vote`` by name."""
    if selection == "naive":
        return naive_best(candidates, agg)
    if selection == "weighted":
        return weighted_vote(candidates, grouper, agg)
    if selection == "majority":
        return majority_vote(candidates, grouper)
    accepted = ", ".join((*SELECTIONS, "majority"))
    raise ValueError(f"selection must be one of {accepted}; got {selection!r}")


def choose_selected(
    candidates: Sequence[Candidate], grouper: AnswerGrouper, settings: Mapping[str, Any]
) -> int | None:
    """The run's own selection rule (its ``selection`` and ``agg`` settings) over ``candidates``
    (a :data:`tts_eval.search.spec.Chooser`)."""
    return select(
        candidates,
        str(settings.get("selection", "weighted")),
        grouper,
        str(settings.get("agg", "last")),
    )


def choose_majority(
    candidates: Sequence[Candidate], grouper: AnswerGrouper, settings: Mapping[str, Any]
) -> int | None:
    """Majority voting over ``candidates``, whatever the run's settings (a chooser)."""
    return majority_vote(candidates, grouper)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_at_n(candidates: Sequence[Candidate], is_correct: Callable[[str], bool]) -> bool:
    """Whether any eligible candidate's answer is correct (the oracle / coverage of a run)."""
    return any(is_eligible(c) and is_correct(c.answer) for c in candidates)  # type: ignore[arg-type]


def count_correct(candidates: Sequence[Candidate], is_correct: Callable[[str], bool]) -> int:
    """Number of eligible candidates whose answer is correct (``c`` of :func:`pass_at_k`)."""
    return sum(1 for c in candidates if is_eligible(c) and is_correct(c.answer))  # type: ignore[arg-type]
