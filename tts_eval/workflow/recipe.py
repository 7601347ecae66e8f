"""Sweep recipes: a YAML file with the shared ``model_args`` and a ``sweep:`` section.

A recipe looks like::

    description: free text (optional)
    model_args:            # read by --model_args config=<file> too (tts_eval.settings.load_recipe)
      pretrained: meta-llama/Llama-3.2-1B-Instruct
      prm: RLHFlow/Llama3.1-8B-PRM-Deepseek-Data
      strategy: dvts       # what a single `--model tts` run uses; a sweep sets strategy and n
      n: 64
    sweep:                 # read only by `tts-eval sweep`
      task: math500
      strategies: [majority, best_of_n, beam_search, dvts]
      budgets: [4, 16, 64, 256]
      limit: null          # first `limit` documents of the task, or all
      output_dir: results/llama-1b
      chunk_size: 50       # documents per lm-eval call (one search batch); records land per chunk
      apply_chat_template: true
      include_path: null   # extra lm-eval task folder

:func:`load_sweep_recipe` validates everything (unknown keys, types, every run's ``model_args``
through :func:`tts_eval.settings.parse_model_args`) before anything loads; each error is one line
naming the file and the key. The command line can override ``model_args`` keys and the sweep keys
of :data:`CLI_SWEEP_KEYS` (``tts-eval sweep --limit 20 --budgets 4,16 --strategies best_of_n``);
the recipe keeps what was overridden (:attr:`SweepRecipe.overrides`, recorded in the results
folder's manifest). A strategy's own options (``beam_width``, ``pf_temperature``, ...) reach only
the runs of strategies that read them; with ``--strategies``, the recipe's options that only the
strategies left out read are dropped, with a log line.

What this module does not do: run anything (``tts_eval.workflow.sweep``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tts_eval.config import TTSConfig
from tts_eval.errors import DataError, SettingError, in_context
from tts_eval.search import get_spec, strategy_names
from tts_eval.search.spec import option_owners, spoken_list

logger = logging.getLogger(__name__)

TOP_KEYS = ("description", "model_args", "sweep")
# Sweep keys the command line may override (tts-eval sweep --limit/--budgets/--strategies/...).
CLI_SWEEP_KEYS = ("strategies", "budgets", "limit", "chunk_size")
# model_args keys a sweep manages itself.
MANAGED_KEYS = ("strategy", "n", "trace_path")


@dataclass(frozen=True)
class SweepSettings:
    """The ``sweep:`` section of a recipe, validated."""

    strategies: tuple[str, ...]
    budgets: tuple[int, ...]
    task: str = "math500"
    limit: int | None = None
    output_dir: str = "results"
    chunk_size: int = 50
    apply_chat_template: bool = True
    include_path: str | None = None

    def __post_init__(self) -> None:
        names = strategy_names()
        if not self.strategies:
            raise DataError(f"sweep.strategies must list at least one of {', '.join(names)}")
        for s in self.strategies:
            if s not in names:
                raise DataError(
                    f"sweep.strategies has unknown strategy {s!r}; accepted: {', '.join(names)}"
                )
        if len(set(self.strategies)) != len(self.strategies):
            raise DataError(f"sweep.strategies lists a strategy twice: {list(self.strategies)}")
        if not self.budgets:
            raise DataError("sweep.budgets must list at least one budget (e.g. [4, 16, 64, 256])")
        for b in self.budgets:
            if isinstance(b, bool) or not isinstance(b, int) or b < 1 or b & (b - 1):
                raise DataError(
                    f"sweep.budgets has {b!r}; accepted: powers of two >= 1 (1, 2, 4, ..., 256)"
                )
        if list(self.budgets) != sorted(set(self.budgets)):
            raise DataError(f"sweep.budgets must be strictly increasing, got {list(self.budgets)}")
        if not isinstance(self.task, str) or not self.task:
            raise DataError(f"sweep.task must be an lm-eval task name, got {self.task!r}")
        if self.limit is not None and (
            isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1
        ):
            raise DataError(f"sweep.limit must be an integer >= 1 or null, got {self.limit!r}")
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise DataError(f"sweep.output_dir must be a folder path, got {self.output_dir!r}")
        if (
            isinstance(self.chunk_size, bool)
            or not isinstance(self.chunk_size, int)
            or self.chunk_size < 1
        ):
            raise DataError(f"sweep.chunk_size must be an integer >= 1, got {self.chunk_size!r}")
        if not isinstance(self.apply_chat_template, bool):
            raise DataError(
                f"sweep.apply_chat_template must be true or false, got {self.apply_chat_template!r}"
            )
        if self.include_path is not None and not isinstance(self.include_path, str):
            raise DataError(
                f"sweep.include_path must be a folder path or null, got {self.include_path!r}"
            )


SWEEP_KEYS = tuple(f.name for f in dataclasses.fields(SweepSettings))


@dataclass(frozen=True)
class SweepRecipe:
    """A validated recipe: shared ``model_args`` (without strategy/n) and the sweep settings."""

    model_args: Mapping[str, Any]
    sweep: SweepSettings
    source: str = "<dict>"
    description: str = ""
    # What the command line overrode: {"model_args": {...}, "sweep": {...}} (only keys given).
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def run_model_args(self, strategy: str, n: int) -> dict[str, Any]:
        """The flat ``model_args`` of one run of the sweep (:func:`run_model_args`)."""
        return run_model_args(self.model_args, strategy, n)

    def run_config(self, strategy: str, n: int) -> TTSConfig:
        """The checked configuration of one run of the sweep (:func:`run_config`)."""
        return run_config(self.model_args, strategy, n)


def run_model_args(model_args: Mapping[str, Any], strategy: str, n: int) -> dict[str, Any]:
    """The flat ``model_args`` of one run: the recipe's, without the options only other
    strategies read (so one recipe can set them beside strategies that refuse them)."""
    own = get_spec(strategy).option_names
    kept = {k: v for k, v in model_args.items() if not option_owners(k) or k in own}
    return {**kept, "strategy": strategy, "n": n}


def run_config(model_args: Mapping[str, Any], strategy: str, n: int) -> TTSConfig:
    """The configuration one run of a sweep searches with: the recipe's ``model_args`` for
    ``strategy`` at ``n``, with the recipe's ``max_tokens`` (a task's ``max_gen_toks`` never sets
    it in a sweep)."""
    from tts_eval.model_args import parse_model_args

    config = parse_model_args(run_model_args(model_args, strategy, n), shared=set(model_args))
    return dataclasses.replace(config, max_tokens_from_task=False)


def _read_yaml(path: str | os.PathLike) -> Any:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise DataError(f"recipe {os.fspath(path)}: no such file (see configs/*.yaml)")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"recipe {os.fspath(path)} is not valid YAML: {first}") from None


def parse_sweep_recipe(
    data: Any,
    source: str = "<dict>",
    overrides: Mapping[str, Any] | None = None,
    sweep_overrides: Mapping[str, Any] | None = None,
) -> SweepRecipe:
    """Validate decoded recipe data; ``overrides`` replace ``model_args`` keys (as ``config=``),
    ``sweep_overrides`` the sweep keys of :data:`CLI_SWEEP_KEYS` (module docstring)."""
    if not isinstance(data, dict):
        raise DataError(f"recipe {source} must be a mapping with keys {', '.join(TOP_KEYS)}")
    unknown = sorted(set(map(str, data)) - set(TOP_KEYS))
    if unknown:
        raise DataError(
            f"recipe {source} has unknown top-level key(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(TOP_KEYS)}"
        )
    model_args = data.get("model_args")
    if not isinstance(model_args, dict) or not model_args:
        raise DataError(f"recipe {source} needs a model_args: mapping (pretrained, prm, ...)")
    sweep = data.get("sweep")
    if not isinstance(sweep, dict):
        raise DataError(
            f"recipe {source} needs a sweep: mapping (strategies, budgets, task, output_dir, ...)"
        )
    unknown = sorted(set(map(str, sweep)) - set(SWEEP_KEYS))
    if unknown:
        raise DataError(
            f"recipe {source} has unknown sweep key(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(SWEEP_KEYS)}"
        )
    values = dict(sweep)
    for key in ("strategies", "budgets"):
        if key in values:
            if not isinstance(values[key], list):
                raise DataError(f"recipe {source}: sweep.{key} must be a list")
            values[key] = tuple(values[key])
    cli = dict(sweep_overrides or {})
    unknown = sorted(set(cli) - set(CLI_SWEEP_KEYS))
    if unknown:
        raise DataError(
            f"sweep override(s) {', '.join(unknown)} are not accepted; accepted: "
            f"{', '.join(CLI_SWEEP_KEYS)}"
        )
    values.update({k: tuple(v) if isinstance(v, list) else v for k, v in cli.items()})
    where = f"recipe {source}" + (
        f" (with --{', --'.join(sorted(cli))} from the command line)" if cli else ""
    )
    try:
        settings = SweepSettings(**{str(k): v for k, v in values.items()})
    except TypeError:
        raise DataError(f"{where}: sweep needs strategies: [...] and budgets: [...]") from None
    except ValueError as exc:
        raise DataError(f"{where}: {exc}") from None

    args = {str(k): v for k, v in model_args.items()}
    if "strategies" in cli:
        args = _without_keys_of_dropped_strategies(args, settings.strategies, source)
    args.update(overrides or {})
    if "trace_path" in args:
        raise DataError(
            f"recipe {source}: model_args trace_path is managed by the sweep "
            "(records go to sweep.output_dir); remove it"
        )
    shared = {k: v for k, v in args.items() if k not in MANAGED_KEYS}
    given = {"model_args": dict(overrides or {}), "sweep": cli}
    recipe = SweepRecipe(
        shared,
        settings,
        source,
        str(data.get("description") or ""),
        {k: v for k, v in given.items() if v},
    )
    validate_runs(recipe)
    return recipe


def _without_keys_of_dropped_strategies(
    args: dict[str, Any], strategies: tuple[str, ...], source: str
) -> dict[str, Any]:
    """The recipe's ``model_args`` without the settings that only strategies left out by
    ``--strategies`` read (they would be refused as unused)."""
    unused = [
        key for key in args if option_owners(key) and not set(option_owners(key)) & set(strategies)
    ]
    if unused:
        logger.info(
            "recipe %s: --strategies %s leaves out every strategy that reads %s; not used",
            source,
            ",".join(strategies),
            ", ".join(unused),
        )
    return {k: v for k, v in args.items() if k not in unused}


def load_sweep_recipe(
    path: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
    sweep_overrides: Mapping[str, Any] | None = None,
) -> SweepRecipe:
    """Read and validate a recipe file (see the module docstring)."""
    return parse_sweep_recipe(_read_yaml(path), os.fspath(path), overrides, sweep_overrides)


def validate_runs(recipe: SweepRecipe) -> None:
    """Check every planned run's ``model_args`` (nothing loads); one line on the first error."""
    from tts_eval.workflow.plan import plan_runs

    for key, value in recipe.model_args.items():
        owners = option_owners(key)
        if owners and not set(owners) & set(recipe.sweep.strategies):
            raise SettingError(
                key,
                value,
                f"only with strategy={spoken_list(owners)}",
                scope=f"recipe {recipe.source}: model_args",
                message=f"recipe {recipe.source}: model_args {key} is read only by strategy="
                f"{spoken_list(owners)}, which sweep.strategies does not list",
            )
    try:
        runs = plan_runs(recipe)
    except ValueError as exc:
        raise in_context(exc, f"recipe {recipe.source}") from None
    for run in runs:
        try:
            recipe.run_config(run.strategy, run.n)
        except ValueError as exc:
            raise in_context(
                exc, f"recipe {recipe.source}: run strategy={run.strategy} n={run.n}"
            ) from None
