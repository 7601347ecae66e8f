"""The settings of one search: :class:`SearchConfig`, the shared settings plus the strategy's own.

``SearchConfig(strategy=..., n=..., temperature=..., beam_width=...)`` takes flat keywords, the
``model_args`` keys: the shared settings are its fields (sampling, ``n``, ``num_iterations``,
``agg``, ``selection``), the settings only the strategy reads go to its options dataclass
(``config.options``; :class:`~tts_eval.search.spec.StrategyOptions`, declared by the strategy's
spec). One rule for options of other strategies: given at a value other than its default, such an
option is refused (one line naming the strategies that read it); at its default it is dropped. (The
``model_args`` parser refuses them whenever they are given; ``tts_eval.model_args``.)
``dataclasses.replace`` works as for any dataclass, ``strategy`` included: the options are carried
over to the new strategy by the same rule (a compute-optimal route is such a replace).

:meth:`SearchConfig.settings` is the JSON-ready record of a search (in every ``SearchResult``): the
shared settings and the strategy's own options; :func:`search_keys` every key a search takes.

What this module does not do: parse strings (``tts_eval.model_args``), load routing tables
(``routing``) or run anything.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tts_eval.search.spec import (
    LATER_OPTION,
    StrategyOptions,
    StrategySpec,
    get_spec,
    later_option_defaults,
    not_read,
    option_defaults,
    option_owners,
    strategy_names,
)
from tts_eval.settings import check_choice, check_float, check_int, invalid

AGGREGATIONS = ("last", "min", "prod", "mean")
SELECTIONS = ("naive", "weighted")
# The policy's own confidence scores (``self_score``; ``tts_eval.search.confidence``).
SELF_SCORES = (
    "lowest_group_confidence",
    "bottom_group_confidence",
    "tail_confidence",
    "mean_confidence",
    "self_certainty",
)
# vLLM's default max_logprobs, what its engine and server return at most per token.
VLLM_MAX_LOGPROBS = 20


@dataclass(frozen=True, init=False)
class SearchConfig:
    """Settings of a search; defaults follow the published setup (DESIGN.md, Strategies).

    ``n`` is the budget (samples, candidates per step, subtrees x ``beam_width``, particles; see
    each strategy). ``max_tokens`` is a per-solution budget over all of its steps. ``options`` are
    the strategy's own settings (see the module docstring); keywords naming them are accepted
    here as well.

    ``self_score``: None (a PRM scores steps) or one of :data:`SELF_SCORES`: the policy's own
    token confidence scores the steps in place of a PRM (``prm=self``; no PRM FLOPs; see
    :class:`tts_eval.search.confidence.SelfScorer`), and for ``strategy=deepconf`` the trace score
    it votes with. ``confidence_window``: DeepConf's group window and tail, in tokens.
    ``confidence_topk``: the top-k log-probabilities asked per generated token (>= 2 for
    ``self_certainty``). The two are refused at another value than their default unless the run
    reads the policy's confidence.
    """

    strategy: str = "best_of_n"
    n: int = 4
    num_iterations: int = 40
    agg: str = "last"
    selection: str = "weighted"
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 2048
    seed: int = 0
    step_delimiter: str = "\n\n"
    self_score: str | None = dataclasses.field(default=None, metadata=LATER_OPTION)
    confidence_window: int = dataclasses.field(default=2048, metadata=LATER_OPTION)
    confidence_topk: int = dataclasses.field(default=20, metadata=LATER_OPTION)
    options: StrategyOptions = dataclasses.field(default=None)  # type: ignore[assignment]

    def __init__(self, **values: Any) -> None:
        options = values.pop("options", None)
        for f in dataclasses.fields(self):
            if f.name != "options":
                object.__setattr__(self, f.name, values.pop(f.name, f.default))
        check_choice("strategy", self.strategy, strategy_names())
        self._check_shared()
        spec = get_spec(self.strategy)
        object.__setattr__(self, "options", _options_for(spec, options, values))
        self.options.check(self)

    def _check_shared(self) -> None:
        check_int("n", self.n, 1)
        check_int("num_iterations", self.num_iterations, 1)
        check_choice("agg", self.agg, AGGREGATIONS)
        check_choice("selection", self.selection, SELECTIONS)
        check_float("temperature", self.temperature, "a number >= 0", lambda v: v >= 0)
        check_float("top_p", self.top_p, "a number in (0, 1]", lambda v: 0 < v <= 1)
        check_int("max_tokens", self.max_tokens, 1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise invalid("seed", self.seed, "an integer")
        if not isinstance(self.step_delimiter, str) or not self.step_delimiter:
            raise invalid("step_delimiter", self.step_delimiter, "a non-empty string (\\n\\n)")
        self._check_confidence()

    def _check_confidence(self) -> None:
        spec = get_spec(self.strategy)
        if self.self_score is not None:
            check_choice("self_score", self.self_score, SELF_SCORES)
            if spec.needs_prm and not spec.self_scored:
                raise invalid(
                    "self_score",
                    self.self_score,
                    f"none with strategy={self.strategy} (it reads PRM scores as probabilities, "
                    "as particle weights or difficulty bins; the policy's confidence is not one)",
                )
            if self.agg == "prod":
                raise invalid(
                    "agg",
                    self.agg,
                    "last, min or mean with self_score (confidence scores are not probabilities)",
                )
        check_int("confidence_window", self.confidence_window, 1)
        check_int("confidence_topk", self.confidence_topk, 1)
        if self.self_score == "self_certainty" and self.confidence_topk < 2:
            raise invalid(
                "confidence_topk", self.confidence_topk, "an integer >= 2 for self_certainty"
            )
        if self.logprobs_k is None:
            fields = {f.name: f.default for f in dataclasses.fields(SearchConfig)}
            for key in ("confidence_window", "confidence_topk"):
                if getattr(self, key) != fields[key]:
                    raise invalid(
                        key,
                        getattr(self, key),
                        "only with self_score=... (prm=self) or a strategy that votes by "
                        "confidence (deepconf)",
                    )

    @property
    def spec(self) -> StrategySpec:
        return get_spec(self.strategy)

    @property
    def logprobs_k(self) -> int | None:
        """The top-k log-probabilities every generation request asks for: ``confidence_topk``
        when the run reads the policy's confidence (``self_score`` in place of a PRM the strategy
        needs, or a strategy that votes by it), else None (none asked, none computed; a strategy
        without a PRM ignores ``self_score``, so a sweep's shared ``prm=self`` leaves its majority
        runs as they are)."""
        spec = get_spec(self.strategy)
        if (self.self_score is not None and spec.needs_prm) or spec.needs_logprobs:
            return self.confidence_topk
        return None

    def settings(self) -> dict[str, object]:
        """The settings as a JSON-ready dict (recorded in every ``SearchResult``): the shared
        ones and the strategy's own options."""
        out: dict[str, object] = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"
        }
        for f in dataclasses.fields(self.options):
            value = getattr(self.options, f.name)
            out[f.name] = os.fspath(value) if isinstance(value, os.PathLike) else value
        return out

    def shared(self) -> dict[str, Any]:
        """The shared settings (every field but ``options``)."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"
        }

    def with_strategy(self, strategy: str, **changes: Any) -> SearchConfig:
        """This configuration for another strategy (options carried over by the module rule)."""
        return dataclasses.replace(self, strategy=strategy, **changes)


def shared_keys() -> tuple[str, ...]:
    """The shared settings (the fields of :class:`SearchConfig` but ``options``)."""
    return tuple(f.name for f in dataclasses.fields(SearchConfig) if f.name != "options")


def shared_defaults() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(SearchConfig) if f.name != "options"}


def later_defaults() -> dict[str, Any]:
    """The settings added after results were first recorded (shared ones and strategies'
    options marked :data:`~tts_eval.search.spec.LATER_OPTION`) with their defaults: left out of a
    result's identity at their default."""
    shared = {
        f.name: f.default for f in dataclasses.fields(SearchConfig) if f.metadata.get("later")
    }
    return {**shared, **later_option_defaults()}


