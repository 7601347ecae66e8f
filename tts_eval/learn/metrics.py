"""How well a PRM's step scores match labelled steps: pure functions, no model, no numpy.

- :func:`auroc`: area under the ROC curve of scores against boolean labels (the Mann-Whitney
  statistic; tied scores count one half), None when one class is absent.
- :func:`accuracy`: share of steps whose ``score >= threshold`` equals the label.
- :func:`first_error`: ProcessBench's prediction, the index of the first step scored below the
  threshold, or -1 when none is.
- :func:`processbench_f1`: ProcessBench's metric (Zheng et al. 2024): the accuracy of the
  first-error prediction on erroneous solutions (label >= 0) and on correct ones (label -1), and
  their harmonic mean.

What this module does not do: score (``tts_eval.learn.evaluate``) or read data sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """P(a positive step scores above a negative one), ties counting 1/2; None if a class is empty."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # average ranks over ties (1-based)
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    positives = sum(1 for label in labels if label)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    rank_sum = sum(rank for rank, label in zip(ranks, labels, strict=True) if label)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def accuracy(scores: Sequence[float], labels: Sequence[bool], threshold: float = 0.5) -> float:
    if len(scores) != len(labels) or not labels:
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    right = sum((s >= threshold) == bool(y) for s, y in zip(scores, labels, strict=True))
    return right / len(labels)


def first_error(step_scores: Sequence[float], threshold: float = 0.5) -> int:
    """Index of the first step scored below ``threshold``; -1 when every step passes."""
    for i, score in enumerate(step_scores):
        if score < threshold:
            return i
    return -1


@dataclass(frozen=True)
class ProcessBenchScore:
    """Accuracy on erroneous and on correct solutions (None when there are none) and their F1."""

    error_accuracy: float | None
    correct_accuracy: float | None
    f1: float | None
    erroneous: int
    correct: int


def processbench_f1(predicted: Sequence[int], labels: Sequence[int]) -> ProcessBenchScore:
    """ProcessBench's F1 of first-error predictions against first-error labels (-1: no error)."""
    if len(predicted) != len(labels):
        raise ValueError(f"{len(predicted)} predictions for {len(labels)} labels")
    wrong = [(p, y) for p, y in zip(predicted, labels, strict=True) if y >= 0]
    right = [(p, y) for p, y in zip(predicted, labels, strict=True) if y < 0]
    err_acc = sum(p == y for p, y in wrong) / len(wrong) if wrong else None
    ok_acc = sum(p == -1 for p, _ in right) / len(right) if right else None
    if err_acc is None or ok_acc is None:
        f1 = None
    elif err_acc + ok_acc == 0:
        f1 = 0.0
    else:
        f1 = 2 * err_acc * ok_acc / (err_acc + ok_acc)
    return ProcessBenchScore(err_acc, ok_acc, f1, len(wrong), len(right))
