"""Particle filtering over reasoning steps (Puri et al. 2025), and the particle Gibbs sweeps.

The PRM is read as a noisy likelihood to sample from, not an oracle to maximise.

``particle_filtering``: ``n`` particles, all starting empty. Iteration ``t`` of a sweep:

1. *extend*: every particle that can continue gets one more step. Copies of one ancestor are one
   request for ``k`` samples, seeded from ``(seed, uid, strategy, "extend", sweep, t, ancestor
   id)``; the last iteration (``t = num_iterations - 1``) generates to the end, as beam search.
2. *score*: each new prefix that is not truncated is scored by the PRM (the whole prefix, as in
   beam search; the PRM adapters reuse the cached shared prefix). A particle's log-weight is
   ``logit(agg(step scores))``, the score clipped to ``[1e-7, 1 - 1e-7]`` first. Finished
   particles keep their final weight; truncated ones (LENGTH) have none.
3. *resample*: when some particle can still continue, ``n`` particles are drawn with
   probabilities ``softmax(log-weights / pf_temperature)`` over the particles that are not
   truncated (so truncated ones never get copies): ``multinomial`` (``n`` independent uniforms)
   or ``systematic`` (one uniform ``u``, points ``(u + k) / n``), from
   ``random.Random(derive_seed(seed, uid, strategy, "resample", sweep, t))``: per problem,
   reproducible, independent of the batch. A finished particle that is drawn is copied as a
   finished solution. When no particle can continue the sweep ends, and its last population (not
   resampled again) is the final one.

``particle_gibbs`` (:mod:`tts_eval.search.particle_gibbs` builds the same state machine):
``pg_iterations`` sweeps of ``n / pg_iterations`` particles each. After a
sweep, ``pg_reference_particles`` reference particles are drawn from its final population by
the same weights and resampling scheme (``"reference"`` seeds). In the next sweep a reference is
not generated again: at iteration ``t`` its state after iteration ``t`` of its own sweep (its final state once
it has ended), with the weight it had then, joins the population, and only the other particles
are resampled, from all of it (a drawn reference prefix is continued with new samples), so
every reference survives to the final population (conditional SMC, as in the paper).

Selection over the final population of the last sweep (``selection``): ``weighted`` is the
answer group with the largest sum of particle weights ``softmax(log-weight / pf_temperature)``
(ties as :func:`voting.weighted_vote`), ``naive`` the single highest weight (what its_hub does).
Only finished particles with an answer take part; when the last sweep has none, the latest sweep
that has one is used.

Trace: the candidates are the final populations of every sweep in order (``Candidate.group`` is
the sweep), copies included, so a particle_gibbs result has ``n`` candidates; the selection
points into the last block (see above). ``settings["genealogy"]`` holds, per sweep, one entry per
iteration: ``log_weights`` of the population (``None`` for truncated particles), and where it
was resampled ``ancestors`` (for each particle of the next population, the index of its
ancestor, ascending; the next population lists each ancestor's copies in that order, then the
references) and ``counts`` (copies per particle). ``settings["references"]`` holds, per sweep
after the first, the indices of its references in the previous final population.

What this module does not do: lookahead, or ancestor sampling (PGAS); a particle's ancestry is
kept as step boundaries (token and character counts), not as copies of its prefixes.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

from tts_eval.search import voting
from tts_eval.search._common import (
    Node,
    capped_record,
    derive_seed,
    extend,
    prm_request,
    scored,
    step_request,
    to_candidate,
)
from tts_eval.search._driver import Work
from tts_eval.search._tree import check_step_cap
from tts_eval.search.spec import (
    GROUP_OPTION,
    LATER_OPTION,
    StrategyOptions,
    StrategySpec,
    register_strategy,
)
from tts_eval.settings import check_choice, check_float
from tts_eval.types import (
    AnswerSpec,
    Candidate,
    Cost,
    GenerationOutput,
    GenerationRequest,
    PRMOutput,
    PRMRequest,
    Problem,
    SearchResult,
)

if TYPE_CHECKING:
    from tts_eval.search.config import SearchConfig

SCORE_CLIP = 1e-7
RESAMPLINGS = ("multinomial", "systematic")


@dataclass(frozen=True)
class ParticleOptions(StrategyOptions):
    """The options of particle filtering: the resampling scheme and the softmax temperature of
    the log-weights (> 0), and the per-step token cap ``max_step_tokens`` (as the tree
    strategies'). One sweep, no reference particles (:meth:`sweeps`, :meth:`references` are what
    particle Gibbs changes)."""

    resampling: str = "multinomial"
    pf_temperature: float = 1.0
    max_step_tokens: int | None = field(default=None, metadata={**GROUP_OPTION, **LATER_OPTION})
    # Particle Gibbs (reference particles carried between sweeps; recorded in the trace).
    gibbs: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_choice("resampling", self.resampling, RESAMPLINGS)
        check_float("pf_temperature", self.pf_temperature, "a number > 0", lambda v: v > 0)
        check_step_cap(self.max_step_tokens)

    @property
    def sweeps(self) -> int:
        return 1

    @property
    def references(self) -> int:
        return 0


def log_weight(score: float) -> float:
    """``logit(score)``, the score clipped to ``[1e-7, 1 - 1e-7]``."""
    p = min(max(float(score), SCORE_CLIP), 1.0 - SCORE_CLIP)
    return math.log(p / (1.0 - p))


def probabilities(log_weights: Sequence[float | None], temperature: float) -> list[float]:
    """``softmax(log_weights / temperature)``; ``None`` entries get probability 0."""
    live = [w for w in log_weights if w is not None]
    if not live:
        raise ValueError("no particle has a weight (all are truncated)")
    top = max(live)
    raw = [0.0 if w is None else math.exp((w - top) / temperature) for w in log_weights]
    total = math.fsum(raw)
    return [r / total for r in raw]


def resample(probs: Sequence[float], count: int, scheme: str, rng: random.Random) -> list[int]:
    """``count`` ancestor indices drawn by ``probs`` (ascending), ``multinomial``/``systematic``.

    Multinomial: ``count`` uniforms ``u`` from ``rng.random()``; systematic: one ``u``, then the
    points ``(u + k) / count``. A point ``x`` picks the first index whose cumulative probability
    exceeds ``x`` (an index of probability 0 is never picked).
    """
    if scheme not in RESAMPLINGS:
        raise ValueError(f"resampling must be one of {', '.join(RESAMPLINGS)}; got {scheme!r}")
    cumulative = list(itertools.accumulate(probs))
    last = max(i for i, p in enumerate(probs) if p > 0)
    if scheme == "multinomial":
        points = sorted(rng.random() for _ in range(count))
    else:
        u = rng.random()
        points = [(u + k) / count for k in range(count)]
    total = cumulative[-1]
    return [min(bisect.bisect_right(cumulative, x * total), last) for x in points]


@dataclass(frozen=True)
class Mark:
    """A particle's state after one iteration: its length and scores then."""

    tokens: int
    chars: int
    step_scores: tuple[float, ...]
    rank_score: float


