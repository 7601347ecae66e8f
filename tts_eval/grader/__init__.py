"""Answer grading: math extraction, equivalence and canonical keys, and the tasks' AnswerSpecs.

Public API: ``extract_answer(text)``, ``is_equiv(pred, gold)``, ``grade(output_text, gold)``,
their status-carrying forms ``equiv_verdict`` / ``grade_verdict`` (a ``Verdict``: ``equivalent``
and ``status`` ``"ok"`` or ``"timeout"``), ``canonical(answer)``, ``MathAnswerSpec``; for non-math
tasks ``NumberAnswerSpec``, ``RegexAnswerSpec``, and ``answer_spec(setting)`` /
``check_answer_setting(setting)`` for the ``answer=math|number|regex:<pattern>`` setting
(``simple``).
No model code here; sympy is imported lazily, inside the helper processes that run the symbolic
comparisons (``bounded``).
"""

from tts_eval.grader.equiv import (
    Verdict,
    canonical,
    equiv_verdict,
    grade,
    grade_verdict,
    is_equiv,
)
from tts_eval.grader.extract import extract_answer
from tts_eval.grader.simple import (
    NumberAnswerSpec,
    RegexAnswerSpec,
    answer_spec,
    check_answer_setting,
)
from tts_eval.grader.spec import MathAnswerSpec

__all__ = [
    "MathAnswerSpec",
    "NumberAnswerSpec",
    "RegexAnswerSpec",
    "answer_spec",
    "Verdict",
    "canonical",
    "check_answer_setting",
    "equiv_verdict",
    "extract_answer",
    "grade",
    "grade_verdict",
    "is_equiv",
]