def search_keys() -> tuple[str, ...]:
    """Every key a search takes: the shared settings, then every registered strategy's options."""
    return (*shared_keys(), *(k for k in option_defaults() if k not in shared_keys()))


def search_defaults() -> dict[str, Any]:
    """Every key of :func:`search_keys` with its default."""
    return {**shared_defaults(), **option_defaults()}


def _options_for(
    spec: StrategySpec, given: StrategyOptions | None, values: Mapping[str, Any]
) -> StrategyOptions:
    """``spec``'s options from ``given`` (another strategy's, when the strategy changed) and
    flat keywords; options ``spec`` does not read are refused unless at their default."""
    own = set(spec.option_names)
    kept: dict[str, Any] = {}
    if given is not None:
        if not isinstance(given, StrategyOptions):
            raise TypeError(f"options must be StrategyOptions, got {type(given).__name__}")
        for f in dataclasses.fields(given):
            value = getattr(given, f.name)
            if f.name in own:
                kept[f.name] = value
            elif value != f.default:
                raise not_read(f.name, value, spec.name)
    for key, value in values.items():
        if key in own:
            kept[key] = value
            continue
        owners = option_owners(key)
        if not owners:
            raise TypeError(
                f"SearchConfig got an unknown setting {key!r}; accepted: {', '.join(search_keys())}"
            )
        default = get_spec(owners[0]).options(**{key: value})  # a bad value is named as such
        if value != getattr(type(default)(), key):
            raise not_read(key, value, spec.name)
    return spec.options(**kept)
