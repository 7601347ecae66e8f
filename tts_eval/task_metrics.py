"""Per-document metrics of the math500 task.

``math_metrics(output, gold)`` returns ``exact_match`` for any lm-eval model. When ``output`` is a
:class:`tts_eval.traced.TracedText` (what the ``tts`` model returns), it also returns metrics computed
from the same search trace: ``maj@n``, ``weighted@n``, ``naive@n``, ``pass@n`` and the policy tokens
spent on the problem.

What this module does not do: run models or searches; it only grades text.
"""

from __future__ import annotations

from tts_eval.grader import grade


def math_metrics(output: str, gold: str) -> dict[str, float]:
    return {"exact_match": float(grade(output, gold))}
