"""Majority voting (self-consistency): ``n`` full samples, the most frequent answer wins.

Also home of :class:`SamplingWork`, the "sample ``n`` whole solutions in one request, optionally
score the finished ones with the PRM, then select" state machine that ``best_of_n`` and the
compute_optimal probe reuse. The ``n`` samples come from ONE request (``n=n``, no stop string,
the whole ``max_tokens`` budget) seeded from ``(seed, uid, "sample")``, so majority and best_of_n
runs with the same seed see the same samples. Only finished samples are scored (a LENGTH cut-off
can never be selected), so truncated candidates carry no step scores.

Answers are grouped by equivalence (``voting.AnswerGrouper``); ties: see ``voting``.

Curves (:func:`sampling_curves`): a run of ``n`` samples yields majority voting (and, scored,
best-of-N) at every power of two up to ``n``, read off random subsets of its samples, and
``pass@n`` (coverage); a sweep runs it once, at its largest budget.

What this module does not do: tree search (``beam_search``, ``dvts``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from tts_eval.search.spec import (
    Curve,
    StrategyOptions,
    StrategySpec,
    powers_of_two,
    register_strategy,
)
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

COVERAGE = "pass@n"  # the coverage curve: whether any of n samples is correct (an oracle)


class SamplingWork(Work):
    """Sample ``config.n`` solutions, score finished ones (``use_prm``), select (``selection``)."""

    def __init__(
        self,
        problem: Problem,
        config: SearchConfig,
        answers: AnswerSpec,
        grouper: voting.AnswerGrouper,
        *,
        strategy: str,
        use_prm: bool,
        selection: str,
        purpose: str = "sample",
    ) -> None:
        super().__init__(problem, config, answers, grouper)
        self.strategy = strategy
        self.use_prm = use_prm
        self.selection = selection
        self.purpose = purpose
        self.nodes: list[Node] = []
        self._stage = "generate"
        self._scoring: list[int] = []

    @property
    def done(self) -> bool:
        return self._stage == "done"

    def generation_requests(self) -> list[GenerationRequest]:
        if self._stage != "generate":
            return []
        seed = derive_seed(self.config.seed, self.problem.uid, self.purpose)
        return [step_request(self.problem, (), self.config, n=self.config.n, seed=seed, final=True)]

    def on_generated(self, outputs: list[GenerationOutput]) -> None:
        root = Node(lineage=())
        self.nodes = [
            extend(root, completion, index=i, config=self.config, answers=self.answers)
            for i, completion in enumerate(outputs[0].completions)
        ]
        delimiter = self.config.step_delimiter
        self._scoring = [
            i for i, node in enumerate(self.nodes) if node.finished and node.views(delimiter)
        ]
        self._stage = "score" if self.use_prm and self._scoring else "done"

    def prm_requests(self) -> list[PRMRequest]:
        if self._stage != "score":
            return []
        delimiter = self.config.step_delimiter
        return [prm_request(self.problem, self.nodes[i].views(delimiter)) for i in self._scoring]

    def on_scored(self, outputs: list[PRMOutput]) -> None:
        for i, out in zip(self._scoring, outputs, strict=True):
            self.nodes[i] = scored(
                self.nodes[i], out.step_scores, voting.aggregate(out.step_scores, self.config.agg)
            )
        self._stage = "done"

    def result(self, cost: Cost) -> SearchResult:
        candidates = tuple(to_candidate(n, self.config, self.answers) for n in self.nodes)
        selected = voting.select(candidates, self.selection, self.grouper, self.config.agg)
        return SearchResult(
            uid=self.problem.uid,
            strategy=self.strategy,
            candidates=candidates,
            selected=selected,
            cost=cost,
            settings=self.config.settings(),
        )


def make_work(
    problem: Problem, config: SearchConfig, answers: AnswerSpec, grouper: voting.AnswerGrouper
) -> Work:
    return SamplingWork(
        problem, config, answers, grouper, strategy="majority", use_prm=False, selection="majority"
    )


def largest_budget(budgets: Sequence[int], options: StrategyOptions) -> list[int]:
    """One run at the largest budget: smaller budgets are read off subsets of its samples."""
    return [max(budgets)]


def sampling_curves(n: int, scored: str | None) -> list[Curve]:
    """The curves of a run of ``n`` samples: majority voting, the PRM-scored selection of
    strategy ``scored`` (None: unscored samples) and coverage, at every power of two <= n."""
    budgets = tuple(powers_of_two(1, n))
    curves = [
        Curve(
            "majority",
            budgets,
            own=scored is None,
            choose=voting.choose_majority,
            prm=False,
            route="majority",
        )
    ]
    if scored is not None:
        curves.append(Curve(scored, budgets, choose=voting.choose_selected, route=scored))
    curves.append(Curve(COVERAGE, budgets, own=False, prm=False, coverage=True))
    return curves


def curves(n: int, settings: Mapping[str, Any]) -> list[Curve]:
    return sampling_curves(n, None)


SPEC = register_strategy(
    StrategySpec(
        name="majority",
        summary="n samples, majority vote over answers",
        make_work=make_work,
        needs_prm=False,
        reads=(),
        plan=largest_budget,
        curves=curves,
        undelimited_effect=None,
        one_request=True,
    )
)