@dataclass(frozen=True)
class Particle:
    """A node with its history (``marks[t]``: the state after iteration ``t`` of its path)."""

    node: Node
    marks: tuple[Mark, ...] = ()

    @property
    def log_weight(self) -> float | None:
        return None if self.node.truncated else log_weight(self.node.rank_score)

    def marked(self) -> Particle:
        node = self.node
        mark = Mark(len(node.token_ids), len(node.text), node.step_scores, node.rank_score)
        return Particle(node, (*self.marks, mark))


class ParticleWork(Work):
    """Particle filtering (one sweep) or particle Gibbs (``pg_iterations`` sweeps) on a problem."""

    options_type = ParticleOptions
    options: ParticleOptions

    def __init__(
        self,
        problem: Problem,
        config: SearchConfig,
        answers: AnswerSpec,
        grouper: voting.AnswerGrouper,
    ) -> None:
        super().__init__(problem, config, answers, grouper)
        self.strategy = config.strategy
        self.sweeps = self.options.sweeps
        self.refs_per_sweep = self.options.references
        self.size = config.n // self.sweeps
        self.sweep = 0
        self.iteration = 0
        self.references: list[Particle] = []
        self.finals: list[list[Particle]] = []
        self.genealogy: list[list[dict[str, Any]]] = []
        self.reference_indices: list[list[int]] = []
        self._ids = itertools.count()  # ids of particle states (seeds), in creation order
        self._draws: list[tuple[Particle, int]] = []
        self._population: list[Particle] = []
        self._fresh: list[int] = []
        self._scoring: list[int] = []
        self._stage = "generate"
        self._start_sweep()

    # -- sweeps and iterations --------------------------------------------------------------

    def _seed(self, purpose: str, *extra: object) -> int:
        return derive_seed(
            self.config.seed, self.problem.uid, self.strategy, purpose, self.sweep, *extra
        )

    def _new_node(self, **fields: Any) -> Node:
        return Node(lineage=(next(self._ids),), group=self.sweep, **fields)

    def _start_sweep(self) -> None:
        self.iteration = 0
        self.genealogy.append([])
        root = Particle(self._new_node())
        self._draws = [(root, self.size - len(self.references))]
        self._stage = "generate"

    def _state_at(self, particle: Particle, t: int) -> Particle:
        """A reference particle as it was after iteration ``t`` (its final state once ended)."""
        if t >= len(particle.marks) - 1:
            return particle
        mark, node = particle.marks[t], particle.node
        prefix = self._new_node(
            token_ids=node.token_ids[: mark.tokens],
            text=node.text[: mark.chars],
            step_scores=mark.step_scores,
            rank_score=mark.rank_score,
            cuts=tuple(c for c in node.cuts if c <= mark.chars),
            token_values=node.token_values[: mark.tokens],
            pieces=tuple(p for p in node.pieces if p[0] <= mark.tokens),
        )
        return Particle(prefix, particle.marks[: t + 1])

    def _reference_states(self) -> list[Particle]:
        return [self._state_at(ref, self.iteration) for ref in self.references]

    def _after_iteration(self) -> None:
        population = self._population
        for i in self._fresh:
            population[i] = population[i].marked()
        self._fresh, self._scoring = [], []
        cap = self.config.num_iterations
        while True:
            weights = [p.log_weight for p in population]
            entry: dict[str, Any] = {"log_weights": weights}
            self.genealogy[-1].append(entry)
            if self.iteration >= cap - 1 or not any(p.node.active for p in population):
                self._end_sweep(population)
                return
            rng = random.Random(self._seed("resample", self.iteration))
            probs = probabilities(weights, self.options.pf_temperature)
            free = self.size - len(self.references)
            ancestors = resample(probs, free, self.options.resampling, rng)
            counts = [0] * len(population)
            for a in ancestors:
                counts[a] += 1
            entry["ancestors"], entry["counts"] = ancestors, counts
            self._draws = [(population[a], counts[a]) for a in sorted(set(ancestors))]
            self.iteration += 1
            if any(p.node.active for p, _ in self._draws):
                self._stage = "generate"
                return
            # Nothing left to generate: only reference prefixes can still move on.
            population = [p for p, k in self._draws for _ in range(k)]
            population += self._reference_states()

    def _end_sweep(self, population: list[Particle]) -> None:
        self.finals.append(population)
        if len(self.finals) >= self.sweeps:
            self._stage = "done"
            return
        weights = [p.log_weight for p in population]
        picks: list[int] = []
        if self.refs_per_sweep and any(w is not None for w in weights):
            rng = random.Random(self._seed("reference"))
            probs = probabilities(weights, self.options.pf_temperature)
            picks = resample(probs, self.refs_per_sweep, self.options.resampling, rng)
        self.reference_indices.append(picks)
        self.references = [population[i] for i in picks]
        self.sweep += 1
        self._start_sweep()

    # -- Work -------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._stage == "done"

    def generation_requests(self) -> list[GenerationRequest]:
        if self._stage != "generate":
            return []
        final = self.iteration >= self.config.num_iterations - 1
        return [
            step_request(
                self.problem,
                particle.node.token_ids,
                self.config,
                n=copies,
                seed=self._seed("extend", self.iteration, particle.node.lineage),
                final=final,
            )
            for particle, copies in self._draws
            if particle.node.active
        ]

    def on_generated(self, outputs: list[GenerationOutput]) -> None:
        delimiter = self.config.step_delimiter
        pending = iter(outputs)
        population: list[Particle] = []
        fresh: list[int] = []
        scoring: list[int] = []
        for particle, copies in self._draws:
            if not particle.node.active:
                population.extend([particle] * copies)
                continue
            for j, completion in enumerate(next(pending).completions):
                child = extend(
                    particle.node, completion, index=j, config=self.config, answers=self.answers
                )
                child = replace(child, lineage=(next(self._ids),), group=self.sweep)
                fresh.append(len(population))
                if not child.truncated and child.views(delimiter):
                    scoring.append(len(population))
                population.append(Particle(child, particle.marks))
        population += self._reference_states()
        self._population, self._fresh, self._scoring = population, fresh, scoring
        self._stage = "score"

    def prm_requests(self) -> list[PRMRequest]:
        if self._stage != "score":
            return []
        if not self._scoring:
            self._after_iteration()
            return []
        return [
            prm_request(self.problem, self._population[i].node, self.config) for i in self._scoring
        ]

    def on_scored(self, outputs: list[PRMOutput]) -> None:
        for i, output in zip(self._scoring, outputs, strict=True):
            particle = self._population[i]
            rank = voting.aggregate(output.step_scores, self.config.agg)
            node = scored(particle.node, output.step_scores, rank)
            self._population[i] = Particle(node, particle.marks)
        self._after_iteration()

    def result(self, cost: Cost) -> SearchResult:
        candidates: list[Candidate] = []
        nodes = [particle.node for population in self.finals for particle in population]
        for sweep, population in enumerate(self.finals):
            for particle in population:
                candidate = to_candidate(particle.node, self.config, self.answers)
                candidates.append(replace(candidate, group=sweep))
        selected, end = None, len(candidates)
        for population in reversed(self.finals):  # the last sweep with an eligible particle
            offset = end - len(population)
            pick = select(
                candidates[offset:end],
                [p.log_weight for p in population],
                self.config.selection,
                self.options.pf_temperature,
                self.grouper,
            )
            if pick is not None:
                selected = offset + pick
                break
            end = offset
        extra: dict[str, Any] = {
            "iterations_run": sum(len(entries) for entries in self.genealogy),
            "genealogy": self.genealogy,
        }
        if self.options.gibbs:
            extra["references"] = self.reference_indices
        extra.update(capped_record(nodes, self.config))
        return SearchResult(
            uid=self.problem.uid,
            strategy=self.strategy,
            candidates=tuple(candidates),
            selected=selected,
            cost=cost,
            settings={**self.config.settings(), **extra},
        )


def select(
    candidates: Sequence[Candidate],
    log_weights: Sequence[float | None],
    selection: str,
    temperature: float,
    grouper: voting.AnswerGrouper,
) -> int | None:
    """The selected index among final particles (see the module docstring)."""
    if not any(w is not None for w in log_weights):
        return None
    if selection == "naive":
        return voting.naive_best_by(
            candidates, [-math.inf if w is None else w for w in log_weights]
        )
    return voting.weighted_vote_by(candidates, grouper, probabilities(log_weights, temperature))


def make_work(
    problem: Problem, config: SearchConfig, answers: AnswerSpec, grouper: voting.AnswerGrouper
) -> Work:
    return ParticleWork(problem, config, answers, grouper)


SPEC = register_strategy(
    StrategySpec(
        name="particle_filtering",
        summary="n particles resampled by PRM weight each step (Puri et al. 2025)",
        make_work=make_work,
        needs_prm=True,
        routable=False,
        options=ParticleOptions,
        self_scored=False,
    )
)
