"""``tts-eval prm-eval``: how well a PRM scores labelled steps, without running a search.

:func:`evaluate_prm` reads a step data set (:func:`tts_eval.learn.data.load_steps`, checked before
the PRM loads), loads the PRM through the same code as a search (any supported ``prm_type``), scores
every row's steps in batches and reports:

- stepwise data (``prompt``, ``completions``, ``labels``): step AUROC and accuracy at the
  threshold over all steps, and the same for last steps only (the step ``agg=last`` ranks finished
  solutions by);
- ProcessBench data (``problem``, ``steps``, ``label``): the first-error prediction (first step
  below the threshold, else -1) and ProcessBench's F1 of the accuracies on erroneous and on
  correct solutions.

What this module does not do: train (``train``) or compute the metrics (``metrics``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from tts_eval.errors import DataError
from tts_eval.learn.data import PROCESSBENCH, STEPWISE, StepData, load_steps
from tts_eval.learn.metrics import accuracy, auroc, first_error, processbench_f1
from tts_eval.settings import PRMConfig, check_float
from tts_eval.types import PRMRequest, ProcessRewardModel

logger = logging.getLogger(__name__)

SCORE_BATCH = 64  # rows per PRM call (the PRM plans its own forwards inside a call)


def requests_of(data: StepData, limit: int | None = None) -> list[PRMRequest]:
    """One PRM request per row: the problem and its steps."""
    rows = data.rows if limit is None else data.rows.select(range(min(limit, len(data.rows))))
    problem, steps = ("prompt", "completions") if data.format == STEPWISE else ("problem", "steps")
    return [PRMRequest(str(row[problem]), tuple(str(s) for s in row[steps])) for row in rows]


def score_requests(
    prm: ProcessRewardModel, requests: Sequence[PRMRequest], progress: bool = False
) -> list[tuple[float, ...]]:
    """The step scores of every request, in order."""
    from tqdm.auto import tqdm

    out: list[tuple[float, ...]] = []
    with tqdm(total=len(requests), desc="scoring", unit="row", disable=not progress) as bar:
        for start in range(0, len(requests), SCORE_BATCH):
            batch = requests[start : start + SCORE_BATCH]
            out.extend(tuple(o.step_scores) for o in prm.score(batch))
            bar.update(len(batch))
    return out


def stepwise_metrics(
    scores: Sequence[Sequence[float]], labels: Sequence[Sequence[bool]], threshold: float = 0.5
) -> dict[str, Any]:
    """Step AUROC and accuracy over all steps and over last steps (solutions)."""
    flat_s = [s for row in scores for s in row]
    flat_y = [bool(y) for row in labels for y in row]
    last_s = [row[-1] for row in scores if row]
    last_y = [bool(row[-1]) for row in labels if row]
    return {
        "format": STEPWISE,
        "rows": len(scores),
        "steps": len(flat_y),
        "positive_share": sum(flat_y) / len(flat_y) if flat_y else None,
        "step_auroc": auroc(flat_s, flat_y),
        "step_accuracy": accuracy(flat_s, flat_y, threshold) if flat_y else None,
        "last_step_auroc": auroc(last_s, last_y),
        "last_step_accuracy": accuracy(last_s, last_y, threshold) if last_y else None,
        "threshold": threshold,
    }


def processbench_metrics(
    scores: Sequence[Sequence[float]], labels: Sequence[int], threshold: float = 0.5
) -> dict[str, Any]:
    predicted = [first_error(row, threshold) for row in scores]
    result = processbench_f1(predicted, [int(y) for y in labels])
    return {
        "format": PROCESSBENCH,
        "rows": len(scores),
        "erroneous": result.erroneous,
        "correct": result.correct,
        "error_accuracy": result.error_accuracy,
        "correct_accuracy": result.correct_accuracy,
        "f1": result.f1,
        "threshold": threshold,
    }


def metrics_of(
    data: StepData,
    scores: Sequence[Sequence[float]],
    threshold: float = 0.5,
    limit: int | None = None,
) -> dict[str, Any]:
    rows = data.rows if limit is None else data.rows.select(range(min(limit, len(data.rows))))
    if data.format == STEPWISE:
        return stepwise_metrics(scores, list(rows["labels"]), threshold)
    return processbench_metrics(scores, list(rows["label"]), threshold)


def evaluate_prm(
    config: PRMConfig,
    data: str | os.PathLike | StepData,
    *,
    split: str | None = None,
    threshold: float = 0.5,
    limit: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Load ``data`` (checked first), then the PRM, and return the metrics of its step scores."""
    check_float("threshold", threshold, "a number in (0, 1)", lambda v: 0 < v < 1, scope="prm-eval")
    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise DataError(f"prm-eval --limit {limit} is invalid; accepted: an integer >= 1")
    steps = data if isinstance(data, StepData) else load_steps(data, split)
    if len(steps.rows) == 0:
        raise DataError(f"data set {steps.source} has no rows; accepted: a non-empty data set")
    from tts_eval.prm import load_prm_from_config

    prm = load_prm_from_config(config)
    try:
        scores = score_requests(prm, requests_of(steps, limit), progress)
    finally:
        prm.close()
    metrics = metrics_of(steps, scores, threshold, limit)
    metrics.update({"prm": str(config.path), "data": steps.source})
    return metrics
