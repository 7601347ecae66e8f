"""What a search strategy is: its :class:`StrategySpec`, and the registry of specs.

Each strategy module of this package declares one spec and registers it
(:func:`register_strategy`); the registry is the only list of strategies. Everything that needs to
know about strategies reads it: the settings (:class:`~tts_eval.search.config.SearchConfig` checks
``strategy`` and the strategy's own options), the compute-optimal routing table (which strategies
it may route to), the sweep planner (which budgets a strategy runs at), the estimator (which
accuracy curves a run yields) and the reports. A strategy defined outside this package (a plugin, a
test) registers its spec the same way and is then accepted everywhere, from ``--model_args`` to
``tts-eval compare``.

A spec says:

- ``name``, ``summary``;
- ``make_work``: the per-problem state machine (a :class:`~tts_eval.search._driver.Work`);
- ``needs_prm``, ``tree`` (``n // beam_width`` beams or subtrees), ``routable`` (a compute-optimal
  table may send problems to it);
- ``options``: the frozen dataclass of the settings only this strategy reads
  (:class:`StrategyOptions`; its fields are ``model_args`` keys, with defaults and checks);
  ``reads``: the shared settings (:data:`SHARED_READS`) it reads beyond sampling;
- ``plan``: the budgets a sweep runs it at, given the sweep's budgets and its options;
- ``curves``: the accuracy curves one run at budget ``n`` yields (:class:`Curve`);
- ``undelimited_effect``: what a step delimiter that never occurs does to it (None: it never splits
  steps, nothing to warn about); ``scores_samples``: its candidates are independent whole samples
  whose finished ones the PRM scored (a compute-optimal probe's expectation can be read off it;
  a callable of a run's recorded settings where that depends on them: not for a run that stopped
  or pruned early);
  ``one_request``: it samples every candidate of a problem in one request (the prompt is processed
  once); ``self_scored``: a strategy that needs a PRM may score with the policy's own confidence
  instead (``self_score``; not one that reads PRM scores as probabilities, as particle weights
  do); ``needs_logprobs``: it reads the policy's token log-probabilities itself (DeepConf's vote).

What this module does not do: validate a whole search configuration (``config``) or run anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tts_eval.errors import SettingError
from tts_eval.types import Candidate

# The shared search settings a strategy may read beyond sampling (n, temperature, top_p,
# max_tokens, seed, step_delimiter: read by every strategy).
SHARED_READS = ("num_iterations", "agg", "selection")

# (problem, SearchConfig, AnswerSpec, AnswerGrouper) -> the problem's Work (``_driver``). Typed
# loosely here: this module sits below the config, the driver and voting, which all import it.
WorkFactory = Callable[..., Any]
# How a curve selects among a subset of a run's candidates: (candidates, AnswerGrouper, run
# settings) -> the index selected, or None.
Chooser = Callable[[Sequence[Candidate], Any, Mapping[str, Any]], "int | None"]


# Field metadata of an option that is a setting of the whole sweep (a report's settings group)
# rather than part of a run's curve name: ``beam_width`` of the tree strategies, say.
GROUP_OPTION = {"curve": False, "group": True}
# Field metadata of an option added to a strategy after its results were first recorded: at its
# default it is left out of a result's identity (``tts_eval.config.result_identity``), so the runs
# recorded before it existed keep their keys (a sweep resumes them).
LATER_OPTION = {"later": True}


@dataclass(frozen=True)
class StrategyOptions:
    """Base of a strategy's own settings: a frozen dataclass whose fields are ``model_args`` keys.

    Subclasses check their values in ``__post_init__`` (one-line
    :class:`~tts_eval.errors.SettingError` each) and what needs the whole search configuration
    (the budget ``n``, say) in :meth:`check`. By default an option at another value than its
    default names the run's curve (``particle_gibbs (pg_iterations=4)``). Field metadata changes
    that: ``"curve": False`` keeps it out of curve names (a file path, say), and
    :data:`GROUP_OPTION` makes it a setting of the report's settings group instead.
    """

    def check(self, config: Any) -> None:
        """Checks that need the whole configuration (a ``SearchConfig`` whose ``options`` is
        ``self``)."""


@dataclass(frozen=True)
class NoOptions(StrategyOptions):
    """The options of a strategy that has none."""


@dataclass(frozen=True)
class Curve:
    """One accuracy curve a run yields (``tts_eval.workflow.estimate`` computes it).

    ``budgets``: the ``n`` it has a point at. ``own``: at the run's budget the run's own recorded
    selection is this curve. ``choose``: how a subset of the run's items is selected at smaller
    budgets (None: only the run's own budget). ``groups``: the exchangeable items are whole groups
    of candidates (``Candidate.group``: DVTS subtrees) rather than single candidates. ``prm``: the
    curve is charged the run's PRM tokens. ``coverage``: whether any of ``n`` samples is correct
    (an oracle, not a system). ``route``: the strategy a compute-optimal table would route to for
    this curve (None: it cannot be routed to).
    """

    name: str
    budgets: tuple[int, ...]
    own: bool = True
    choose: Chooser | None = None
    groups: bool = False
    prm: bool = True
    coverage: bool = False
    route: str | None = None


def each_budget(budgets: Sequence[int], options: StrategyOptions) -> list[int]:
    """The default plan: one run per budget (a strategy whose runs are not exchangeable)."""
    return list(budgets)


@dataclass(frozen=True)
class StrategySpec:
    """One search strategy (see the module docstring)."""

    name: str
    summary: str
    make_work: WorkFactory
    needs_prm: bool
    tree: bool = False
    routable: bool = True
    options: type[StrategyOptions] = NoOptions
    reads: tuple[str, ...] = SHARED_READS
    plan: Callable[[Sequence[int], Any], list[int]] = each_budget
    curves: Callable[[int, Mapping[str, Any]], list[Curve]] | None = None
    undelimited_effect: str | None = "the PRM scored each solution as a single step"
    scores_samples: bool | Callable[[Mapping[str, Any]], bool] = False
    one_request: bool = False
    self_scored: bool = True
    needs_logprobs: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"a strategy name must be an identifier, got {self.name!r}")
        if not (isinstance(self.options, type) and issubclass(self.options, StrategyOptions)):
            raise TypeError(f"strategy {self.name}: options must be a StrategyOptions subclass")
        if not dataclasses.is_dataclass(self.options):
            raise TypeError(f"strategy {self.name}: options must be a frozen dataclass")
        unknown = sorted(set(self.reads) - set(SHARED_READS))
        if unknown:
            raise ValueError(
                f"strategy {self.name}: reads {unknown}; accepted: {', '.join(SHARED_READS)}"
            )

    @property
    def option_names(self) -> tuple[str, ...]:
        """The ``model_args`` keys of this strategy's own options."""
        return tuple(f.name for f in dataclasses.fields(self.options))

    def default_options(self) -> StrategyOptions:
        return self.options()

    def scores_samples_of(self, settings: Mapping[str, Any]) -> bool:
        """Whether a run with these (recorded) settings scores independent whole samples."""
        if callable(self.scores_samples):
            return bool(self.scores_samples(settings))
        return bool(self.scores_samples)

    def curves_of(self, n: int, settings: Mapping[str, Any]) -> list[Curve]:
        """The curves one run at budget ``n`` with these (recorded) settings yields."""
        if self.curves is not None:
            return self.curves(n, settings)
        return [Curve(curve_name(self, settings), (n,), route=self.name if self.routable else None)]

    def named_options(self, settings: Mapping[str, Any]) -> list[tuple[str, Any]]:
        """This strategy's own options in ``settings`` that differ from their defaults (those
        shown in curve names)."""
        out = []
        for f in dataclasses.fields(self.options):
            if not f.metadata.get("curve", True) or f.name not in settings:
                continue
            if settings[f.name] != f.default:
                out.append((f.name, settings[f.name]))
        return out


def curve_name(spec: StrategySpec, settings: Mapping[str, Any]) -> str:
    """``strategy``, followed by its own options that are not at their defaults:
    ``particle_filtering (pf_temperature=0.5, resampling=systematic)``."""
    shown = [f"{key}={value}" for key, value in sorted(spec.named_options(settings))]
    return f"{spec.name} ({', '.join(shown)})" if shown else spec.name


_REGISTRY: dict[str, StrategySpec] = {}


def register_strategy(spec: StrategySpec, *, replace: bool = False) -> StrategySpec:
    """Add ``spec`` to the registry (once per name; ``replace=True`` swaps a registered one).

    An option key may be shared by several strategies only with the same default (its meaning in
    ``model_args`` must not depend on the strategy).
    """
    if not isinstance(spec, StrategySpec):
        raise TypeError(f"register_strategy takes a StrategySpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"strategy {spec.name!r} is registered already")
    for other in _REGISTRY.values():
        if other.name == spec.name:
            continue
        theirs = {f.name: f.default for f in dataclasses.fields(other.options)}
        for f in dataclasses.fields(spec.options):
            if f.name in theirs and theirs[f.name] != f.default:
                raise ValueError(
                    f"strategy {spec.name}: option {f.name} defaults to {f.default!r}, but "
                    f"strategy {other.name} has it default to {theirs[f.name]!r}"
                )
    _REGISTRY[spec.name] = spec
    return spec


def unregister_strategy(name: str) -> None:
    """Remove a registered strategy (tests that register one of their own clean up with it)."""
    _REGISTRY.pop(name, None)


def strategy_names() -> tuple[str, ...]:
    """Every registered strategy, in registration order."""
    return tuple(_REGISTRY)


def strategy_specs() -> tuple[StrategySpec, ...]:
    return tuple(_REGISTRY.values())


def get_spec(name: str) -> StrategySpec:
    """The spec of strategy ``name``; a one-line :class:`SettingError` for an unknown one."""
    spec = _REGISTRY.get(name)
    if spec is None:
        raise SettingError("strategy", name, ", ".join(_REGISTRY))
    return spec


def routable_names() -> tuple[str, ...]:
    return tuple(s.name for s in _REGISTRY.values() if s.routable)


def option_owners(key: str) -> tuple[str, ...]:
    """The strategies whose own options include ``key`` (registration order)."""
    return tuple(s.name for s in _REGISTRY.values() if key in s.option_names)


def group_option_keys() -> tuple[str, ...]:
    """The registered options that are settings of a settings group (:data:`GROUP_OPTION`)."""
    keys: dict[str, None] = {}
    for spec in _REGISTRY.values():
        for f in dataclasses.fields(spec.options):
            if f.metadata.get("group"):
                keys[f.name] = None
    return tuple(keys)


def later_option_defaults() -> dict[str, Any]:
    """The registered options marked :data:`LATER_OPTION`, with their defaults."""
    out: dict[str, Any] = {}
    for spec in _REGISTRY.values():
        for f in dataclasses.fields(spec.options):
            if f.metadata.get("later"):
                out.setdefault(f.name, f.default)
    return out


def option_defaults() -> dict[str, Any]:
    """Every registered option key with its default (first registration wins; defaults agree)."""
    out: dict[str, Any] = {}
    for spec in _REGISTRY.values():
        for f in dataclasses.fields(spec.options):
            out.setdefault(f.name, f.default)
    return out


def spoken_list(names: Sequence[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} or {names[-1]}"


def not_read(key: str, value: Any, strategy: str) -> SettingError:
    """The one error of an option given with a strategy that does not read it."""
    owners = option_owners(key)
    return SettingError(
        key, value, f"only with strategy={spoken_list(owners)}, not strategy={strategy}"
    )


def powers_of_two(low: int, high: int) -> list[int]:
    """The powers of two in ``[low, high]``."""
    out, n = [], 1
    while n <= high:
        if n >= low:
            out.append(n)
        n *= 2
    return out
