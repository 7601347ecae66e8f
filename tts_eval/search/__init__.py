"""Test-time search strategies, pure over the protocols of :mod:`tts_eval.types`.

One strategy per module: ``majority``, ``best_of_n``, ``beam_search``, ``dvts``,
``compute_optimal``; ``voting`` holds the pure selection rules; ``config`` the validated
:class:`SearchConfig`; ``run`` the entry point :func:`run_search`. Nothing in this package imports
torch, transformers, vllm or lm_eval.

What this package does not do: load models (``tts_eval.engines``, ``tts_eval.prm``) or extract and
grade answers (``tts_eval.grader``; strategies receive an ``AnswerSpec``).
"""

from tts_eval.search.compute_optimal import ComputeOptimalTable, default_table, load_table
from tts_eval.search.config import AGGREGATIONS, SELECTIONS, STRATEGIES, SearchConfig
from tts_eval.search.run import run_search
from tts_eval.search.voting import (
    AnswerGrouper,
    aggregate,
    group_answers,
    majority_vote,
    naive_best,
    pass_at_k,
    pass_at_n,
    select,
    weighted_vote,
)

__all__ = [
    "AGGREGATIONS",
    "SELECTIONS",
    "STRATEGIES",
    "AnswerGrouper",
    "ComputeOptimalTable",
    "SearchConfig",
    "aggregate",
    "default_table",
    "group_answers",
    "load_table",
    "majority_vote",
    "naive_best",
    "pass_at_k",
    "pass_at_n",
    "run_search",
    "select",
    "weighted_vote",
]
