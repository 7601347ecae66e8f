"""The ``tts`` model of lm-evaluation-harness: test-time search as an lm-eval ``LM``.

``lm_eval --model tts --model_args pretrained=...,prm=...,strategy=dvts,n=64 --tasks math500``

Each ``generate_until`` batch (for math500: all 500 problems) becomes ONE search over all its
problems through a :class:`tts_eval.runtime.Searcher` (the policy engine and, for PRM-guided
strategies, a process reward model: in this process, or on K Ray workers). The selected solution
goes back to lm-eval as plain text (a :class:`~tts_eval.types.TracedText` carrying the whole
trace), so every generation task works with it; math500 also reads the trace for best-of-N style
metrics. Traces can be written as JSONL with ``trace_path=``.

How lm-eval's own features behave with ``--model tts``:

* settings: model_args (and a recipe) > lm-eval flag (``--gen_kwargs`` ``max_gen_toks``,
  ``temperature``, ``top_p``, ``do_sample``; ``--seed``; ``--batch_size``; ``--device``) > the
  task's generation_kwargs > default (:func:`tts_eval.settings.parse_model_args`). Of a task's
  generation_kwargs only ``max_gen_toks`` (max_tokens, per request) and ``until`` (cuts the
  returned text) apply; its sampling keys describe single-sample decoding and are not used.
* prompts are always rendered with the policy's chat template, once per request, from the
  request's chat messages (:mod:`tts_eval.chats`: kept beside the request, not parsed back).
  With ``--apply_chat_template``, lm-eval builds the chat (system turn, few-shot turns) and
  :meth:`TTSLM.apply_chat_template` returns the rendered prompt text (what logged samples show as
  ``arguments``) and keeps its token ids; without it, the chat lm-eval would have built is kept
  under the plain context.
* the response cache (``--use_cache``) keys requests by their text and generation kwargs only; a
  ``tts`` model's entries also carry :func:`~tts_eval.settings.results_fingerprint` of its
  settings (:func:`namespace_response_cache`), so other settings never get its searches.
* a prompt with no room under the policy's ``max_model_len`` is not searched: its document is
  recorded as failed (empty answer; its trace's settings say ``skipped`` and why), a warning
  names it, and the run goes on.

What this module does not do: parse ``model_args`` (``tts_eval.settings``), load models
(``tts_eval.runtime``), search (``tts_eval.search``), generate (``tts_eval.engines``) or score
steps (``tts_eval.prm``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM

from tts_eval.chats import (
    chat_of,
    context_to_messages,
    keep_task_chats,
    normalize_messages,
    plain_chat_text,
    problem_text,
)
from tts_eval.config import TTSConfig, results_fingerprint
from tts_eval.engines.chat import render_chat_text
from tts_eval.errors import DataError, UnsupportedError
from tts_eval.model_args import LM_EVAL_FLAGS, POLICY_DEVICE_KEY, parse_model_args
from tts_eval.runtime import Searcher
from tts_eval.search import SearchConfig
from tts_eval.settings import check_int
from tts_eval.types import Cost, Problem, SearchResult, TracedText

logger = logging.getLogger(__name__)

# Key, in a trace's settings, of the reason a request was not searched.
SKIPPED_KEY = "skipped"
# Keys of a task's generation_kwargs that the search uses (the others are single-sample decoding).
TASK_GEN_KWARGS = ("max_gen_toks", "until")
_CACHE_PATCHED = "_tts_eval_namespaced"
_MAX_NAMED = 20  # documents named in one warning
# Models whose searcher they opened themselves and have not closed (see close_open_models).
_OPEN_MODELS: weakref.WeakSet[TTSLM] = weakref.WeakSet()


def truncate_at(text: str, until: Sequence[str]) -> str:
    """Cut ``text`` at the first of the task's stop strings (what every lm-eval model does)."""
    cut = len(text)
    for stop in until:
        if stop:
            i = text.find(stop)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def skipped_result(problem: Problem, config: SearchConfig, reason: str) -> SearchResult:
    """The result of a problem that was not searched: no candidate, no answer, ``reason``."""
    return SearchResult(
        uid=problem.uid,
        strategy=config.strategy,
        candidates=(),
        selected=None,
        cost=Cost(),
        settings={**config.settings(), SKIPPED_KEY: reason},
    )


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
        # rendered prompt text -> its messages and token ids (apply_chat_template)
        self._prompts: dict[str, tuple[list[dict[str, str]], tuple[int, ...]]] = {}
        self._params: tuple[float | None, float | None] | None = None  # see _param_counts()
        # --gen_kwargs keys of the lm-eval call creating this model (already in self.config).
        flags = LM_EVAL_FLAGS.get() or {}
        self._flag_gen_kwargs = frozenset(flags.get("gen_kwargs") or ())
        namespace_response_cache()
        keep_task_chats()
        if self.config.trace_path:  # checked before anything loads (written after each batch)
            from tts_eval.files import check_writable

            check_writable(
                Path(self.config.trace_path).parent,
                option="trace_path",
            )
        # The grader's helper processes warm up in the background while the models load.
        from tts_eval.grader.bounded import prestart

        threading.Thread(target=prestart, name="tts-eval-grader-prestart", daemon=True).start()
        _log_chat_template_once(self.config.engine.pretrained)
        if self.config.eager_load:
            self._get_searcher()

    @classmethod
    def create_from_arg_string(
        cls, arg_string: str, additional_config: dict | None = None
    ) -> TTSLM:
        share_lm_eval_logging()
        return cls(config=parse_model_args(arg_string, extra=lm_eval_extra(additional_config)))

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> TTSLM:
        share_lm_eval_logging()
        return cls(config=parse_model_args(dict(arg_dict), extra=lm_eval_extra(additional_config)))

    # ------------------------------------------------------------------ lm-eval API
    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise UnsupportedError(
            "--model tts only supports generation tasks (output_type: generate_until); "
            "loglikelihood is not supported: use --model hf or --model vllm for this task"
        )

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise UnsupportedError(
            "--model tts only supports generation tasks (output_type: generate_until); "
            "loglikelihood_rolling is not supported: use --model hf or --model vllm for this task"
        )

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The prompt as the policy sees it (its chat template, generation prompt included; a
        plain ``<|role|>`` rendering when the searcher holds no tokenizer, e.g. test fakes); the
        messages and the token ids are kept for :meth:`generate_until` (rendered once). Opens the
        searcher if it is not open yet: its tokenizer renders (one tokenizer per open)."""
        messages = normalize_messages(chat_history, self.config.system_prompt)
        searcher = self._get_searcher()
        if searcher.tokenizer is None:
            text, ids = plain_chat_text(messages), searcher.render_prompt(messages)
        else:
            text, ids = render_chat_text(searcher.tokenizer, messages)
        self._prompts[text] = (messages, tuple(ids))
        return text

    @property
    def tokenizer_name(self) -> str:
        return self.config.engine.pretrained.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        if not chat_template:
            return None
        tokenizer = self._get_searcher().tokenizer
        template = None if tokenizer is None else tokenizer.chat_template
        return (
            template if isinstance(template, str) else f"tts-eval:{self.config.engine.pretrained}"
        )

    def get_model_info(self) -> dict[str, Any]:
        """What lm-eval adds to the results' ``config``: the device the policy ran on
        (``tts_eval.plugin`` records it as ``device``, in place of lm-eval's flag)."""
        return {POLICY_DEVICE_KEY: policy_device(self._searcher, self.config)}

    @property
    def cache_namespace(self) -> str:
        """Prefix of this model's keys in lm-eval's response cache: a digest of its settings."""
        return f"tts-eval/{results_fingerprint(self.config)}"

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        if not requests:
            return []
        searcher = self._get_searcher()
        gen_kwargs = [_gen_kwargs(req) for req in requests]
        self._log_task_gen_kwargs(gen_kwargs[0])
        configs = [self._search_config(kwargs) for kwargs in gen_kwargs]
        problems = []
        for i, req in enumerate(requests):
            messages, ids = self._prompt(searcher, req.args[0])
            problems.append(
                Problem(uid=_request_uid(req, i), text=problem_text(messages), prompt_ids=ids)
            )
        results = self._search(searcher, requests, problems, configs, progress=not disable_tqdm)
        results = [with_flops(r, *self._param_counts()) for r in results]
        outputs = [
            TracedText(truncate_at(result.selected_text, _until(kwargs)), result)
            for kwargs, result in zip(gen_kwargs, results, strict=True)
        ]
        if self.config.trace_path:
            _append_traces(self.config.trace_path, requests, results)
        _log_cost(results)
        return outputs

    # ------------------------------------------------------------------ internals
    def close(self) -> None:
        """Close the searcher this model opened (models, GPU memory, Ray workers); a searcher
        handed in with ``searcher=`` stays open for its owner."""
        if self._owns_searcher and self._searcher is not None:
            _OPEN_MODELS.discard(self)
            searcher, self._searcher = self._searcher, None
            searcher.close()

    def _param_counts(self) -> tuple[float | None, float | None]:
        """Parameters of the policy and of the PRM, from their local files (None when unknown:
        the FLOPs of the traces are then unknown too)."""
        if self._params is None:
            prm = self.config.prm
            self._params = (
                model_parameters(self.config.engine.pretrained, "policy"),
                model_parameters(str(prm.path), "PRM") if prm is not None else None,
            )
        return self._params

    def _get_searcher(self) -> Searcher:
        if self._searcher is None:
            from tts_eval.runtime import open_searcher

            self._searcher = open_searcher(self.config)
            self._owns_searcher = True
            _OPEN_MODELS.add(self)
        return self._searcher

    def _messages(self, context: str) -> list[dict[str, str]]:
        """The chat of a request's context (see :mod:`tts_eval.chats`)."""
        known = self._prompts.get(context)
        if known is not None:
            return [dict(m) for m in known[0]]
        kept = chat_of(context)
        if kept is not None:
            return normalize_messages(kept, self.config.system_prompt)
        return context_to_messages(context, self.config.system_prompt)

    def _prompt(
        self, searcher: Searcher, context: str
    ) -> tuple[list[dict[str, str]], tuple[int, ...]]:
        """A request's messages and prompt token ids, rendered once."""
        known = self._prompts.get(context)
        if known is not None:
            return [dict(m) for m in known[0]], known[1]
        messages = self._messages(context)
        return messages, tuple(searcher.render_prompt(messages))

    def _search_config(self, gen_kwargs: Mapping[str, Any]) -> SearchConfig:
        """The run's search settings, with the task's ``max_gen_toks`` when nobody set
        max_tokens (model_args, recipe, --gen_kwargs)."""
        search = self.config.search
        if self.config.max_tokens_from_task and "max_gen_toks" in gen_kwargs:
            value = gen_kwargs["max_gen_toks"]
            check_int("max_gen_toks", value, 1, scope="task generation_kwargs")
            if value != search.max_tokens:
                search = dataclasses.replace(search, max_tokens=value)
        return search

    def _search(
        self,
        searcher: Searcher,
        requests: Sequence[Any],
        problems: Sequence[Problem],
        configs: Sequence[SearchConfig],
        *,
        progress: bool,
    ) -> list[SearchResult]:
        """One search per distinct setting (usually one for the whole batch); problems whose
        prompt leaves no room under the policy's length limit are recorded as skipped."""
        limit = _prompt_limit(searcher, self.config)
        results: list[SearchResult | None] = [None] * len(problems)
        groups: dict[SearchConfig, list[int]] = {}
        skipped: list[str] = []
        for i, (problem, config) in enumerate(zip(problems, configs, strict=True)):
            length = len(problem.prompt_ids)
            if limit is not None and length >= limit:
                reason = f"prompt of {length} tokens leaves no room under max_model_len={limit}"
                results[i] = skipped_result(problem, config, reason)
                skipped.append(f"{_doc_label(requests[i], i)} ({length} tokens)")
            else:
                groups.setdefault(config, []).append(i)
        if skipped:
            _warn_skipped(skipped, len(problems), limit)
        for config, indices in groups.items():
            found = searcher.search([problems[i] for i in indices], config, progress=progress)
            for i, result in zip(indices, found, strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    def _log_task_gen_kwargs(self, gen_kwargs: Mapping[str, Any]) -> None:
        """One line saying what of the task's generation_kwargs the search uses."""
        parts = []
        if "max_gen_toks" in gen_kwargs and "max_gen_toks" not in self._flag_gen_kwargs:
            value = gen_kwargs["max_gen_toks"]
            if self.config.max_tokens_from_task:
                parts.append(f"max_gen_toks={value} -> max_tokens={value}")
            else:
                parts.append(
                    f"max_gen_toks={value} not used (max_tokens={self.config.search.max_tokens} "
                    "set in model_args or --gen_kwargs)"
                )
        unused = [
            f"{k}={v}"
            for k, v in gen_kwargs.items()
            if k not in TASK_GEN_KWARGS and k not in self._flag_gen_kwargs
        ]
        if unused:
            parts.append(
                f"not used by the search (single-sample decoding; search settings go in "
                f"--model_args or --gen_kwargs): {', '.join(unused)}"
            )
        if parts:
            logger.info("tts: task generation_kwargs: %s", "; ".join(parts))


def lm_eval_extra(additional_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """What lm-eval tells a model it creates (``additional_config``: device, batch size) plus
    the flags of the ``simple_evaluate`` call in progress (:data:`LM_EVAL_FLAGS`)."""
    extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
    flags = dict(LM_EVAL_FLAGS.get() or {})
    template = flags.get("apply_chat_template")
    if isinstance(template, str) and template.strip().lower() not in ("", "true"):
        raise DataError(
            f"lm_eval --apply_chat_template={template} is invalid; accepted: the flag alone "
            "(--model tts renders with the policy's chat template, or model_args chat_template=)"
        )
    if flags.get("cache_requests") and template:
        raise DataError(
            "lm_eval --cache_requests with --apply_chat_template is not supported by --model tts "
            "(replayed chat prompts cannot be mapped back to their messages); drop one of them"
        )
    return {**extra, **flags}


def share_lm_eval_logging() -> None:
    """Show tts_eval's log lines the way lm-eval shows its own (its handler and level) when
    lm-eval creates the model, unless logging of ``tts_eval`` is configured already."""
    ours = logging.getLogger("tts_eval")
    theirs = logging.getLogger("lm_eval")
    if ours.handlers or not theirs.handlers:
        return
    for handler in theirs.handlers:
        ours.addHandler(handler)
    ours.setLevel(theirs.level or logging.INFO)
    ours.propagate = False


def close_open_models() -> int:
    """Close every searcher a :class:`TTSLM` of this process opened itself and still holds
    (what ``tts-eval`` does when it is interrupted); returns how many."""
    models = list(_OPEN_MODELS)
    for model in models:
        model.close()
    return len(models)


class NamespacedCache:
    """A view of lm-eval's response-cache store whose keys all start with ``namespace``."""

    def __init__(self, store: Any, namespace: str) -> None:
        self.store = store
        self.namespace = namespace

    def _key(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    def __contains__(self, key: object) -> bool:
        return self._key(str(key)) in self.store

    def __getitem__(self, key: str) -> Any:
        return self.store[self._key(key)]

    def __setitem__(self, key: str, value: Any) -> None:
        self.store[self._key(key)] = value

    def __getattr__(self, name: str) -> Any:  # commit, close, ...
        return getattr(self.store, name)


def namespace_response_cache() -> None:
    """Make lm-eval's ``CachingLM`` (``--use_cache``) keep a ``tts`` model's responses under its
    :attr:`TTSLM.cache_namespace`: lm-eval keys cached responses by request alone, so without
    this a run with other settings would get the searches of an earlier run. Idempotent."""
    from lm_eval.api import model as lm_eval_model

    cls = lm_eval_model.CachingLM
    if getattr(cls.__init__, _CACHE_PATCHED, False):
        return
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self, lm, *args, **kwargs):
        original(self, lm, *args, **kwargs)
        if isinstance(lm, TTSLM) and getattr(self, "dbdict", None) is not None:
            self.dbdict = NamespacedCache(self.dbdict, lm.cache_namespace)
            lm.set_cache_hook(self.get_cache_hook())
            logger.info(
                "tts: response cache entries are keyed by request and by settings %s",
                lm.cache_namespace,
            )

    setattr(__init__, _CACHE_PATCHED, True)
    cls.__init__ = __init__


@functools.cache
def _log_chat_template_once(pretrained: str) -> None:
    logger.info(
        "tts: prompts are always rendered with the chat template of %s, with or without "
        "--apply_chat_template (which only changes how lm-eval builds the chat and shows the "
        "rendered prompt in logged samples)",
        pretrained,
    )


def _gen_kwargs(req) -> Mapping[str, Any]:
    return req.args[1] if len(req.args) > 1 and isinstance(req.args[1], dict) else {}


def _until(gen_kwargs: Mapping[str, Any]) -> list[str]:
    until = gen_kwargs.get("until") or []
    return [until] if isinstance(until, str) else list(until)


@functools.cache
def model_parameters(model: str, role: str) -> float | None:
    """Parameters of ``model`` from its local files (:func:`tts_eval.params.parameter_count`),
    looked up and logged once per process."""
    from tts_eval.params import parameter_count

    found = parameter_count(model)
    if found is None:
        logger.warning(
            "tts: no parameter count for the %s %s (no local weights or config.json): the traces "
            "record no FLOPs (tts-eval compare --params can give them)",
            role,
            model,
        )
        return None
    logger.info("tts: %s %s has %.4g parameters (%s)", role, model, found.params, found.method)
    return found.params


def with_flops(
    result: SearchResult, policy_params: float | None, prm_params: float | None
) -> SearchResult:
    """``result`` with its cost's FLOPs (:func:`tts_eval.params.search_flops`), unless known."""
    from tts_eval.params import search_flops

    if result.cost.flops is not None:
        return result
    flops = search_flops(result.cost, policy_params, prm_params)
    return (
        result
        if flops is None
        else dataclasses.replace(result, cost=dataclasses.replace(result.cost, flops=flops))
    )


def policy_device(searcher: Searcher | None, config: TTSConfig) -> str:
    """Where the policy runs: the searcher's word (``cpu``, ``cuda``, ``cuda:1``), its server
    with ``backend=openai``, else the ``device`` setting (``auto`` when nothing loaded it)."""
    if config.engine.backend == "openai":
        return f"openai server {config.engine.base_url}"
    device = getattr(searcher, "device", None)
    return device if isinstance(device, str) and device else config.engine.device


def _prompt_limit(searcher: Searcher, config: TTSConfig) -> int | None:
    """The policy's context length (``Searcher.max_model_len``), else the setting (None:
    unknown, nothing is skipped here)."""
    value = searcher.max_model_len
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return config.engine.max_model_len


def _request_uid(req, position: int) -> str:
    """Stable id of a request: task and doc id (never its batch position when lm-eval gives one)."""
    task = getattr(req, "task_name", None) or "task"
    doc_id = getattr(req, "doc_id", None)
    repeat = getattr(req, "idx", 0) or 0
    key = doc_id if doc_id is not None else f"pos{position}"
    return f"{task}/{key}" + (f"/r{repeat}" if repeat else "")


def _doc_label(req, position: int) -> str:
    task = getattr(req, "task_name", None) or "task"
    doc_id = getattr(req, "doc_id", None)
    return f"{task} doc {doc_id if doc_id is not None else f'#{position}'}"


def _warn_skipped(labels: Sequence[str], total: int, limit: int | None) -> None:
    named = ", ".join(labels[:_MAX_NAMED]) + (", ..." if len(labels) > _MAX_NAMED else "")
    logger.warning(
        "tts: %d of %d requests not searched, recorded as failed (empty answer): their prompt "
        "leaves no room under max_model_len=%s: %s",
        len(labels),
        total,
        limit,
        named,
    )


def _append_traces(path: str, requests, results: Sequence[SearchResult]) -> None:
    from tts_eval.traces import append_jsonl, result_record

    records = [
        result_record(result, task=getattr(req, "task_name", None), doc=getattr(req, "doc", None))
        for req, result in zip(requests, results, strict=True)
    ]
    append_jsonl(path, records, option="trace_path")
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
