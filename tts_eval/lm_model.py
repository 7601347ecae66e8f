"""The ``tts`` model of lm-evaluation-harness: test-time search as an lm-eval ``LM``.

``lm_eval --model tts --model_args pretrained=...,prm=...,strategy=dvts,n=64 --tasks math500``

Each ``generate_until`` batch (for math500: all 500 problems) becomes ONE search over all its
problems through a :class:`tts_eval.runtime.Searcher` (the policy engine and, for PRM-guided
strategies, a process reward model: in this process, or on K Ray workers). The selected solution goes back to lm-eval as plain text (a
:class:`~tts_eval.types.TracedText` carrying the whole trace), so every generation task works with
it; math500 also reads the trace for best-of-N style metrics. Traces can be written as JSONL with
``trace_path=``.

What this module does not do: parse ``model_args`` (``tts_eval.settings``), load models
(``tts_eval.runtime``), search (``tts_eval.search``), generate (``tts_eval.engines``) or score
steps (``tts_eval.prm``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from lm_eval.api.model import LM

from tts_eval.prompts import DESCRIPTION_SEPARATOR, SYSTEM_PROMPT
from tts_eval.runtime import Searcher
from tts_eval.settings import TTSConfig, parse_model_args
from tts_eval.types import Problem, SearchResult, TracedText

logger = logging.getLogger(__name__)

# apply_chat_template() hands lm-eval this tag + the JSON messages instead of a rendered string,
# so generate_until() gets the structured chat back and renders it to token ids itself.
CHAT_TAG = "\x1etts-chat\x1e"


def context_to_messages(context: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """Recover chat messages from an lm-eval context.

    * A context produced by :meth:`TTSLM.apply_chat_template` (``--apply_chat_template``) is the
      tagged JSON of the messages.
    * A plain context (no chat template flag) is one user turn; when it starts with the math500
      description (our ``SYSTEM_PROMPT``), that part becomes the system message again.

    ``system_prompt`` (model arg) replaces any system message when given.
    """
    if context.startswith(CHAT_TAG):
        messages = [dict(m) for m in json.loads(context[len(CHAT_TAG) :])]
    else:
        prefix = SYSTEM_PROMPT + DESCRIPTION_SEPARATOR
        if context.startswith(prefix):
            messages = [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": context[len(prefix) :]},
            ]
        else:
            messages = [{"role": "user", "content": context}]
    for m in messages:
        if m["role"] == "system":
            m["content"] = m["content"].rstrip()
    if system_prompt is not None:
        messages = [m for m in messages if m["role"] != "system"]
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def problem_text(messages: Sequence[Mapping[str, str]]) -> str:
    """The problem as the PRM sees it: the last user turn."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        raise ValueError("a request has no user message to take the problem from")
    return users[-1]


def truncate_at(text: str, until: Sequence[str]) -> str:
    """Cut ``text`` at the first of the task's stop strings (what every lm-eval model does)."""
    cut = len(text)
    for stop in until:
        if stop:
            i = text.find(stop)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


class TTSLM(LM):
    """lm-eval model running step-level test-time search (see module docstring)."""

    def __init__(
        self,
        config: TTSConfig | None = None,
        searcher: Searcher | None = None,
        **model_args: Any,
    ) -> None:
        """``config`` (or flat ``model_args``) says what to load and how to search; ``searcher``
        (an open :class:`tts_eval.runtime.Searcher`) reuses models that are already loaded: the
        caller keeps owning it. A searcher this model opens itself is closed by :meth:`close`."""
        super().__init__()
        self.config = config if config is not None else parse_model_args(model_args)
        self._searcher = searcher  # otherwise opened on first use, see _get_searcher()
        self._owns_searcher = searcher is None
        # The grader's helper processes warm up in the background while the models load.
        from tts_eval.grader.bounded import prestart

        threading.Thread(target=prestart, name="tts-eval-grader-prestart", daemon=True).start()
        if self.config.eager_load:
            self._get_searcher()

    @classmethod
    def create_from_arg_string(
        cls, arg_string: str, additional_config: dict | None = None
    ) -> TTSLM:
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        return cls(config=parse_model_args(arg_string, extra=extra))

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> TTSLM:
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        return cls(config=parse_model_args(dict(arg_dict), extra=extra))

    # ------------------------------------------------------------------ lm-eval API
    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "--model tts only supports generation tasks (output_type: generate_until); "
            "loglikelihood is not supported: use --model hf or --model vllm for this task"
        )

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(
            "--model tts only supports generation tasks (output_type: generate_until); "
            "loglikelihood_rolling is not supported: use --model hf or --model vllm for this task"
        )

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return CHAT_TAG + json.dumps(chat_history, ensure_ascii=False)

    @property
    def tokenizer_name(self) -> str:
        return self.config.engine.pretrained.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return f"tts-eval:{self.config.engine.pretrained}" if chat_template else None

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        if not requests:
            return []
        searcher = self._get_searcher()
        messages = [context_to_messages(req.args[0], self.config.system_prompt) for req in requests]
        problems = [
            Problem(
                uid=_request_uid(req, i),
                text=problem_text(msgs),
                prompt_ids=tuple(searcher.render_prompt(msgs)),
            )
            for i, (req, msgs) in enumerate(zip(requests, messages, strict=True))
        ]
        results = searcher.search(problems, self.config.search, progress=not disable_tqdm)
        outputs = []
        for req, result in zip(requests, results, strict=True):
            gen_kwargs = req.args[1] if len(req.args) > 1 and isinstance(req.args[1], dict) else {}
            until = gen_kwargs.get("until") or []
            if isinstance(until, str):
                until = [until]
            outputs.append(TracedText(truncate_at(result.selected_text, until), result))
        if self.config.trace_path:
            _append_traces(self.config.trace_path, requests, results)
        _log_cost(results)
        return outputs

    # ------------------------------------------------------------------ internals
    def close(self) -> None:
        """Close the searcher this model opened (models, GPU memory, Ray workers); a searcher
        handed in with ``searcher=`` stays open for its owner."""
        if self._owns_searcher and self._searcher is not None:
            self._searcher.close()
            self._searcher = None

    def _get_searcher(self) -> Searcher:
        if self._searcher is None:
            from tts_eval.runtime import open_searcher

            self._searcher = open_searcher(self.config)
            self._owns_searcher = True
        return self._searcher


def _request_uid(req, position: int) -> str:
    """Stable id of a request: task and doc id (never its batch position when lm-eval gives one)."""
    task = getattr(req, "task_name", None) or "task"
    doc_id = getattr(req, "doc_id", None)
    repeat = getattr(req, "idx", 0) or 0
    key = doc_id if doc_id is not None else f"pos{position}"
    return f"{task}/{key}" + (f"/r{repeat}" if repeat else "")


def _append_traces(path: str, requests, results: Sequence[SearchResult]) -> None:
    from tts_eval.traces import append_jsonl, result_record

    records = [
        result_record(result, task=getattr(req, "task_name", None), doc=getattr(req, "doc", None))
        for req, result in zip(requests, results, strict=True)
    ]
    append_jsonl(path, records)
    logger.info("wrote %d search traces to %s", len(records), path)


def _log_cost(results: Sequence[SearchResult]) -> None:
    total = sum((r.cost for r in results), start=type(results[0].cost)())
    logger.info(
        "tts search: %d problems, %d policy tokens, %d prompt tokens (%d cached), %d PRM tokens, "
        "%.1f s",
        len(results),
        total.policy_tokens,
        total.prompt_tokens,
        total.cached_prompt_tokens,
        total.prm_tokens,
        total.wall_time_s,
    )
