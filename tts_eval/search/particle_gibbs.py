"""Particle Gibbs: ``pg_iterations`` sweeps of particle filtering with reference particles.

The budget ``n`` is split into ``n / pg_iterations`` particles per sweep; after each sweep
``pg_reference_particles`` references drawn from its final weights are carried into the next one,
where they survive every resampling (conditional SMC). The state machine is the one of
:mod:`tts_eval.search.particle_filtering` (which documents both strategies and their traces).

What this module does not do: ancestor sampling (PGAS).
"""

from __future__ import annotations

from tts_eval.search import voting
from tts_eval.search._driver import Work
from tts_eval.search.particle_filtering import ParticleWork
from tts_eval.settings import SearchConfig
from tts_eval.types import AnswerSpec, Problem


def make_work(
    problem: Problem, config: SearchConfig, answers: AnswerSpec, grouper: voting.AnswerGrouper
) -> Work:
    return ParticleWork(problem, config, answers, grouper)
