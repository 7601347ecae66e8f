"""The entry point of the search package: :func:`run_search` over a batch of problems.

Checks its arguments (one-line errors, before any generation), builds one strategy state machine
per problem and drives them all together, so each round issues one ``engine.generate`` and one
``prm.score`` call covering every problem (see ``_driver``). Every result gets
``settings["diagnostics"]`` and the batch's silent degradations (a step delimiter that never
occurs, empty responses) are logged as warnings (see ``diagnostics``).

What this module does not do: load models, render prompts, grade answers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tts_eval.errors import SettingError
from tts_eval.search import diagnostics
from tts_eval.search._driver import Work, drive
from tts_eval.search.confidence import SelfScorer
from tts_eval.search.config import SearchConfig
from tts_eval.search.voting import AnswerGrouper
from tts_eval.types import (
    AnswerSpec,
    PolicyEngine,
    Problem,
    ProcessRewardModel,
    SearchResult,
)

logger = logging.getLogger(__name__)


def make_work(
    problem: Problem, config: SearchConfig, answers: AnswerSpec, grouper: AnswerGrouper
) -> Work:
    """The state machine that runs ``config.strategy`` on one problem (its spec's factory)."""
    return config.spec.make_work(problem, config, answers, grouper)


def _check_arguments(
    config: SearchConfig,
    problems: Sequence[Problem],
    engine: PolicyEngine,
    prm: ProcessRewardModel | None,
    answers: AnswerSpec,
) -> None:
    if not isinstance(config, SearchConfig):
        raise TypeError(
            f"config must be a tts_eval.search.SearchConfig, got {type(config).__name__}"
        )
    if not isinstance(engine, PolicyEngine):
        raise TypeError(
            "engine must implement tts_eval.types.PolicyEngine (render_prompt, generate), "
            f"got {type(engine).__name__}"
        )
    if config.self_score is not None and config.spec.needs_prm and prm is not None:
        raise SettingError(
            "self_score",
            config.self_score,
            "none when a PRM is given",
            message=f"self_score={config.self_score} scores with the policy's confidence in place "
            "of a PRM, but a PRM was given too; pass prm=None (prm=self) or leave self_score unset",
        )
    if prm is None and config.spec.needs_prm and config.self_score is None:
        raise SettingError(
            "strategy",
            config.strategy,
            "a strategy that needs no PRM",
            message=f"strategy={config.strategy} needs a process reward model (prm=...) or "
            "self_score=... (prm=self); only strategies that need none (majority) run without one",
        )
    if prm is not None and not isinstance(prm, ProcessRewardModel):
        raise TypeError(
            "prm must implement tts_eval.types.ProcessRewardModel (score), "
            f"got {type(prm).__name__}"
        )
    if not isinstance(answers, AnswerSpec):
        raise TypeError(
            "answers must implement tts_eval.types.AnswerSpec "
            f"(is_final_step, extract, canonical, equivalent), got {type(answers).__name__}"
        )
    check_problems(problems)


def check_problems(problems: Sequence[Problem]) -> None:
    """Raise unless every item is a :class:`Problem` and no uid appears twice in the batch.

    Shared by :func:`run_search` and the Ray searcher (``tts_eval.runtime``), which checks a
    batch before splitting it into chunks.
    """
    seen: set[str] = set()
    for problem in problems:
        if not isinstance(problem, Problem):
            raise TypeError(
                f"problems must be tts_eval.types.Problem, got {type(problem).__name__}"
            )
        if problem.uid in seen:
            raise ValueError(
                f"problem uid {problem.uid!r} appears twice; uids must be unique within a batch "
                "(seeds are derived from them)"
            )
        seen.add(problem.uid)


def run_search(
    config: SearchConfig,
    problems: Sequence[Problem],
    engine: PolicyEngine,
    prm: ProcessRewardModel | None,
    answers: AnswerSpec,
    progress: bool = False,
) -> list[SearchResult]:
    """Run ``config.strategy`` on every problem, batched; one :class:`SearchResult` each, in order.

    ``prm`` may be ``None`` only for a strategy that needs none (``majority``) or with
    ``self_score`` set (the policy's confidence scores the steps: :class:`SelfScorer`). Results are identical for the same
    config, problems and (deterministic, seed-honouring) engine/PRM, whatever else is in the batch.
    """
    _check_arguments(config, problems, engine, prm, answers)
    if not problems:
        return []
    if config.self_score is not None and config.spec.needs_prm:
        prm = SelfScorer(config.self_score, config.confidence_window)
    grouper = AnswerGrouper(answers)
    works = [make_work(problem, config, answers, grouper) for problem in problems]
    logger.info("search: strategy=%s n=%d on %d problems", config.strategy, config.n, len(problems))
    results = drive(works, engine, prm, progress=progress, desc=f"search[{config.strategy}]")
    results = diagnostics.annotate(results, config)
    diagnostics.warn_batch(results, config)
    return results
