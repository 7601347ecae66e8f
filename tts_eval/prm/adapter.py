"""``PRMAdapter``: a ``ProcessRewardModel`` made of a format and an execution backend.

The format (``formats``) turns each ``PRMRequest`` into token ids and read positions; the backend
(any object with ``run(sequences, positions) -> [ScoredSequence]``, e.g. ``hf.HFScorer`` or
``labels.LabelReadScorer`` over vLLM) runs them
and returns the scores at those positions and the tokens it actually processed. Keeping the two
apart lets another backend (vLLM pooling, a remote server) reuse the golden-tested formats.

What this module does not do: load models (``registry.load_prm``) or touch torch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Protocol

from ..errors import OutOfMemoryError
from ..memory import free_device_memory, torch_oom_types
from ..types import PRMOutput, PRMRequest
from .formats import FormattedInput, PRMFormat

logger = logging.getLogger(__name__)


class ScoredSequenceLike(Protocol):
    scores: tuple[float, ...]
    tokens_processed: int


class SequenceScorer(Protocol):
    """``hf.HFScorer`` (its ``batch_tokens``, new tokens per forward, is named in out-of-memory
    errors) or ``labels.LabelReadScorer`` (an engine's prefix cache, no ``batch_tokens``)."""

    def run(
        self, sequences: Sequence[Sequence[int]], positions: Sequence[Sequence[int]]
    ) -> Sequence[ScoredSequenceLike]: ...


class PRMAdapter:
    """Scores ``PRMRequest``s: one probability-like score per step and the PRM tokens processed."""

    def __init__(self, fmt: PRMFormat, scorer: SequenceScorer, *, name: str = "") -> None:
        self.format = fmt
        self.scorer = scorer
        self.prm_type = fmt.prm_type
        self.name = name

    def __repr__(self) -> str:
        return f"PRMAdapter(prm_type={self.prm_type!r}, name={self.name!r})"

    def close(self) -> None:
        """Drop the scorer (weights and prefix cache; an engine it holds is closed) and free
        their device memory."""
        scorer = self.__dict__.pop("scorer", None)
        close = getattr(scorer, "close", None)
        if close is not None:
            close()
        free_device_memory()

    def render(self, request: PRMRequest) -> FormattedInput:
        return self.format.format(request.problem, request.steps)

    def score(self, requests: Sequence[PRMRequest]) -> list[PRMOutput]:
        formatted = [self.render(r) for r in requests]
        try:
            results = self.scorer.run(
                [f.token_ids for f in formatted], [f.read_positions for f in formatted]
            )
        except torch_oom_types() as exc:
            batch_tokens = getattr(self.scorer, "batch_tokens", None)
            if batch_tokens is None:
                raise OutOfMemoryError(
                    f"PRM {self.name} out of memory scoring {len(requests)} solutions; give it "
                    "more room: prm_gpu_memory_utilization= (and the policy less: "
                    "gpu_memory_utilization=), or prm_backend=openai on another machine"
                ) from exc
            raise OutOfMemoryError(
                f"PRM {self.name} out of memory scoring {len(requests)} solutions with "
                f"prm_batch_tokens={batch_tokens}; lower prm_batch_tokens=, or put the "
                "PRM elsewhere with prm_device= (and give the policy less: gpu_memory_utilization=)"
            ) from exc
        outputs = []
        for req, res in zip(requests, results, strict=True):
            if len(res.scores) != len(req.steps):
                raise RuntimeError(
                    f"{self.prm_type} produced {len(res.scores)} scores for {len(req.steps)} steps"
                )
            if not all(math.isfinite(s) for s in res.scores):
                raise FloatingPointError(
                    f"{self.prm_type} produced non-finite step scores {res.scores}; "
                    "try prm_dtype=float32"
                )
            outputs.append(PRMOutput(tuple(res.scores), res.tokens_processed))
        tokens = sum(o.tokens_processed for o in outputs)
        logger.debug("scored %d requests, %d PRM tokens processed", len(requests), tokens)
        return outputs
