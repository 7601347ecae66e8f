"""The frozen, validated settings of one search run (:class:`SearchConfig`).

Field names are the flat ``model_args`` keys of ``--model tts`` (``tts_eval.config`` maps them onto
this class), so they are kept exactly as documented in DESIGN.md. Every impossible value or
combination is rejected at construction with one line naming the argument and what is accepted,
before any model loads. For ``strategy=compute_optimal`` the routing table (the built-in default or
``compute_optimal_table=<path>``) is loaded and checked here too.

What this module does not do: run a search (``tts_eval.search.run``), parse strings (the
``model_args`` adapter coerces values to the annotated types first).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any

STRATEGIES = ("majority", "best_of_n", "beam_search", "dvts", "compute_optimal")
TREE_STRATEGIES = ("beam_search", "dvts")
AGGREGATIONS = ("last", "min", "prod", "mean")
SELECTIONS = ("naive", "weighted")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")


def _check_choice(name: str, value: Any, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ValueError(f"{name} must be one of {', '.join(accepted)}; got {value!r}")


def _check_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SearchConfig:
    """Settings of a search; defaults follow the published setup (DESIGN.md, Strategies).

    ``n`` is the budget: samples for majority/best_of_n, candidates per iteration for
    beam_search (``n // beam_width`` beams are kept), ``n // beam_width`` subtrees of
    ``beam_width`` candidates each for dvts. ``max_tokens`` is a per-solution budget over all of
    its steps. ``compute_optimal_table`` is a JSON routing table (see
    :mod:`tts_eval.search.compute_optimal`); ``None`` uses the built-in default.
    """

    strategy: str = "best_of_n"
    n: int = 4
    beam_width: int = 4
    num_iterations: int = 40
    agg: str = "last"
    selection: str = "weighted"
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 2048
    seed: int = 0
    step_delimiter: str = "\n\n"
    lookahead: int = 0
    compute_optimal_table: str | None = None

    def __post_init__(self) -> None:
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_int("n", self.n, 1)
        _check_int("beam_width", self.beam_width, 1)
        _check_int("num_iterations", self.num_iterations, 1)
        _check_choice("agg", self.agg, AGGREGATIONS)
        _check_choice("selection", self.selection, SELECTIONS)
        temperature = _check_float("temperature", self.temperature)
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        top_p = _check_float("top_p", self.top_p)
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        _check_int("max_tokens", self.max_tokens, 1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if not isinstance(self.step_delimiter, str) or not self.step_delimiter:
            raise ValueError(
                f"step_delimiter must be a non-empty string (default '\\n\\n'), "
                f"got {self.step_delimiter!r}"
            )
        _check_int("lookahead", self.lookahead, 0)
        if self.strategy in TREE_STRATEGIES:
            if self.n < self.beam_width:
                raise ValueError(
                    f"n={self.n} must be >= beam_width={self.beam_width} for "
                    f"strategy={self.strategy}"
                )
            if self.n % self.beam_width:
                raise ValueError(
                    f"n={self.n} must be a multiple of beam_width={self.beam_width} for "
                    f"strategy={self.strategy} (e.g. n={self.n - self.n % self.beam_width} or "
                    f"n={self.n + self.beam_width - self.n % self.beam_width})"
                )
        if self.lookahead and self.strategy not in (*TREE_STRATEGIES, "compute_optimal"):
            raise ValueError(
                f"lookahead={self.lookahead} applies to strategy=beam_search or dvts only; "
                f"use lookahead=0 with strategy={self.strategy}"
            )
        table = self.compute_optimal_table
        if table is not None:
            if not isinstance(table, (str, os.PathLike)) or not str(table):
                raise ValueError(
                    f"compute_optimal_table must be a path to a JSON table or None, got {table!r}"
                )
            if self.strategy != "compute_optimal":
                raise ValueError(
                    "compute_optimal_table is only used with strategy=compute_optimal; "
                    f"got strategy={self.strategy}"
                )
        if self.strategy == "compute_optimal":
            from tts_eval.search.compute_optimal import load_table

            load_table(table).check_budget(self.n)

    def settings(self) -> dict[str, object]:
        """The settings as a JSON-ready dict (recorded in every ``SearchResult``)."""
        out = asdict(self)
        if out["compute_optimal_table"] is not None:
            out["compute_optimal_table"] = os.fspath(out["compute_optimal_table"])
        return out
