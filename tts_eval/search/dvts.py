"""Diverse verifier tree search (DVTS): ``n // beam_width`` independent greedy subtrees.

Each subtree, at each iteration, samples ``beam_width`` (M) candidate next steps from its current
node (one request, ``n=M``), the PRM scores them (see ``_tree``; lookahead applies), and only the
best-ranked one is kept (ties: lowest child index). Children cut off at the token budget
(LENGTH) are never kept while a sibling can still finish or continue. A subtree ends when its
kept step finishes the solution (EOS or final-answer step), when all M children were truncated,
or at ``num_iterations`` (the last iteration generates to the end).

The trace says why each subtree ended (``settings["subtree_ends"]``: ``answer``, ``eos``,
``all_truncated`` or ``cap``) and why each listed solution ended (``settings["ended"]``, one per
candidate: ``answer``, ``eos``, ``length``, or ``sibling`` for an unfinished sibling of the leaf,
``cap`` for an open one at the iteration cap). Budget semantics (as the design brief): ``max_tokens``
bounds one whole solution (every step request gets what is left of it), and the last iteration
generates to the end (EOS or that bound), with no step stop.

A subtree's result is its last family: the leaf and its M-1 siblings. Only those that finished
can be selected (unfinished siblings never vote). Final selection over all subtrees' finished
solutions follows ``selection`` as in best_of_n (``weighted`` by default). Subtrees never compete,
which keeps diversity at large ``n``. ``Candidate.group`` is the subtree index; candidates are
listed by subtree, then child index.

What this module does not do: keep siblings discarded at earlier depths in the trace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tts_eval.search import voting
from tts_eval.search._common import Node, end_reason
from tts_eval.search._driver import Work
from tts_eval.search._tree import TreeOptions, TreeWork, usable_tree_budgets
from tts_eval.search.spec import Curve, StrategySpec, curve_name, powers_of_two, register_strategy
from tts_eval.types import AnswerSpec, Problem

if TYPE_CHECKING:
    from tts_eval.search.config import SearchConfig


class DVTSWork(TreeWork):
    strategy = "dvts"

    def __init__(
        self,
        problem: Problem,
        config: SearchConfig,
        answers: AnswerSpec,
        grouper: voting.AnswerGrouper,
    ) -> None:
        super().__init__(problem, config, answers, grouper)
        subtrees = config.n // self.options.beam_width
        self.active: dict[int, Node] = {s: Node(lineage=(s,), group=s) for s in range(subtrees)}
        self.last_family: dict[int, list[Node]] = {}
        self.leaves: dict[int, list[Node]] = {}
        self.depth: dict[int, int] = {}
        self.ends: dict[int, str] = {}

    def expansions(self) -> list[tuple[Node, int]]:
        return [(self.active[s], self.options.beam_width) for s in sorted(self.active)]

    def select(self, parents: list[Node], families: list[list[Node]]) -> bool:
        for parent, family in zip(parents, families, strict=True):
            subtree = parent.group
            self.depth[subtree] = self.iteration + 1
            viable = [k for k, child in enumerate(family) if not child.truncated]
            if not viable:
                self.leaves[subtree] = family
                self.ends[subtree] = "all_truncated"
                del self.active[subtree]
                continue
            best = max(viable, key=lambda k: (family[k].rank_score, -k))
            if family[best].finished:
                self.leaves[subtree] = family
                self.ends[subtree] = end_reason(family[best], "")
                del self.active[subtree]
            else:
                self.active[subtree] = family[best]
                self.last_family[subtree] = family
        return bool(self.active)

    def close(self) -> None:
        for subtree in list(self.active):
            self.leaves[subtree] = self.last_family[subtree]
            self.ends[subtree] = "cap"
        self.active = {}

    def trace(self) -> tuple[list[Node], dict[str, object]]:
        subtrees = sorted(self.leaves)
        nodes = [node for s in subtrees for node in self.leaves[s]]
        unfinished = {s: "cap" if self.ends[s] == "cap" else "sibling" for s in subtrees}
        return nodes, {
            "subtree_depths": [self.depth.get(s, 0) for s in subtrees],
            "subtree_ends": [self.ends[s] for s in subtrees],
            "ended": [end_reason(n, unfinished[s]) for s in subtrees for n in self.leaves[s]],
        }


def make_work(
    problem: Problem, config: SearchConfig, answers: AnswerSpec, grouper: voting.AnswerGrouper
) -> Work:
    return DVTSWork(problem, config, answers, grouper)


def plan(budgets: Sequence[int], options: TreeOptions) -> list[int]:
    """One run, at the largest budget that is a multiple of ``beam_width``: smaller budgets are
    read off random subsets of its subtrees."""
    return usable_tree_budgets("dvts", budgets, options)[-1:]


def curves(n: int, settings: Mapping[str, Any]) -> list[Curve]:
    """``dvts`` at n = M, 2M, ... (powers of two) up to the run's n, from whole subtrees."""
    width = int(settings.get("beam_width", TreeOptions.beam_width))
    budgets = tuple(b for b in powers_of_two(width, n) if b % width == 0)
    name = curve_name(SPEC, settings)
    return [Curve(name, budgets, choose=voting.choose_selected, groups=True, route="dvts")]


SPEC = register_strategy(
    StrategySpec(
        name="dvts",
        summary="n // beam_width independent subtrees (diverse verifier)",
        make_work=make_work,
        needs_prm=True,
        tree=True,
        options=TreeOptions,
        plan=plan,
        curves=curves,
        undelimited_effect="dvts could not branch (each search ran as a single step)",
    )
)
