"""Answer grading: math extraction, equivalence and canonical keys, and the tasks' AnswerSpecs.

Public API: ``extract_answer(text)``, ``is_equiv(pred, gold)``, ``grade(output_text, gold)``,
``canonical(answer)``, ``MathAnswerSpec``; for non-math tasks ``NumberAnswerSpec``,
``RegexAnswerSpec``, and ``answer_spec(setting)`` / ``check_answer_setting(setting)`` for the
``answer=math|number|regex:<pattern>`` setting (``simple``).
No model code here; sympy is imported lazily, inside the helper processes that run the symbolic
comparisons (``bounded``).
"""

from tts_eval.grader.equiv import canonical, grade, is_equiv
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
    "canonical",
    "check_answer_setting",
    "extract_answer",
    "grade",
    "is_equiv",
]
