"""Best-of-N: ``n`` full samples, the finished ones scored by the PRM, then a selection rule.

``selection=naive`` picks the single best-scored eligible candidate; ``selection=weighted``
(default) picks the answer group with the largest sum of aggregated scores (``agg``). Sampling is
shared with majority voting (same seed, same samples); see :class:`majority.SamplingWork`. So a
run also yields the majority curve (its samples voted without the PRM), and a sweep that runs
best-of-N needs no majority run. Early stopping (``stop=adaptive|esc``, ``wave``; the rule reads the
answers, the PRM scores the finished samples once the problem stopped) is majority's
(:class:`majority.SamplingOptions`); a run with a rule yields its own curve only.

Early pruning (``prune_steps=K``, ``prune_fraction=f``; :class:`PruningWork`): Speculative
Rejection (Sun et al. 2024, "Fast Best-of-N Decoding via Speculative Rejection", NeurIPS 2024)
at step boundaries (``../shared/DESIGN.md``, "Adaptive compute"). The ``n`` samples are generated
one step at a time for their first ``K`` steps: the first step of all ``n`` in one request (seeded
as the fixed-budget samples, so sample ``i``'s first step is the fixed run's), each later step
one request per sample (seeded from ``(seed, uid, "prune", i, step)``). After each of those steps
the samples still generating are scored by the PRM and the lowest ``floor(f x their number)`` by
aggregated score (``agg``; ties: the later sample) stop there; finished samples are never pruned.
After step ``K`` the survivors generate to the end in one request each, and the finished samples
are scored and selected as in plain best-of-N. A pruned sample keeps its partial trace and its
scores at the step it stopped at, and never votes. The trace records ``pruned_at`` (per sample,
the step after which it was pruned, None if never), ``pruned`` (how many), ``pruned_tokens``
(what they had generated) and ``tokens_saved_estimate`` (for each pruned sample, the mean length
of the samples that ran to their end minus its own, summed; an estimate: the tokens a pruned
sample would have written are never known; a benchmark against the fixed run measures the real
saving). Pruning and early stopping are not combined (one or the other).

What this module does not do: step-level search (``beam_search``, ``dvts``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tts_eval.search import voting
from tts_eval.search._common import (
    Node,
    derive_seed,
    extend,
    prm_request,
    scored,
    step_request,
    to_candidate,
)
from tts_eval.search._driver import Work
from tts_eval.search.majority import (
    SamplingOptions,
    SamplingWork,
    largest_budget,
    sampling_curves,
    stopped_curves,
)
from tts_eval.search.spec import (
    LATER_OPTION,
    Curve,
    StrategyOptions,
    StrategySpec,
    curve_name,
    each_budget,
    register_strategy,
)
from tts_eval.settings import check_float, check_int, invalid
from tts_eval.types import (
    AnswerSpec,
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


@dataclass(frozen=True)
class BestOfNOptions(SamplingOptions):
    """Majority's early-stopping options plus the pruning schedule (module docstring):
    ``prune_steps`` K (0: no pruning) and ``prune_fraction`` f in (0, 1), the share of the
    samples still generating that stops after each of the first K steps."""

    prune_steps: int = field(default=0, metadata=LATER_OPTION)
    prune_fraction: float = field(default=0.5, metadata=LATER_OPTION)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("prune_steps", self.prune_steps, 0)
        check_float(
            "prune_fraction", self.prune_fraction, "a number in (0, 1)", lambda v: 0 < v < 1
        )
        if self.prune_steps == 0 and self.prune_fraction != 0.5:
            raise invalid(
                "prune_fraction", self.prune_fraction, "only with prune_steps >= 1 (pruning on)"
            )
        if self.prune_steps and self.stop != "none":
            raise invalid(
                "prune_steps",
                self.prune_steps,
                f"0 with stop={self.stop} (early pruning and early stopping are not combined)",
            )


class PruningWork(Work):
    """Best-of-N with Speculative Rejection's pruning at the first steps (module docstring)."""

    options_type = BestOfNOptions
    options: BestOfNOptions

    def __init__(
        self,
        problem: Problem,
        config: SearchConfig,
        answers: AnswerSpec,
        grouper: voting.AnswerGrouper,
    ) -> None:
        super().__init__(problem, config, answers, grouper)
        self.nodes: list[Node] = []
        self.pruned_at: list[int | None] = []
        self.step = 0  # steps generated so far
        self._stage = "generate"
        self._asking: list[int] = []
        self._scoring: list[int] = []

    @property
    def done(self) -> bool:
        return self._stage == "done"

    def _generating(self) -> list[int]:
        return [i for i, node in enumerate(self.nodes) if node.active and self.pruned_at[i] is None]

    def generation_requests(self) -> list[GenerationRequest]:
        if self._stage != "generate":
            return []
        config, uid = self.config, self.problem.uid
        final = self.step >= self.options.prune_steps
        if not self.nodes:  # every sample's first step, seeded as the fixed-budget samples
            seed = derive_seed(config.seed, uid, "sample")
            return [step_request(self.problem, (), config, n=config.n, seed=seed, final=final)]
        self._asking = self._generating()
        return [
            step_request(
                self.problem,
                self.nodes[i].token_ids,
                config,
                n=1,
                seed=derive_seed(config.seed, uid, "prune", i, self.step),
                final=final,
            )
            for i in self._asking
        ]

    def on_generated(self, outputs: list[GenerationOutput]) -> None:
        config, answers = self.config, self.answers
        if not self.nodes:
            root = Node(lineage=())
            self.nodes = [
                extend(root, c, index=i, config=config, answers=answers)
                for i, c in enumerate(outputs[0].completions)
            ]
            self.pruned_at = [None] * len(self.nodes)
        else:
            for i, output in zip(self._asking, outputs, strict=True):
                node = self.nodes[i]
                self.nodes[i] = extend(
                    node, output.completions[0], index=0, config=config, answers=answers
                )
        self.step += 1
        self._stage = "prune" if self.step <= self.options.prune_steps else "score"

    def prm_requests(self) -> list[PRMRequest]:
        delimiter = self.config.step_delimiter
        while True:
            if self._stage == "prune":
                self._scoring = [i for i in self._generating() if self.nodes[i].views(delimiter)]
            elif self._stage == "score":
                self._scoring = [
                    i
                    for i, node in enumerate(self.nodes)
                    if node.finished and self.pruned_at[i] is None and node.views(delimiter)
                ]
            else:
                return []
            if self._scoring:
                return [
                    prm_request(self.problem, self.nodes[i], self.config) for i in self._scoring
                ]
            self._advance()

    def on_scored(self, outputs: list[PRMOutput]) -> None:
        for i, out in zip(self._scoring, outputs, strict=True):
            agg = voting.aggregate(out.step_scores, self.config.agg)
            self.nodes[i] = scored(self.nodes[i], out.step_scores, agg)
        self._advance()

    def _advance(self) -> None:
        """After a pruning round (or a final scoring): prune, then what comes next."""
        if self._stage == "score":
            self._stage = "done"
            return
        generating = self._generating()
        scored_now = set(self._scoring)
        # samples that could not be scored (no step text) rank lowest
        ranked = sorted(
            generating,
            key=lambda i: (self.nodes[i].rank_score if i in scored_now else -math.inf, -i),
        )
        for i in ranked[: math.floor(self.options.prune_fraction * len(generating))]:
            self.pruned_at[i] = self.step
        self._stage = "generate" if self._generating() else "score"

    def result(self, cost: Cost) -> SearchResult:
        candidates = tuple(to_candidate(n, self.config, self.answers) for n in self.nodes)
        selected = voting.select(candidates, self.config.selection, self.grouper, self.config.agg)
        pruned = [i for i, step in enumerate(self.pruned_at) if step is not None]
        ran = [len(n.token_ids) for i, n in enumerate(self.nodes) if self.pruned_at[i] is None]
        mean_ran = sum(ran) / len(ran) if ran else 0.0
        pruned_tokens = sum(len(self.nodes[i].token_ids) for i in pruned)
        saved = sum(max(0.0, mean_ran - len(self.nodes[i].token_ids)) for i in pruned)
        return SearchResult(
            uid=self.problem.uid,
            strategy="best_of_n",
            candidates=candidates,
            selected=selected,
            cost=cost,
            settings={
                **self.config.settings(),
                "pruned_at": list(self.pruned_at),
                "pruned": len(pruned),
                "pruned_tokens": pruned_tokens,
                "tokens_saved_estimate": round(saved, 1),
            },
        )


