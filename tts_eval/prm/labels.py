"""LM-head PRMs scored by one-token reads: P("+") from the label tokens' log-probabilities.

The LM-head formats (``rlhflow``, ``math_shepherd``, any format whose head is ``label_softmax``)
score step ``k`` with the softmax over the "+" and "-" logits at its read position. A generation
engine gives exactly that as a one-token generation whose prompt is the formatted input up to and
including the read position, asking the log-probabilities of the two label tokens: with ``a`` and
``b`` their log-probabilities (log-softmax over the vocabulary, the same normaliser for both),
P("+") = 1 / (1 + exp(b - a)), the transformers head's number (``heads.LabelSoftmaxHead``).

:class:`LabelReadScorer` is the scorer (``run(sequences, positions)``, as ``hf.HFScorer``) that
:class:`~tts_eval.prm.adapter.PRMAdapter` drives: the token ids and read positions come from the
format's own ``format`` (never rendered again here), each read position becomes the prompt
``ids[: position + 1]``, identical prompts of one call are read once, and a
:class:`LabelReader` (vLLM in-process, a vLLM server: ``tts_eval.engines.vllm_labels``,
``tts_eval.engines.openai_labels``) runs them. A read already done is not sent again: the
scorer keeps the label log-probabilities of its last ``memo_reads`` reads (keyed by a 128-bit
digest of the prompt), because a search scores every step of a candidate each time it grows, and
an engine would re-run the partial last block of every old prefix (its prefix cache serves whole
blocks only). The step prefixes of one solution are separate
requests sharing their prefix, so an engine with a prefix cache computes only what is new (vLLM
serves blocks computed by another request of the same batch, too). A step's cost is what the
engine prefilled: the prompt's length minus the tokens its prefix cache served (the engine's own
count, ``LabelRead.cached_tokens``), charged to the first request that asked for the prompt;
:class:`ReadCounters` sums prompts queried and served from the cache over the scorer's life.

The score-head formats vLLM runs as pooling models (``qwen_prm``, ``token_classification``) are
scored by the same class: their reader returns the head's class-1 and class-0 logits at the
prompt's last token as the ``(good, bad)`` pair, whose two-way softmax is the transformers
head's P(class 1) (``heads.ClassProbHead``); a one-logit head returns ``(logit, 0.0)``: its sigmoid.

What this module does not do: format requests (``formats``), run a model, or talk to vLLM.
"""

from __future__ import annotations

import hashlib
import logging
import math
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

logger = logging.getLogger(__name__)

# Reads whose label log-probabilities a scorer keeps (about 100 bytes each).
MEMO_READS = 1 << 20


class LabelRead(NamedTuple):
    """The next-token log-probabilities of the good ("+") and bad ("-") label after one prompt,
    and how many of the prompt's tokens the engine served from its prefix cache (None: the
    engine does not say). Readers (in ``tts_eval.engines``, which do not import this package)
    return plain ``(good, bad, cached_tokens)`` tuples."""

    good: float
    bad: float
    cached_tokens: int | None


class LabelReader(Protocol):
    """Runs one-token reads of two label tokens (see the module docstring)."""

    good_id: int
    bad_id: int

    def read(self, prompts: Sequence[tuple[int, ...]]) -> list[tuple[float, float, int | None]]:
        """One ``(good, bad, cached_tokens)`` (:class:`LabelRead`) per prompt, in order."""
        ...

    def close(self) -> None:
        """Free the engine (idempotent)."""
        ...


def label_probability(good: float, bad: float) -> float:
    """P(good) of a softmax over the two labels' log-probabilities (or logits)."""
    diff = bad - good
    if diff > 0:  # exp(-diff) cannot overflow
        e = math.exp(-diff)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(diff))


@dataclass(frozen=True)
class ScoredReads:
    """Scores at the requested positions and prompt tokens prefilled for one sequence."""

    scores: tuple[float, ...]
    tokens_processed: int


@dataclass
class ReadCounters:
    """Reads run, prompt tokens queried, and of those served from the prefix cache (summed over
    the reads whose engine reported it; ``unknown``: reads whose engine did not); ``memo``: reads
    answered from the scorer's own memo of earlier reads (nothing sent)."""

    reads: int = 0
    queried: int = 0
    cached: int = 0
    unknown: int = 0
    memo: int = 0

    @property
    def prefilled(self) -> int:
        return self.queried - self.cached

    @property
    def cached_share(self) -> float:
        """Share of queried prompt tokens served from the cache (0.0 when nothing ran)."""
        return self.cached / self.queried if self.queried else 0.0

    def reset(self) -> None:
        self.reads = self.queried = self.cached = self.unknown = self.memo = 0


