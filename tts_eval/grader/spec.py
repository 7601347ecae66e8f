"""``MathAnswerSpec``: the math task's ``AnswerSpec`` (``tts_eval.types``) for search strategies.

A step is final when it closes a ``\\boxed{}``; answers are extracted, keyed and compared with the
grader. Equivalence results are memoised in a bounded LRU (voting compares O(N^2) pairs), keyed on
the unordered pair, so ``equivalent(a, b)`` and ``equivalent(b, a)`` share one entry.
What it does not do: choose among answers (the strategies' voting does that).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from tts_eval.grader.equiv import canonical, is_equiv
from tts_eval.grader.extract import extract_answer
from tts_eval.grader.latex import find_boxes

_BOX_OPEN_RE = re.compile(r"\\(?:boxed|fbox)\b")


@dataclass(frozen=True)
class MathAnswerSpec:
    """Boxed-answer math (MATH-500 style). ``cache_size``: entries of the equivalence LRU."""

    cache_size: int = 65536
    _equiv: Callable[[str, str], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.cache_size, int) or self.cache_size < 0:
            raise ValueError(f"cache_size must be an int >= 0, got {self.cache_size!r}")
        object.__setattr__(self, "_equiv", functools.lru_cache(self.cache_size)(is_equiv))

    def is_final_step(self, step_text: str) -> bool:
        """Whether the step contains a complete (closed) ``\\boxed{...}``."""
        if not isinstance(step_text, str) or not _BOX_OPEN_RE.search(step_text):
            return False
        return any(b.closed and b.content.strip() for b in find_boxes(step_text))

    def extract(self, solution_text: str) -> str | None:
        return extract_answer(solution_text)

    def canonical(self, answer: str) -> str:
        return canonical(answer)

    def equivalent(self, a: str, b: str) -> bool:
        if canonical(a) == canonical(b):
            return True
        x, y = (a, b) if a <= b else (b, a)
        return self._equiv(x, y)
