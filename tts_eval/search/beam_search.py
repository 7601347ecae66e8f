"""Beam search over reasoning steps, scored by a PRM.

``n // beam_width`` beams are active. Each iteration the active beams (best-ranked first) are
expanded round-robin into exactly ``n`` candidate next steps: ``beam_width`` per beam while all
beams are active, ``n // A`` each plus one more for the ``n % A`` best beams when only ``A``
remain. Every candidate's prefix is scored (see ``_tree``), then:

- candidates that finished (EOS or a final-answer step) leave the pool as completed solutions;
- candidates cut off at the token budget (LENGTH) leave it as truncated, never completed;
- of the rest, the ``n // beam_width`` best-ranked across ALL of this problem's beams continue
  (ties: lower lineage first); the others are pruned (counted in ``settings["pruned"]``).

The search stops when no beam is active or after ``num_iterations`` (the last iteration generates
to the end). Completed solutions are then ranked by aggregated score (best first; ties by
lineage), not by finish order, and the ``n`` best are kept, as in the published setup, so the
vote runs over ``n`` solutions like best_of_n at the same ``n`` (how many lower-ranked ones were
dropped is in ``settings["completed_dropped"]``). The result lists those, then the truncated
ones (``settings["ended"]`` says why each ended: ``answer``, ``eos``, ``length``, ``cap``); the
final answer is chosen among them by ``selection`` (``weighted`` by default, or
``naive``). ``Candidate.group`` is the index of the initial beam a solution descends from.

What this module does not do: keep pruned intermediate candidates (or completed solutions beyond
the ``n`` best) in the trace; their tokens are in the cost all the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tts_eval.search import voting
from tts_eval.search._common import Node, end_reason
from tts_eval.search._driver import Work
from tts_eval.search._tree import TreeOptions, TreeWork, usable_tree_budgets
from tts_eval.search.spec import StrategySpec, register_strategy
from tts_eval.types import AnswerSpec, Problem

if TYPE_CHECKING:
    from tts_eval.search.config import SearchConfig


def expansion_counts(active: int, n: int) -> list[int]:
    """Children per active beam (best first): round-robin of ``n`` candidates over ``active``."""
    return [n // active + (1 if i < n % active else 0) for i in range(active)]


class BeamSearchWork(TreeWork):
    strategy = "beam_search"

    def __init__(
        self,
        problem: Problem,
        config: SearchConfig,
        answers: AnswerSpec,
        grouper: voting.AnswerGrouper,
    ) -> None:
        super().__init__(problem, config, answers, grouper)
        self.width = config.n // self.options.beam_width
        self.active = [Node(lineage=(b,), group=b) for b in range(self.width)]
        self.completed: list[Node] = []
        self.truncated: list[Node] = []
        self.open: list[Node] = []
        self.pruned = 0
        self.active_per_iteration: list[int] = []

    def expansions(self) -> list[tuple[Node, int]]:
        self.active_per_iteration.append(len(self.active))
        counts = expansion_counts(len(self.active), self.config.n)
        return list(zip(self.active, counts, strict=True))

    def select(self, parents: list[Node], families: list[list[Node]]) -> bool:
        live: list[Node] = []
        for family in families:
            for child in family:
                if child.finished:
                    self.completed.append(child)
                elif child.truncated:
                    self.truncated.append(child)
                else:
                    live.append(child)
        live.sort(key=lambda node: (-node.rank_score, node.lineage))
        self.active = live[: self.width]
        self.pruned += len(live) - len(self.active)
        return bool(self.active)

    def close(self) -> None:
        self.open, self.active = self.active, []

    def trace(self) -> tuple[list[Node], dict[str, object]]:
        agg = self.config.agg
        ranked = sorted(
            self.completed, key=lambda n: (-voting.aggregate(n.step_scores, agg), n.lineage)
        )
        kept = ranked[: self.config.n]
        nodes = kept + self.truncated + self.open
        extra: dict[str, object] = {
            "pruned": self.pruned,
            "completed_dropped": len(ranked) - len(kept),
            "active_beams": list(self.active_per_iteration),
            "ended": [end_reason(node, "cap") for node in nodes],
        }
        return nodes, extra


def make_work(
    problem: Problem, config: SearchConfig, answers: AnswerSpec, grouper: voting.AnswerGrouper
) -> Work:
    return BeamSearchWork(problem, config, answers, grouper)


def plan(budgets: Sequence[int], options: TreeOptions) -> list[int]:
    """One run per budget that is a multiple of ``beam_width`` (beams are not exchangeable)."""
    return usable_tree_budgets("beam_search", budgets, options)


SPEC = register_strategy(
    StrategySpec(
        name="beam_search",
        summary="step-level beam search, n // beam_width beams",
        make_work=make_work,
        needs_prm=True,
        tree=True,
        options=TreeOptions,
        plan=plan,
        undelimited_effect="beam_search could not branch (each search ran as a single step)",
    )
)
