"""Which search runs a sweep needs, and the stable key of each run.

Runs, for ``strategies`` x ``budgets`` with ``N`` the largest budget and ``M`` the beam width:

- ``best_of_n`` at ``N`` (one run); it also serves ``majority``: both sample the same ``N``
  solutions from the same seed, so majority voting is read off the same trace. Without
  ``best_of_n``, ``majority`` alone runs at ``N`` (no PRM calls).
- ``dvts`` at the largest budget that is a multiple of ``M`` (one run; smaller budgets use random
  subsets of its subtrees).
- ``beam_search`` once per budget that is a multiple of ``M`` (its beams are not exchangeable).
- ``compute_optimal`` once per budget (each budget routes differently).
- ``particle_filtering`` once per budget, ``particle_gibbs`` once per budget that splits into
  ``pg_iterations`` sweeps of more than ``pg_reference_particles`` particles (particles are
  resampled together: neither is exchangeable).

A run's key is ``<strategy>-n<N>-<digest>``, the digest covering the task and everything that
changes results (search settings, policy, PRM, system prompt) but not runtime placement (device,
batch sizes, memory split), so a resumed sweep finds its earlier records.

A results folder holds runs of ONE :func:`folder_identity` (the run identity without the search
settings, plus the answer format and ``apply_chat_template``); runs of other search settings may
join it (they are reported as their own settings group), anything else needs its own folder.

What this module does not do: run anything or read results.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

DEFAULT_BEAM_WIDTH = 4


@dataclass(frozen=True)
class RunSpec:
    """One search run of a sweep: a strategy at budget ``n`` over all documents."""

    strategy: str
    n: int


def _beam_width(model_args: dict[str, Any]) -> int:
    value = model_args.get("beam_width", DEFAULT_BEAM_WIDTH)
    try:
        width = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"model_args beam_width={value!r} is not a valid int") from None
    if width < 1:
        raise ValueError(f"model_args beam_width={width} is invalid; accepted: an integer >= 1")
    return width


def tree_budgets(budgets: tuple[int, ...], beam_width: int) -> list[int]:
    """The budgets a tree search (beam_search, dvts) can run: multiples of ``beam_width``."""
    return [b for b in budgets if b >= beam_width and b % beam_width == 0]


def plan_runs(recipe: Any) -> list[RunSpec]:
    """The runs of a :class:`~tts_eval.workflow.recipe.SweepRecipe`, cheapest first."""
    strategies = recipe.sweep.strategies
    budgets = recipe.sweep.budgets
    top = max(budgets)
    width = _beam_width(dict(recipe.model_args))
    runs: list[RunSpec] = []
    if "best_of_n" in strategies:
        runs.append(RunSpec("best_of_n", top))
    elif "majority" in strategies:
        runs.append(RunSpec("majority", top))
    for strategy in ("dvts", "beam_search"):
        if strategy not in strategies:
            continue
        usable = tree_budgets(budgets, width)
        if not usable:
            raise ValueError(
                f"sweep.budgets {list(budgets)} has no budget {strategy} can run: it needs "
                f"multiples of beam_width={width}"
            )
        chosen = usable[-1:] if strategy == "dvts" else usable
        runs.extend(RunSpec(strategy, n) for n in chosen)
    if "compute_optimal" in strategies:
        runs.extend(RunSpec("compute_optimal", n) for n in budgets)
    if "particle_filtering" in strategies:
        runs.extend(RunSpec("particle_filtering", n) for n in budgets)
    if "particle_gibbs" in strategies:
        sweeps, refs = _gibbs_settings(dict(recipe.model_args))
        usable = [b for b in budgets if b % sweeps == 0 and b // sweeps > refs]
        if not usable:
            raise ValueError(
                f"sweep.budgets {list(budgets)} has no budget particle_gibbs can run: it needs "
                f"multiples of pg_iterations={sweeps} with more than "
                f"pg_reference_particles={refs} particles per sweep"
            )
        runs.extend(RunSpec("particle_gibbs", n) for n in usable)
    return runs


def _gibbs_settings(model_args: dict[str, Any]) -> tuple[int, int]:
    out = []
    for key, default in (("pg_iterations", 1), ("pg_reference_particles", 1)):
        value = model_args.get(key, default)
        try:
            out.append(int(value))
        except (TypeError, ValueError):
            raise ValueError(f"model_args {key}={value!r} is not a valid int") from None
    return out[0], out[1]


def run_identity(task: str, config: Any) -> dict[str, Any]:
    """What identifies a run's results (see the module docstring); JSON-ready."""
    engine, prm = config.engine, config.prm
    return {
        "task": task,
        "search": config.search.settings(),
        "pretrained": engine.pretrained,
        "revision": getattr(engine, "revision", None),
        "dtype": getattr(engine, "dtype", None),
        "chat_template": getattr(engine, "chat_template", None),
        "prm": None if prm is None else getattr(prm, "path", None),
        "prm_type": None if prm is None else getattr(prm, "prm_type", None),
        "system_prompt": config.system_prompt,
    }


def run_key(task: str, config: Any) -> str:
    """``<strategy>-n<N>-<digest>`` of a parsed :class:`~tts_eval.settings.TTSConfig`."""
    payload = json.dumps(run_identity(task, config), sort_keys=True, default=str)
    digest = hashlib.blake2b(payload.encode(), digest_size=5).hexdigest()
    return f"{config.search.strategy}-n{config.search.n}-{digest}"


def folder_identity(task: str, config: Any, apply_chat_template: bool) -> dict[str, Any]:
    """What every run in one results folder shares (see the module docstring); JSON-ready."""
    identity = {k: v for k, v in run_identity(task, config).items() if k != "search"}
    identity["answer"] = getattr(config, "answer", "math")
    identity["apply_chat_template"] = apply_chat_template
    return json.loads(json.dumps(identity, default=str))


def identity_digest(identity: dict[str, Any]) -> str:
    """A short digest of a :func:`folder_identity` (names the folder a sweep should use)."""
    payload = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.blake2b(payload.encode(), digest_size=4).hexdigest()
