"""Answer grading for math tasks: extraction, equivalence, canonical keys, the math AnswerSpec.

Public API: ``extract_answer(text)``, ``is_equiv(pred, gold)``, ``grade(output_text, gold)``,
``canonical(answer)``, ``MathAnswerSpec``. No model code here; sympy is imported lazily, inside the
helper processes that run the symbolic comparisons (``bounded``).
"""

from tts_eval.grader.equiv import canonical, grade, is_equiv
from tts_eval.grader.extract import extract_answer
from tts_eval.grader.spec import MathAnswerSpec

__all__ = ["MathAnswerSpec", "canonical", "extract_answer", "grade", "is_equiv"]
