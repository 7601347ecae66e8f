"""Majority voting (self-consistency): ``n`` full samples, the most frequent answer wins.

Also home of :class:`SamplingWork`, the "sample whole solutions, optionally score the finished ones
with the PRM, then select" state machine that ``best_of_n`` and the compute_optimal probe reuse, and
of the options both sampling strategies read (:class:`SamplingOptions`). Without a stopping rule
(``stop=none``, the default) the ``n`` samples come from ONE request (``n=n``, no stop string, the
whole ``max_tokens`` budget) seeded from ``(seed, uid, "sample")``, so majority and best_of_n runs
with the same seed see the same samples. Only finished samples are scored (a LENGTH cut-off can
never be selected), so truncated candidates carry no step scores.

Early stopping (``../shared/DESIGN.md``, "Adaptive compute"; the rules are
:mod:`tts_eval.search.stopping`): with ``stop=adaptive`` (Adaptive-Consistency, Aggarwal et al.
2023) or ``stop=esc`` (Early-Stopping Self-Consistency, Li et al. 2024) a problem's samples are
drawn ``wave`` at a time and ``n`` is the cap. After each wave the rule reads the answers drawn so
far (grouped as voting groups them; samples without an eligible answer do not vote) and the
problem stops when it fires or when ``n`` samples are drawn; every drawn sample then takes part
in the selection as in a fixed-budget run (best_of_n scores the finished ones after the last
wave). Wave ``k`` asks for samples ``d..d+w-1`` (``d`` drawn so far) with seed ``base + d``; every
engine seeds sample ``j`` of a request with ``seed + j``, so sample ``i`` is seeded ``base + i``
whatever the waves: a rule that never fires reproduces the fixed-budget run (same samples, same
selection, same tokens), and nothing depends on the batch. Problems run their waves together (one
engine call per round over every problem still drawing; a stopped problem leaves the batch). The
trace records, in ``settings``, ``samples_drawn``, ``waves``, ``stop_reason`` (the rule's last
word, or that the cap was reached) and ``stopped_at`` (the sample count at which the rule fired,
None when it did not; with ESC and waves not aligned to its window it may be below
``samples_drawn``). The cost counts what was drawn.

Answers are grouped by equivalence (``voting.AnswerGrouper``); ties: see ``voting``.

Curves (:func:`sampling_curves`): a fixed-budget run of ``n`` samples yields majority voting (and,
scored, best-of-N) at every power of two up to ``n``, read off random subsets of its samples, and
``pass@n`` (coverage); a sweep runs it once, at its largest budget. A run with a stopping rule is
not exchangeable (which samples exist depends on the rule): it yields its own curve at its cap
only, named with its options (``majority (stop=adaptive)``), and a sweep runs every budget.

What this module does not do: tree search (``beam_search``, ``dvts``), decide when to stop
(``stopping``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tts_eval.search import stopping, voting
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
    LATER_OPTION,
    Curve,
    StrategyOptions,
    StrategySpec,
    curve_name,
    each_budget,
    powers_of_two,
    register_strategy,
)
from tts_eval.settings import check_choice, check_float, check_int, invalid
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
STOPS = ("none", "adaptive", "esc")


@dataclass(frozen=True)
class SamplingOptions(StrategyOptions):
    """The early-stopping options of the sampling strategies (module docstring).

    ``stop``: ``none`` (all ``n`` samples in one request), ``adaptive`` or ``esc``. ``wave``:
    samples per wave (None: the paper's, 1 for ``adaptive``, ``esc_window`` for ``esc``); at most
    ``n``. ``stop_threshold``: Adaptive-Consistency's confidence threshold, in (0, 1).
    ``stop_prior``: its posterior, ``beta`` (leader vs runner-up) or ``dirichlet`` (all answers).
    ``esc_window``: ESC's window of identical answers, at most ``n``. The rule's parameters are
    refused with another ``stop`` (at a value other than their default).
    """

    stop: str = field(default="none", metadata=LATER_OPTION)
    wave: int | None = field(default=None, metadata=LATER_OPTION)
    stop_threshold: float = field(default=0.95, metadata=LATER_OPTION)
    stop_prior: str = field(default="beta", metadata=LATER_OPTION)
    esc_window: int = field(default=5, metadata=LATER_OPTION)

    def __post_init__(self) -> None:
        check_choice("stop", self.stop, STOPS)
        if self.wave is not None:
            check_int("wave", self.wave, 1)
        check_float(
            "stop_threshold", self.stop_threshold, "a number in (0, 1)", lambda v: 0 < v < 1
        )
        check_choice("stop_prior", self.stop_prior, stopping.PRIORS)
        check_int("esc_window", self.esc_window, 2)
        defaults = SamplingOptions.__dataclass_fields__
        readers = {
            "wave": "adaptive or esc",
            "stop_threshold": "adaptive",
            "stop_prior": "adaptive",
            "esc_window": "esc",
        }
        for key, reader in readers.items():
            value = getattr(self, key)
            if value != defaults[key].default and self.stop not in reader.split(" or "):
                raise invalid(key, value, f"only with stop={reader}, not stop={self.stop}")

    def check(self, config: SearchConfig) -> None:
        n = config.n
        if self.stop == "esc" and self.esc_window > n:
            raise invalid(
                "esc_window", self.esc_window, f"an integer in 2..n={n} (the window fits the cap)"
            )
        if self.wave is not None and self.wave > n:
            raise invalid("wave", self.wave, f"an integer in 1..n={n} (a wave fits the cap)")

    def rule(self) -> stopping.StoppingRule | None:
        """The stopping rule these options ask for (None: ``stop=none``)."""
        if self.stop == "adaptive":
            return stopping.AdaptiveConsistency(self.stop_threshold, self.stop_prior)
        if self.stop == "esc":
            return stopping.EarlyStoppingConsistency(self.esc_window)
        return None

    def wave_size(self, n: int) -> int:
        """Samples per wave (the rule's default when ``wave`` is unset), at most ``n``."""
        if self.wave is not None:
            return min(self.wave, n)
        return min(self.esc_window if self.stop == "esc" else 1, n)


class SamplingWork(Work):
    """Sample ``config.n`` solutions (in waves under a stopping rule), score finished ones
    (``use_prm``), select (``selection``)."""

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
        options = config.options
        self.rule = options.rule() if isinstance(options, SamplingOptions) else None
        self.wave = options.wave_size(config.n) if isinstance(options, SamplingOptions) else 0
        self._answers: list[str | None] = []  # eligible answers of the samples (rule input)
        self._waves = 0
        self._decision: stopping.StopDecision | None = None

    @property
    def done(self) -> bool:
        return self._stage == "done"

    def generation_requests(self) -> list[GenerationRequest]:
        if self._stage != "generate":
            return []
        seed = derive_seed(self.config.seed, self.problem.uid, self.purpose)
        drawn = len(self.nodes)
        size = self.config.n if self.rule is None else min(self.wave, self.config.n - drawn)
        # sample i is seeded seed + i (engines seed sample j of a request seed + j)
        return [step_request(self.problem, (), self.config, n=size, seed=seed + drawn, final=True)]

    def on_generated(self, outputs: list[GenerationOutput]) -> None:
        root = Node(lineage=())
        drawn = len(self.nodes)
        new = [
            extend(root, completion, index=drawn + i, config=self.config, answers=self.answers)
            for i, completion in enumerate(outputs[0].completions)
        ]
        self.nodes.extend(new)
        self._waves += 1
        if self.rule is not None:
            self._answers.extend(
                self.answers.extract(node.text) if node.finished else None for node in new
            )
            self._decision = stopping.decide(self.grouper.group(self._answers), self.rule)
            if not self._decision.stop and len(self.nodes) < self.config.n:
                return
        delimiter = self.config.step_delimiter
        self._scoring = [
            i for i, node in enumerate(self.nodes) if node.finished and node.views(delimiter)
        ]
        self._stage = "score" if self.use_prm and self._scoring else "done"

    def prm_requests(self) -> list[PRMRequest]:
        if self._stage != "score":
            return []
        return [prm_request(self.problem, self.nodes[i], self.config) for i in self._scoring]

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
            settings={**self.config.settings(), **self.stop_record()},
        )

    def stop_record(self) -> dict[str, object]:
        """What the trace says of early stopping (nothing without a rule)."""
        if self.rule is None:
            return {}
        decision = self._decision
        fired = decision is not None and decision.stop
        reason = "" if decision is None else decision.reason
        if not fired:
            reason = f"cap: all n={self.config.n} samples drawn ({reason})"
        return {
            "samples_drawn": len(self.nodes),
            "waves": self._waves,
            "stop_reason": reason,
            "stopped_at": decision.at if fired else None,
        }


def make_work(
    problem: Problem, config: SearchConfig, answers: AnswerSpec, grouper: voting.AnswerGrouper
) -> Work:
    return SamplingWork(
        problem, config, answers, grouper, strategy="majority", use_prm=False, selection="majority"
    )


def largest_budget(budgets: Sequence[int], options: StrategyOptions) -> list[int]:
    """One run at the largest budget: smaller budgets are read off subsets of its samples; with a
    stopping rule, one run per budget (a stopped run is not a subset of a larger one)."""
    if isinstance(options, SamplingOptions) and options.stop != "none":
        return each_budget(budgets, options)
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


def stopped_curves(spec: StrategySpec, n: int, settings: Mapping[str, Any]) -> list[Curve] | None:
    """The one curve of a run with a stopping rule (None for a fixed-budget run): its own
    selection at its cap, named with its options, charged the PRM when the strategy uses it."""
    if settings.get("stop", "none") == "none":
        return None
    return [Curve(curve_name(spec, settings), (n,), prm=spec.needs_prm)]


def curves(n: int, settings: Mapping[str, Any]) -> list[Curve]:
    return stopped_curves(SPEC, n, settings) or sampling_curves(n, None)


SPEC = register_strategy(
    StrategySpec(
        name="majority",
        summary="n samples, majority vote over answers",
        make_work=make_work,
        needs_prm=False,
        reads=(),
        options=SamplingOptions,
        plan=largest_budget,
        curves=curves,
        undelimited_effect=None,
        one_request=True,
    )
)
