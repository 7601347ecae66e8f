"""Which search runs a sweep needs, and the stable key of each run.

Each strategy's spec says how a sweep plans it (``StrategySpec.plan``: the budgets it runs at,
given the sweep's budgets and its own options) and which curves a run yields
(``StrategySpec.curves``); for the built-in strategies, with ``N`` the largest budget and ``M`` the
beam width: ``best_of_n`` and ``majority`` once at ``N``, ``dvts`` once at the largest multiple of
``M``, ``beam_search`` at every multiple of ``M``, ``compute_optimal`` and ``particle_filtering``
at every budget, ``particle_gibbs`` at every budget that splits into its sweeps. A planned run is
left out when another planned run yields every curve point it would (a ``majority`` run beside a
``best_of_n`` run at the same ``N``: both sample the same solutions from the same seed, so
majority voting is read off the ``best_of_n`` trace). Runs that serve several budgets come first,
then the others, each in registry order.

A run's key is ``<strategy>-n<N>-<digest>``, the digest of the run's
:func:`tts_eval.config.result_identity` (the task and every setting that can change a record, not
placement: devices, batch sizes, a server's address), so a resumed sweep finds its earlier records
and never those made under other settings.

A results folder holds runs of ONE :func:`folder_identity` (the result identity without the search
settings, plus ``apply_chat_template``); runs of other search settings may join it (they are
reported as their own settings group), anything else needs its own folder.

What this module does not do: run anything or read results.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tts_eval.config import TABLE_DIGEST_KEY, TTSConfig, identity_digest, result_identity
from tts_eval.errors import in_context
from tts_eval.search import StrategyOptions, StrategySpec, get_spec, strategy_names
from tts_eval.settings import coerce

# Identity keys that differ between the runs of one folder (the search, and what it names).
_RUN_KEYS = ("search", TABLE_DIGEST_KEY, "max_tokens_from_task")


@dataclass(frozen=True)
class RunSpec:
    """One search run of a sweep: a strategy at budget ``n`` over all documents."""

    strategy: str
    n: int


def options_of(spec: StrategySpec, model_args: Mapping[str, Any]) -> StrategyOptions:
    """``spec``'s own options from a recipe's ``model_args`` (raw values; the others ignored)."""
    hints = typing.get_type_hints(spec.options)
    given = {k: coerce(k, v, hints[k]) for k, v in model_args.items() if k in spec.option_names}
    return spec.options(**given)


def _points(spec: StrategySpec, n: int, options: StrategyOptions) -> frozenset[tuple[str, int]]:
    settings = {"strategy": spec.name, "n": n, **dataclasses.asdict(options)}
    return frozenset(
        (curve.name, budget) for curve in spec.curves_of(n, settings) for budget in curve.budgets
    )


def plan_runs(recipe: Any) -> list[RunSpec]:
    """The runs of a :class:`~tts_eval.workflow.recipe.SweepRecipe` (see the module docstring)."""
    budgets = tuple(recipe.sweep.budgets)
    order = strategy_names()
    planned: list[tuple[RunSpec, frozenset[tuple[str, int]]]] = []
    for name in sorted(recipe.sweep.strategies, key=order.index):
        spec = get_spec(name)
        try:
            options = options_of(spec, recipe.model_args)
        except ValueError as exc:
            raise in_context(exc, f"strategy={name}") from None
        for n in spec.plan(budgets, options):
            planned.append((RunSpec(name, n), _points(spec, n, options)))
    kept = []
    for i, (run, points) in enumerate(planned):
        covered = any(
            points < other or (points == other and j < i)
            for j, (_, other) in enumerate(planned)
            if j != i
        )
        if not covered:
            kept.append((run, points))
    serving = {run.strategy for run, points in kept if len({n for _, n in points}) > 1}
    kept.sort(key=lambda rp: (rp[0].strategy not in serving, order.index(rp[0].strategy)))
    return [run for run, _ in kept]


def run_key(task: str, config: TTSConfig) -> str:
    """``<strategy>-n<N>-<digest of the result identity>``."""
    digest = identity_digest(result_identity(config, task))
    return f"{config.search.strategy}-n{config.search.n}-{digest}"


def folder_identity(task: str, config: TTSConfig, apply_chat_template: bool) -> dict[str, Any]:
    """What every run in one results folder shares (see the module docstring); JSON-ready."""
    identity = {k: v for k, v in result_identity(config, task).items() if k not in _RUN_KEYS}
    identity["apply_chat_template"] = apply_chat_template
    return identity


def folder_digest(identity: Mapping[str, Any]) -> str:
    """A short digest of a :func:`folder_identity` (names the folder a sweep should use)."""
    return identity_digest(identity, size=4)