def make_work(
    problem: Problem, config: SearchConfig, answers: AnswerSpec, grouper: voting.AnswerGrouper
) -> Work:
    options = config.options
    if isinstance(options, BestOfNOptions) and options.prune_steps:
        return PruningWork(problem, config, answers, grouper)
    return SamplingWork(
        problem,
        config,
        answers,
        grouper,
        strategy="best_of_n",
        use_prm=True,
        selection=config.selection,
    )


def plan(budgets: Sequence[int], options: StrategyOptions) -> list[int]:
    """Sampling's plan; a pruned run is not a subset of a larger one: every budget."""
    if isinstance(options, BestOfNOptions) and options.prune_steps:
        return each_budget(budgets, options)
    return largest_budget(budgets, options)


def fixed_budget(settings: Mapping[str, Any]) -> bool:
    """Whether a run drew all ``n`` samples whole (no early stopping, no pruning)."""
    return settings.get("stop", "none") == "none" and not settings.get("prune_steps", 0)


def curves(n: int, settings: Mapping[str, Any]) -> list[Curve]:
    if settings.get("prune_steps", 0):
        return [Curve(curve_name(SPEC, settings), (n,))]
    return stopped_curves(SPEC, n, settings) or sampling_curves(n, "best_of_n")


SPEC = register_strategy(
    StrategySpec(
        name="best_of_n",
        summary="n samples, PRM-weighted or best single answer",
        make_work=make_work,
        needs_prm=True,
        reads=("agg", "selection"),
        options=BestOfNOptions,
        plan=plan,
        curves=curves,
        scores_samples=fixed_budget,
        one_request=True,
    )
)
