"""Per-document metrics of the math500 task.

``math_metrics(output, gold)`` returns, for any lm-eval model, ``exact_match``, ``grade_status``
(``"ok"``, or ``"timeout"`` when the grader could not decide within its CPU budgets - the sample
then counts as not matching, and ``--log_samples`` shows the status beside it; its aggregate in
the results table is the number of statuses logged) and ``grade_timeouts`` (1.0 for such a
sample, so its mean in the results table is the fraction of samples whose grading timed out).
When ``output`` is a
:class:`~tts_eval.types.TracedText` (what the ``tts`` model returns), it adds metrics computed from the
same search trace, all over the run's N candidates:

* ``maj@n``: the most frequent answer (grouped by equivalence) is correct;
* ``weighted@n`` / ``naive@n``: PRM-weighted vote / single best-scored candidate is correct (for
  every PRM-guided strategy, i.e. all but majority);
* ``pass@n``: any finished candidate is correct (coverage);
* ``policy_tokens``: policy tokens generated for the problem;
* ``tts_trace``: the trace record itself (without token ids), so ``--log_samples`` logs it beside the
  document; its aggregate in the results table is the number of traces logged.

What this module does not do: run models or searches; it grades text and traces.
"""

from __future__ import annotations

from typing import Any

from tts_eval.grader import MathAnswerSpec, grade_verdict, is_equiv
from tts_eval.types import AnswerSpec, SearchResult

TRACE_KEY = "tts_trace"
STATUS_KEY = "grade_status"
TIMEOUTS_KEY = "grade_timeouts"


def math_metrics(output: str, gold: str) -> dict[str, Any]:
    verdict = grade_verdict(output, gold)
    metrics: dict[str, Any] = {
        "exact_match": float(verdict.equivalent),
        STATUS_KEY: verdict.status,
        TIMEOUTS_KEY: float(verdict.status == "timeout"),
    }
    trace = getattr(output, "trace", None)
    if trace is not None:
        metrics.update(trace_metrics(trace, gold))
    return metrics


def trace_metrics(
    result: SearchResult, gold: str, spec: AnswerSpec | None = None
) -> dict[str, Any]:
    """The metrics of one search trace against ``gold``, answers grouped and graded by ``spec``
    (default: :class:`~tts_eval.grader.MathAnswerSpec`, the math500 grader)."""
    from tts_eval.search.voting import (
        AnswerGrouper,
        majority_vote,
        naive_best,
        pass_at_n,
        weighted_vote,
    )
    from tts_eval.traces import result_record

    candidates = result.candidates
    agg = str(result.settings.get("agg", "last"))
    grouper = AnswerGrouper(spec if spec is not None else MathAnswerSpec())
    equivalent = spec.equivalent if spec is not None else is_equiv

    def correct(answer: str | None) -> bool:
        return answer is not None and equivalent(answer, gold)

    def hit(index: int | None) -> float:
        return float(index is not None and correct(candidates[index].answer))

    metrics: dict[str, Any] = {
        "maj@n": hit(majority_vote(candidates, grouper)),
        "pass@n": float(pass_at_n(candidates, correct)),
        "policy_tokens": float(result.cost.policy_tokens),
    }
    if result.strategy != "majority":  # PRM-guided: report on every document, scored or not
        metrics["weighted@n"] = hit(weighted_vote(candidates, grouper, agg))
        metrics["naive@n"] = hit(naive_best(candidates, agg))
    metrics[TRACE_KEY] = result_record(result, token_ids=False)
    return metrics
