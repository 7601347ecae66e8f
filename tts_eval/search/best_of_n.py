"""Best-of-N: ``n`` full samples, the finished ones scored by the PRM, then a selection rule.

``selection=naive`` picks the single best-scored eligible candidate; ``selection=weighted``
(default) picks the answer group with the largest sum of aggregated scores (``agg``). Sampling is
shared with majority voting (same seed, same samples); see :class:`majority.SamplingWork`.

What this module does not do: step-level search (``beam_search``, ``dvts``).
"""

from __future__ import annotations

from tts_eval.search import voting
from tts_eval.search._driver import Work
from tts_eval.search.majority import SamplingWork
from tts_eval.settings import SearchConfig
from tts_eval.types import AnswerSpec, Problem


def make_work(
    problem: Problem, config: SearchConfig, answers: AnswerSpec, grouper: voting.AnswerGrouper
) -> Work:
    return SamplingWork(
        problem,
        config,
        answers,
        grouper,
        strategy="best_of_n",
        use_prm=True,
        selection=config.selection,
    )
