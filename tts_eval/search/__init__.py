"""Test-time search strategies, pure over the protocols of :mod:`tts_eval.types`.

One strategy per module: ``majority``, ``best_of_n``, ``beam_search``, ``dvts``,
``compute_optimal``, ``particle_filtering``, ``particle_gibbs``; ``voting`` holds the pure selection rules; ``diagnostics`` counts and warns
about silent degradations (a step delimiter that never occurs, empty responses); ``run`` the entry
point :func:`run_search`. Settings (:class:`tts_eval.settings.SearchConfig`, the strategy registry and
the compute-optimal routing table) live in :mod:`tts_eval.settings`. Nothing in this package imports
torch, transformers, vllm or lm_eval.

What this package does not do: load models (``tts_eval.engines``, ``tts_eval.prm``) or extract and
grade answers (``tts_eval.grader``; strategies receive an ``AnswerSpec``). The step primitives
(``Node``, ``extend``, ``step_request``, ``segment_steps``, ``derive_seed``) are exported for code
that generates solutions the way the searches do (``tts_eval.learn``).
"""

from tts_eval.search._common import Node, derive_seed, extend, segment_steps, step_request
from tts_eval.search.run import check_problems, run_search
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
from tts_eval.settings import (  # re-exported: the settings a search takes
    AGGREGATIONS,
    SELECTIONS,
    STRATEGIES,
    ComputeOptimalTable,
    SearchConfig,
    default_table,
    load_table,
)

__all__ = [
    "AGGREGATIONS",
    "Node",
    "derive_seed",
    "extend",
    "segment_steps",
    "step_request",
    "SELECTIONS",
    "STRATEGIES",
    "AnswerGrouper",
    "ComputeOptimalTable",
    "SearchConfig",
    "default_table",
    "load_table",
    "aggregate",
    "check_problems",
    "group_answers",
    "majority_vote",
    "naive_best",
    "pass_at_k",
    "pass_at_n",
    "run_search",
    "select",
    "weighted_vote",
]
