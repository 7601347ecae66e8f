"""Silent degradations of a search: counted per result, warned about once per batch.

Every :class:`~tts_eval.types.SearchResult` of :func:`tts_eval.search.run_search` carries
``settings["diagnostics"]`` (trace record version 2, :mod:`tts_eval.traces`):

- ``steps_without_delimiter``: how many of the result's candidates never contain the step
  delimiter (``step_delimiter``) anywhere in their text, so the whole solution is one step: the PRM
  scored it once, and beam search / DVTS could not branch (a delimiter that never occurs quietly
  turns them into one iteration of sampling).
- ``no_finished_candidate``: no candidate finished (each was cut off at ``max_tokens`` or stopped
  at ``num_iterations``).
- ``empty_response``: nothing could be selected (no finished candidate, or none with an answer),
  so the response handed to lm-eval is the empty string.

:func:`warn_batch` logs one WARNING per kind over a batch: when more than half of the problems
whose candidates have text are *undelimited* (every candidate without the delimiter; the
threshold tolerates short one-step answers to easy problems, which are legitimate), and when any
problem has an empty response. A strategy that never splits steps (majority voting; its spec's
``undelimited_effect`` is None) is not warned about delimiters (its counts are recorded all the
same).

Records written before version 2 lack the entry; :func:`diagnose` recomputes it from a result's
candidates and settings (the report does so).

What this module does not do: change any search (it only observes results).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from tts_eval.search.config import SearchConfig
from tts_eval.types import SearchResult

logger = logging.getLogger(__name__)

DIAGNOSTICS_KEY = "diagnostics"
UNDELIMITED_SHARE = 0.5  # warn when more than this share of a batch's problems is undelimited


def diagnose(result: SearchResult, step_delimiter: str | None = None) -> dict[str, Any]:
    """The diagnostics of one result (see the module docstring); JSON-ready."""
    delimiter = step_delimiter or str(
        result.settings.get("step_delimiter", SearchConfig.step_delimiter)
    )
    texts = [c.text for c in result.candidates]
    return {
        "steps_without_delimiter": sum(1 for t in texts if t.strip() and delimiter not in t),
        "no_finished_candidate": not any(c.finished for c in result.candidates),
        "empty_response": result.selected is None,
    }


def diagnostics_of(result: SearchResult) -> dict[str, Any]:
    """The recorded diagnostics of a result, or recomputed ones for an older record."""
    recorded = result.settings.get(DIAGNOSTICS_KEY)
    return dict(recorded) if isinstance(recorded, Mapping) else diagnose(result)


def undelimited(result: SearchResult, diagnostics: Mapping[str, Any]) -> bool:
    """Whether every candidate with text lacks the delimiter (and there is at least one)."""
    with_text = sum(1 for c in result.candidates if c.text.strip())
    return with_text > 0 and diagnostics["steps_without_delimiter"] == with_text


def annotate(results: Sequence[SearchResult], config: SearchConfig) -> list[SearchResult]:
    """``results`` with ``settings["diagnostics"]`` set."""
    return [
        dataclasses.replace(
            r,
            settings={**r.settings, DIAGNOSTICS_KEY: diagnose(r, config.step_delimiter)},
        )
        for r in results
    ]


def _examples(uids: Sequence[str]) -> str:
    shown = ", ".join(uids[:3])
    return shown + (f", ... ({len(uids)} in all)" if len(uids) > 3 else "")


def warn_batch(results: Sequence[SearchResult], config: SearchConfig) -> None:
    """Log the batch's degradations (see the module docstring); silent when there are none."""
    if not results:
        return
    diags = [diagnostics_of(r) for r in results]
    with_text = [
        (r, d)
        for r, d in zip(results, diags, strict=True)
        if any(c.text.strip() for c in r.candidates)
    ]
    flat = [r.uid for r, d in with_text if undelimited(r, d)]
    effect = config.spec.undelimited_effect
    if effect is not None and flat and len(flat) > UNDELIMITED_SHARE * len(with_text):
        logger.warning(
            "search[%s]: step_delimiter=%r never occurs in any solution of %d of %d problems (%s): "
            "%s; set step_delimiter to the separator the policy writes between steps",
            config.strategy,
            config.step_delimiter,
            len(flat),
            len(with_text),
            _examples(flat),
            effect,
        )
    empty = [r.uid for r, d in zip(results, diags, strict=True) if d["empty_response"]]
    if empty:
        unfinished = sum(1 for d in diags if d["no_finished_candidate"])
        logger.warning(
            "search[%s]: %d of %d problems have an empty response (%s): %d with no finished "
            "candidate (cut off at max_tokens=%d or stopped at num_iterations=%d), %d with no "
            "answer in any finished candidate",
            config.strategy,
            len(empty),
            len(results),
            _examples(empty),
            unfinished,
            config.max_tokens,
            config.num_iterations,
            len(empty) - unfinished,
        )
