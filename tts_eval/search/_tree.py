"""The step-level machinery shared by beam search and DVTS: expand, look ahead, score, select.

One iteration of a :class:`TreeWork`:

1. *expand*: each (parent, k) pair of :meth:`TreeWork.expansions` becomes one request for ``k``
   next steps (stop at the step delimiter; no stop string at the last iteration, which generates
   to the end), seeded from ``(seed, uid, strategy, "expand", parent lineage, iteration)``.
2. *lookahead* (``lookahead=k > 0``, not at the last iteration): every child that can continue is
   rolled out up to ``k`` further steps at temperature 0, one batched engine call per depth; a
   rollout stops early at EOS, a final-answer step or the token budget.
3. *score*: children that finished or can continue are scored by the PRM (truncated ones are not
   scored: they can neither continue nor be selected; they keep their parent's scores). A child's
   ``step_scores`` are its own steps' scores; its ``rank_score`` aggregates (``agg``) the scores of
   the rolled-out prefix with lookahead, its own scores otherwise. The rollout is then discarded.
4. *select*: the subclass decides what continues (:meth:`TreeWork.select`).

Also the options every tree strategy reads (:class:`TreeOptions`: ``beam_width`` M, default 4,
``lookahead`` and ``max_step_tokens``, the per-step token cap of every request above, the last
iteration's included; a step that hits it ends as a step, and the result's
``settings["capped_steps"]`` lists, per candidate, the steps that did) and how a sweep plans tree
runs (:func:`tree_budgets`).

What this module does not do: decide which children survive (``beam_search``, ``dvts``).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tts_eval.errors import SettingError
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
from tts_eval.search.spec import GROUP_OPTION, LATER_OPTION, StrategyOptions
from tts_eval.settings import check_int, invalid
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

Key = tuple[int, int]  # (family index, child index)


@dataclass(frozen=True)
class TreeOptions(StrategyOptions):
    """The options of the tree strategies: ``beam_width`` M (``n // M`` beams or subtrees, so
    ``n`` must be a multiple of M), ``lookahead`` (greedy rollout steps before scoring) and
    ``max_step_tokens`` (the per-step token cap; None: a step may use what is left of
    ``max_tokens``; see ``_common``).

    All are settings of a whole sweep rather than names of a run's curve (metadata ``group``):
    a report keeps runs at another beam width, lookahead or step cap in another settings group."""

    beam_width: int = field(default=4, metadata=GROUP_OPTION)
    lookahead: int = field(default=0, metadata=GROUP_OPTION)
    max_step_tokens: int | None = field(default=None, metadata={**GROUP_OPTION, **LATER_OPTION})

    def __post_init__(self) -> None:
        check_int("beam_width", self.beam_width, 1)
        check_int("lookahead", self.lookahead, 0)
        check_step_cap(self.max_step_tokens)

    def check(self, config: SearchConfig) -> None:
        n, width = config.n, self.beam_width
        if n < width or n % width:
            lower = max(width, n - n % width)
            upper = lower + width if lower < n else lower
            raise invalid(
                "n",
                n,
                f"a multiple of beam_width={width} for strategy={config.strategy} "
                f"(e.g. n={lower}" + (f" or n={upper})" if upper != lower else ")"),
            )


def check_step_cap(value: object) -> None:
    """``max_step_tokens``: None (no cap) or an integer >= 1."""
    if value is not None:
        check_int("max_step_tokens", value, 1)


def tree_budgets(budgets: Sequence[int], beam_width: int) -> list[int]:
    """The budgets a tree search can run: multiples of ``beam_width``."""
    return [b for b in budgets if b >= beam_width and b % beam_width == 0]


def usable_tree_budgets(strategy: str, budgets: Sequence[int], options: TreeOptions) -> list[int]:
    """:func:`tree_budgets`, or a one-line error when there is none."""
    usable = tree_budgets(budgets, options.beam_width)
    if not usable:
        accepted = f"multiples of beam_width={options.beam_width}"
        raise SettingError(
            "budgets",
            list(budgets),
            accepted,
            scope="sweep",
            message=f"sweep.budgets {list(budgets)} has no budget {strategy} can run: it needs "
            + accepted,
        )
    return usable


class TreeWork(Work):
    """Iterated step expansion with PRM scoring; subclasses choose expansions and survivors."""

    options_type = TreeOptions
    options: TreeOptions

    strategy = "tree"

    def __init__(
        self,
        problem: Problem,
        config: SearchConfig,
        answers: AnswerSpec,
        grouper: voting.AnswerGrouper,
    ) -> None:
        super().__init__(problem, config, answers, grouper)
        self.iteration = 0
        self._stage = "expand"
        self._parents: list[Node] = []
        self._families: list[list[Node]] = []
        self._rollouts: dict[Key, Node] = {}
        self._rollout_keys: list[Key] = []
        self._depth = 0
        self._scoring: list[Key] = []

    # -- subclass hooks ---------------------------------------------------------------------

    @abc.abstractmethod
    def expansions(self) -> list[tuple[Node, int]]:
        """(parent, number of children) pairs to expand this iteration."""

    @abc.abstractmethod
    def select(self, parents: list[Node], families: list[list[Node]]) -> bool:
        """Consume this iteration's scored children; return whether the search goes on."""

    @abc.abstractmethod
    def trace(self) -> tuple[list[Node], dict[str, object]]:
        """Nodes recorded in the result (in order) and extra settings to report."""

    # -- Work -------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._stage == "done"

    @property
    def final_iteration(self) -> bool:
        return self.iteration >= self.config.num_iterations - 1

    def _seed(self, purpose: str, lineage: tuple[int, ...], *extra: int) -> int:
        return derive_seed(
            self.config.seed,
            self.problem.uid,
            self.strategy,
            purpose,
            lineage,
            self.iteration,
            *extra,
        )

    def generation_requests(self) -> list[GenerationRequest]:
        if self._stage == "expand":
            pairs = self.expansions()
            self._parents = [parent for parent, _ in pairs]
            return [
                step_request(
                    self.problem,
                    parent.token_ids,
                    self.config,
                    n=count,
                    seed=self._seed("expand", parent.lineage),
                    final=self.final_iteration,
                )
                for parent, count in pairs
            ]
        if self._stage == "lookahead":
            self._rollout_keys = [key for key, node in self._rollouts.items() if node.active]
            if not self._rollout_keys:
                self._stage = "score"
                return []
            return [
                step_request(
                    self.problem,
                    self._rollouts[key].token_ids,
                    self.config,
                    n=1,
                    seed=self._seed("lookahead", self._child(key).lineage, self._depth),
                    final=False,
                    temperature=0.0,
                )
                for key in self._rollout_keys
            ]
        return []

    def _child(self, key: Key) -> Node:
        return self._families[key[0]][key[1]]

    def on_generated(self, outputs: list[GenerationOutput]) -> None:
        if self._stage == "expand":
            self._families = [
                [
                    extend(parent, completion, index=k, config=self.config, answers=self.answers)
                    for k, completion in enumerate(output.completions)
                ]
                for parent, output in zip(self._parents, outputs, strict=True)
            ]
            self._rollouts = {}
            if self.options.lookahead and not self.final_iteration:
                self._rollouts = {
                    (f, k): child
                    for f, family in enumerate(self._families)
                    for k, child in enumerate(family)
                    if child.active
                }
            self._depth = 0
            self._stage = "lookahead" if self._rollouts else "score"
            return
        for key, output in zip(self._rollout_keys, outputs, strict=True):
            node = self._rollouts[key]
            self._rollouts[key] = extend(
                node, output.completions[0], index=0, config=self.config, answers=self.answers
            )
        self._depth += 1
        if self._depth >= self.options.lookahead:
            self._stage = "score"

    def prm_requests(self) -> list[PRMRequest]:
        if self._stage != "score":
            return []
        delimiter = self.config.step_delimiter
        self._scoring = [
            (f, k)
            for f, family in enumerate(self._families)
            for k, child in enumerate(family)
            if not child.truncated and child.views(delimiter)
        ]
        if not self._scoring:
            self._after_scoring()
            return []
        return [
            prm_request(self.problem, self._rollouts.get(key, self._child(key)), self.config)
            for key in self._scoring
        ]

    def on_scored(self, outputs: list[PRMOutput]) -> None:
        delimiter = self.config.step_delimiter
        for key, output in zip(self._scoring, outputs, strict=True):
            child = self._child(key)
            own = len(child.views(delimiter))
            rank = voting.aggregate(output.step_scores, self.config.agg)
            self._families[key[0]][key[1]] = scored(child, output.step_scores[:own], rank)
        self._after_scoring()

    def _after_scoring(self) -> None:
        goes_on = self.select(self._parents, self._families)
        self.iteration += 1
        self._families, self._rollouts, self._scoring = [], {}, []
        self._stage = (
            "expand" if goes_on and self.iteration < self.config.num_iterations else "done"
        )
        if self._stage == "done":
            self.close()

    def close(self) -> None:
        """Called once when the search stops (subclasses record what is still open)."""

    def result(self, cost: Cost) -> SearchResult:
        nodes, extra = self.trace()
        candidates: tuple[Candidate, ...] = tuple(
            to_candidate(node, self.config, self.answers) for node in nodes
        )
        selected = voting.select(candidates, self.config.selection, self.grouper, self.config.agg)
        settings = {
            **self.config.settings(),
            "iterations_run": self.iteration,
            **extra,
            **capped_record(nodes, self.config),
        }
        return SearchResult(
            uid=self.problem.uid,
            strategy=self.strategy,
            candidates=candidates,
            selected=selected,
            cost=cost,
            settings=settings,
        )
