"""Builds the services a :class:`~tts_eval.config.TTSConfig` describes and runs searches with them.

``Runner.from_config(config)`` loads the policy engine (``tts_eval.engines``), the PRM when one is
configured (``tts_eval.prm``) and the math answer spec (``tts_eval.grader``); ``runner.search(problems)``
runs :func:`tts_eval.search.run_search` over all of them at once.

With ``data_parallel_size > 1`` it hands over to :class:`tts_eval.distributed.RayRunner`, which has
the same ``search`` method and spreads the problems over Ray actors, each holding its own ``Runner``.

What this module does not do: talk to lm-eval (``tts_eval.lm_model``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tts_eval.types import AnswerSpec, PolicyEngine, Problem, ProcessRewardModel, SearchResult

if TYPE_CHECKING:
    from tts_eval.distributed import RayRunner

logger = logging.getLogger(__name__)


@dataclass
class Runner:
    search_config: Any  # tts_eval.search.SearchConfig
    engine: PolicyEngine
    prm: ProcessRewardModel | None
    answers: AnswerSpec

    @classmethod
    def from_config(cls, config) -> Runner | RayRunner:
        if config.data_parallel_size > 1:  # K Ray workers; see tts_eval.distributed
            from tts_eval.distributed import RayRunner

            return RayRunner.from_config(config)
        from tts_eval.engines import check_pretrained, load_engine
        from tts_eval.grader import MathAnswerSpec

        # Cheap checks of both models first, so a bad policy path fails before the PRM loads.
        check_pretrained(config.engine.pretrained)
        prm = None
        if config.prm is not None:
            from tts_eval.prm import load_prm_from_config

            prm = load_prm_from_config(config.prm)
        engine = load_engine(config.engine)
        return cls(config.search, engine, prm, MathAnswerSpec())

    def search(self, problems: Sequence[Problem], progress: bool = False) -> list[SearchResult]:
        from tts_eval.search import run_search

        return run_search(
            self.search_config, problems, self.engine, self.prm, self.answers, progress=progress
        )
