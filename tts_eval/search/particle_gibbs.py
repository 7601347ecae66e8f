"""Particle Gibbs: ``pg_iterations`` sweeps of particle filtering with reference particles.

The budget ``n`` is split into ``n / pg_iterations`` particles per sweep; after each sweep
``pg_reference_particles`` references drawn from its final weights are carried into the next one,
where they survive every resampling (conditional SMC). The state machine is the one of
:mod:`tts_eval.search.particle_filtering` (which documents both strategies and their traces); this
module adds the options (:class:`GibbsOptions`) and the spec.

What this module does not do: ancestor sampling (PGAS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tts_eval.errors import SettingError
from tts_eval.search import voting
from tts_eval.search._driver import Work
from tts_eval.search.particle_filtering import ParticleOptions, ParticleWork
from tts_eval.search.spec import StrategySpec, register_strategy
from tts_eval.settings import check_int, invalid
from tts_eval.types import AnswerSpec, Problem

if TYPE_CHECKING:
    from tts_eval.search.config import SearchConfig


@dataclass(frozen=True)
class GibbsOptions(ParticleOptions):
    """Particle filtering's options plus ``pg_iterations`` (sweeps; must divide ``n``) and
    ``pg_reference_particles`` (carried between sweeps; fewer than ``n / pg_iterations``)."""

    pg_iterations: int = 1
    pg_reference_particles: int = 1
    gibbs: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("pg_iterations", self.pg_iterations, 1)
        check_int("pg_reference_particles", self.pg_reference_particles, 0)

    @property
    def sweeps(self) -> int:
        return self.pg_iterations

    @property
    def references(self) -> int:
        return self.pg_reference_particles

    def check(self, config: SearchConfig) -> None:
        n, sweeps, refs = config.n, self.pg_iterations, self.pg_reference_particles
        if n % sweeps:
            fits = [k for k in range(1, n + 1) if n % k == 0]
            raise invalid(
                "n",
                n,
                f"a multiple of pg_iterations={sweeps} for strategy=particle_gibbs (n particles "
                f"are split into pg_iterations sweeps; pg_iterations dividing n={n}: "
                f"{', '.join(map(str, fits))})",
            )
        if refs >= n // sweeps:
            raise invalid(
                "pg_reference_particles",
                refs,
                f"an integer below n/pg_iterations={n // sweeps} (the particles of a sweep; "
                "at least one must be free)",
            )


def make_work(
    problem: Problem, config: SearchConfig, answers: AnswerSpec, grouper: voting.AnswerGrouper
) -> Work:
    return ParticleWork(problem, config, answers, grouper)


def plan(budgets: Sequence[int], options: GibbsOptions) -> list[int]:
    """One run per budget that splits into ``pg_iterations`` sweeps of more than
    ``pg_reference_particles`` particles (particles are resampled together: not exchangeable)."""
    sweeps, refs = options.pg_iterations, options.pg_reference_particles
    usable = [b for b in budgets if b % sweeps == 0 and b // sweeps > refs]
    if not usable:
        accepted = (
            f"multiples of pg_iterations={sweeps} with more than pg_reference_particles={refs} "
            "particles per sweep"
        )
        raise SettingError(
            "budgets",
            list(budgets),
            accepted,
            scope="sweep",
            message=f"sweep.budgets {list(budgets)} has no budget particle_gibbs can run: it "
            f"needs {accepted}",
        )
    return usable


SPEC = register_strategy(
    StrategySpec(
        name="particle_gibbs",
        summary="pg_iterations sweeps of particle filtering with reference particles",
        make_work=make_work,
        needs_prm=True,
        routable=False,
        options=GibbsOptions,
        self_scored=False,
        plan=plan,
    )
)