class LabelReadScorer:
    """The ``PRMAdapter`` scorer of reads over a :class:`LabelReader` (label or head reads)."""

    def __init__(
        self, reader: LabelReader, *, name: str = "", memo_reads: int = MEMO_READS
    ) -> None:
        if memo_reads < 0:
            raise ValueError(f"memo_reads must be >= 0, got {memo_reads}")
        self.reader = reader
        self.name = name
        self.memo_reads = memo_reads
        self.counters = ReadCounters()
        self._memo: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def clear_cache(self) -> None:
        """Forget earlier reads (the engine's prefix cache is the engine's)."""
        self._memo.clear()

    def run(
        self, sequences: Sequence[Sequence[int]], positions: Sequence[Sequence[int]]
    ) -> list[ScoredReads]:
        """P("+") at ``positions[i]`` of ``sequences[i]`` and prompt tokens prefilled, per seq."""
        index: dict[tuple[int, ...], int] = {}  # prompt -> its read
        owner: list[int] = []  # sequence that first asked for each read
        wanted: list[list[int]] = []
        for i, (seq, pos) in enumerate(zip(sequences, positions, strict=True)):
            ids = tuple(seq)
            reads = []
            for p in pos:
                if not 0 <= p < len(ids):
                    raise ValueError(f"read position {p} outside a sequence of {len(ids)} tokens")
                prompt = ids[: p + 1]
                if prompt not in index:
                    index[prompt] = len(owner)
                    owner.append(i)
                reads.append(index[prompt])
            wanted.append(reads)
        prompts = list(index)
        labels, results = self._read(prompts)
        processed = [0] * len(wanted)
        c = self.counters
        c.memo += len(prompts) - len(results)
        for prompt, k, res in results:
            i = owner[k]
            cached = res.cached_tokens
            if cached is not None and not 0 <= cached <= len(prompt):
                raise RuntimeError(
                    f"{cached} cached tokens reported for a {len(prompt)}-token read"
                )
            c.reads += 1
            c.queried += len(prompt)
            if cached is None:
                c.unknown += 1
                cached = 0
            c.cached += cached
            processed[i] += len(prompt) - cached
        logger.debug(
            "%d label reads (%d sent), %d prompt tokens sent, %d from the prefix cache",
            len(prompts),
            len(results),
            sum(len(p) for p, _, _ in results),
            sum(r.cached_tokens or 0 for _, _, r in results),
        )
        return [
            ScoredReads(tuple(labels[r] for r in reads), processed[i])
            for i, reads in enumerate(wanted)
        ]

    def _read(
        self, prompts: list[tuple[int, ...]]
    ) -> tuple[list[float], list[tuple[tuple[int, ...], int, LabelRead]]]:
        """P("+") per prompt, and the reads sent (prompt, its index, the read): prompts in the
        memo are not sent."""
        keys = [hashlib.blake2b(array("q", p).tobytes(), digest_size=16).digest() for p in prompts]
        pairs: list[tuple[float, float] | None] = [self._memo.get(key) for key in keys]
        todo = [k for k, pair in enumerate(pairs) if pair is None]
        sent = [prompts[k] for k in todo]
        reads = [LabelRead(*r) for r in self.reader.read(sent)] if sent else []
        if len(reads) != len(sent):
            raise RuntimeError(f"{len(reads)} label reads returned for {len(sent)} prompts")
        for k, read in zip(todo, reads, strict=True):
            pairs[k] = (read.good, read.bad)
        for key, pair in zip(keys, pairs, strict=True):
            self._remember(key, pair)  # type: ignore[arg-type]
        labels = [label_probability(*pair) for pair in pairs]  # type: ignore[misc]
        return labels, [(prompts[k], k, read) for k, read in zip(todo, reads, strict=True)]

    def _remember(self, key: bytes, value: tuple[float, float]) -> None:
        self._memo[key] = value
        self._memo.move_to_end(key)
        while len(self._memo) > self.memo_reads:
            self._memo.popitem(last=False)

    def close(self) -> None:
        self.reader.close()
