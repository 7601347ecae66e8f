"""Test-time search strategies, pure over the protocols of :mod:`tts_eval.types`.

One strategy per module, each declaring its :class:`~tts_eval.search.spec.StrategySpec` (what it
needs, its own options, how a sweep plans it, which curves a run yields) and registering it:
``majority``, ``best_of_n``, ``beam_search``, ``dvts``, ``compute_optimal``,
``particle_filtering``, ``particle_gibbs``, ``deepconf`` (importing this package registers them, in
that order).
The registry (``spec``) is the only list of strategies; a strategy defined elsewhere registers
with :func:`register_strategy` and is accepted everywhere. ``config`` holds
:class:`SearchConfig` (the shared settings and the strategy's options), ``routing`` the
compute-optimal routing table format, ``voting`` the pure selection rules, ``diagnostics`` the
silent degradations (a step delimiter that never occurs, empty responses) and ``run`` the entry
point :func:`run_search`. Nothing in this package imports torch, transformers, vllm or lm_eval.

What this package does not do: load models (``tts_eval.engines``, ``tts_eval.prm``) or extract and
grade answers (``tts_eval.grader``; strategies receive an ``AnswerSpec``). The step primitives
(``Node``, ``extend``, ``step_request``, ``segment_steps``, ``derive_seed``) are exported for code
that generates solutions the way the searches do (``tts_eval.learn``).
"""

# isort: off
# Each module registers its strategy on import: this order is the registry's (error messages,
# reports).
from tts_eval.search import majority  # noqa: F401
from tts_eval.search import best_of_n  # noqa: F401
from tts_eval.search import beam_search  # noqa: F401
from tts_eval.search import dvts  # noqa: F401
from tts_eval.search import compute_optimal  # noqa: F401
from tts_eval.search import particle_filtering  # noqa: F401
from tts_eval.search import particle_gibbs  # noqa: F401
from tts_eval.search import deepconf  # noqa: F401

# isort: on
from tts_eval.search._common import Node, derive_seed, extend, segment_steps, step_request
from tts_eval.search._driver import Work
from tts_eval.search.config import (
    AGGREGATIONS,
    SELECTIONS,
    SearchConfig,
    search_defaults,
    search_keys,
    shared_keys,
)
from tts_eval.search.routing import ComputeOptimalTable, default_table, load_table, parse_table
from tts_eval.search.run import check_problems, run_search
from tts_eval.search.spec import (
    Curve,
    NoOptions,
    StrategyOptions,
    StrategySpec,
    get_spec,
    register_strategy,
    routable_names,
    strategy_names,
    strategy_specs,
    unregister_strategy,
)
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
    "Curve",
    "Node",
    "NoOptions",
    "SELECTIONS",
    "AnswerGrouper",
    "ComputeOptimalTable",
    "SearchConfig",
    "StrategyOptions",
    "StrategySpec",
    "Work",
    "aggregate",
    "check_problems",
    "default_table",
    "derive_seed",
    "extend",
    "get_spec",
    "group_answers",
    "load_table",
    "majority_vote",
    "naive_best",
    "parse_table",
    "pass_at_k",
    "pass_at_n",
    "register_strategy",
    "routable_names",
    "run_search",
    "search_defaults",
    "search_keys",
    "segment_steps",
    "select",
    "shared_keys",
    "step_request",
    "strategy_names",
    "strategy_specs",
    "unregister_strategy",
    "weighted_vote",
]
