"""``LocalSearcher``: the policy engine, the PRM and the answer spec of a run, in this process.

``LocalSearcher.from_config(config)`` checks everything that can be checked without weights
(:func:`preflight`: the policy path (backend=openai: its server), the PRM's path and type, the
answer setting; :func:`check_devices`: the devices asked for are visible here), then loads the PRM (when one is configured, on its ``prm_backend``: :mod:`tts_eval.runtime.prm`) and the policy engine once. ``search(problems, search_config)`` runs
:func:`tts_eval.search.run_search` over all problems at once with the settings it is given, so
one loaded searcher serves every run of a sweep. ``close()`` frees the models' device memory.

What this module does not do: talk to lm-eval (``tts_eval.lm_model``), spread work over
processes (``tts_eval.runtime.ray``), or parse settings (``tts_eval.settings``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from tts_eval.config import TTSConfig
from tts_eval.engines import check_engine, load_engine
from tts_eval.grader import answer_spec
from tts_eval.prm.registry import read_model_config, resolve_prm_type
from tts_eval.runtime.prm import check_backend, load_prm
from tts_eval.search import SearchConfig, run_search
from tts_eval.settings import check_model_path, invalid
from tts_eval.types import AnswerSpec, PolicyEngine, Problem, ProcessRewardModel, SearchResult

logger = logging.getLogger(__name__)

_loads = 0  # LocalSearchers that loaded models in this process (see models_loaded)


def models_loaded() -> int:
    """How many times this process loaded a policy (and PRM) through ``LocalSearcher.from_config``."""
    return _loads


def preflight(config: TTSConfig) -> None:
    """The checks that need no weights, each once: policy path (backend=openai: its server;
    :func:`tts_eval.engines.check_engine`), PRM path and type (and that ``prm_backend`` runs
    it), answer setting."""
    check_model_path("pretrained", config.engine.pretrained)
    if config.prm is not None:
        prm_type = resolve_prm_type(config.prm, read_model_config(str(config.prm.path)))
        check_backend(config.prm, prm_type)  # the formats prm_backend=vllm/openai run
    answer_spec(config.answer)
    check_engine(config.engine, path_checked=True)


def visible_devices(kind: str) -> int:
    """How many devices of ``kind`` (``cuda``, ``xpu``, ``mps``) torch sees in this process."""
    import torch

    if kind == "cuda":
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind == "xpu":
        xpu = getattr(torch, "xpu", None)
        return xpu.device_count() if xpu is not None and xpu.is_available() else 0
    if kind == "mps":
        return int(torch.backends.mps.is_available())
    raise ValueError(f"unknown device kind {kind!r}; accepted: cuda, xpu, mps")


def check_device_visible(key: str, device: str | None) -> None:
    """One-line error, before anything loads, when ``device`` names an accelerator (or an index
    of one) that this process does not see; ``auto``, ``cpu`` and None always pass."""
    if device in (None, "auto", "cpu"):
        return
    kind, _, index = device.partition(":")
    count = visible_devices(kind)
    if count == 0:
        raise invalid(key, device, f"cpu or auto (no {kind} device is visible here)")
    if index and int(index) >= count:
        raise invalid(
            key, device, f"{kind}:0 to {kind}:{count - 1}, {kind}, cpu or auto ({count} visible)"
        )


def check_devices(config: TTSConfig) -> None:
    """The policy's ``device`` (backends hf and vllm; an openai policy runs on its server) and
    the PRM's ``prm_device`` must be devices this process sees."""
    if config.engine.backend in ("hf", "vllm"):
        check_device_visible("device", config.engine.device)
    if config.prm is not None and config.prm.backend == "hf":
        check_device_visible("prm_device", config.prm.device)


class LocalSearcher:
    """A :class:`tts_eval.runtime.Searcher` over models loaded in this process."""

    def __init__(
        self, engine: PolicyEngine, prm: ProcessRewardModel | None, answers: AnswerSpec
    ) -> None:
        self.engine = engine
        self.prm = prm
        self.answers = answers

    @classmethod
    def from_config(cls, config: TTSConfig) -> LocalSearcher:
        """Check, then load the PRM and the policy engine of ``config`` (its search settings
        are not kept: each ``search`` call brings its own)."""
        global _loads
        preflight(config)
        check_devices(config)
        prm = load_prm(config.prm) if config.prm is not None else None
        try:
            engine = load_engine(config.engine, checked=True)
        except BaseException:
            if prm is not None:
                prm.close()
            raise
        _loads += 1
        return cls(engine, prm, answer_spec(config.answer))

    @property
    def tokenizer(self) -> Any:
        """The policy tokenizer (None for engines without one, e.g. test fakes)."""
        return self.engine.tokenizer

    @property
    def device(self) -> str | None:
        """Where the policy runs (``cpu``, ``cuda:0``, ...), when the engine says."""
        device = self.engine.device
        return str(device) if device is not None else None

    @property
    def max_model_len(self) -> int | None:
        """The policy's context length (prompt + completion), when the engine knows it."""
        return self.engine.max_model_len

    def render_prompt(self, messages: Sequence[Mapping[str, str]]) -> list[int]:
        return self.engine.render_prompt(messages)

    def search(
        self, problems: Sequence[Problem], config: SearchConfig, *, progress: bool = False
    ) -> list[SearchResult]:
        """Run ``config`` over ``problems`` as one batch; one result each, in order."""
        self._check_open()
        return run_search(config, problems, self.engine, self.prm, self.answers, progress=progress)

    def close(self) -> None:
        """Free the policy's and the PRM's memory; the searcher cannot search afterwards."""
        engine, prm = self.engine, self.prm
        self.engine, self.prm = None, None  # type: ignore[assignment]
        try:
            if engine is not None:
                engine.close()
        finally:
            if prm is not None:
                prm.close()

    def _check_open(self) -> None:
        if self.engine is None:
            raise RuntimeError("this searcher was closed; open a new one")

    def __enter__(self) -> LocalSearcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
