"""Per-document metrics of the math500 task.

``math_metrics(output, gold)`` returns, for any lm-eval model, ``exact_match`` and
``grade_timeouts`` (1.0 when the grader could not decide within its CPU budgets - the sample then
counts as not matching - else 0.0: ``--log_samples`` shows it beside each sample, and its mean in
the results table is the fraction of samples whose grading timed out). When ``output`` is a
:class:`~tts_eval.types.TracedText` (what the ``tts`` model returns), it adds metrics computed from
the same search trace, all over the run's N candidates:

* ``maj@n``: the most frequent answer (grouped by equivalence) is correct;
* ``weighted@n`` / ``naive@n``: PRM-weighted vote / single best-scored candidate is correct (for
  every PRM-guided strategy: those whose spec needs a PRM);
* ``pass@n``: any finished candidate is correct (coverage);
* ``policy_tokens``: policy tokens generated for the problem;
* ``flops``: the FLOPs of its search (2 x parameters x tokens processed, policy and PRM; see
  :func:`tts_eval.params.search_flops`), when the model sizes are known;
* ``tts_trace``: the trace record itself (without token ids; its ``task`` the task's name), so
  ``--log_samples`` logs it beside the document; its aggregate in the results table is the number
  of traces logged (no better or worse: shown without an arrow).

Every metric a task's ``process_results`` returns is a row of lm-eval's table, so no per-sample
label that is not a score is returned here.

What this module does not do: run models or searches; it grades text and traces.
"""

from __future__ import annotations

from typing import Any

from tts_eval.grader import MathAnswerSpec, grade_verdict, is_equiv
from tts_eval.search import get_spec
from tts_eval.types import AnswerSpec, SearchResult

TRACE_KEY = "tts_trace"
TIMEOUTS_KEY = "grade_timeouts"
FLOPS_KEY = "flops"


def math_metrics(output: str, gold: str, task: str | None = "math500") -> dict[str, Any]:
    """The math500 metrics of one ``output`` (see the module docstring)."""
    verdict = grade_verdict(output, gold)
    metrics: dict[str, Any] = {
        "exact_match": float(verdict.equivalent),
        TIMEOUTS_KEY: float(verdict.status == "timeout"),
    }
    trace = getattr(output, "trace", None)
    if trace is not None:
        metrics.update(trace_metrics(trace, gold, task=task))
    return metrics


def trace_metrics(
    result: SearchResult, gold: str, spec: AnswerSpec | None = None, task: str | None = None
) -> dict[str, Any]:
    """The metrics of one search trace against ``gold``, answers grouped and graded by ``spec``
    (default: :class:`~tts_eval.grader.MathAnswerSpec`, the math500 grader); ``task`` names the
    task in the logged trace record."""
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
    if result.cost.flops is not None:
        metrics[FLOPS_KEY] = float(result.cost.flops)
    if get_spec(result.strategy).needs_prm:  # PRM-guided: report on every document, scored or not
        metrics["weighted@n"] = hit(weighted_vote(candidates, grouper, agg))
        metrics["naive@n"] = hit(naive_best(candidates, agg))
    metrics[TRACE_KEY] = result_record(result, task=task, token_ids=False)
    return metrics
