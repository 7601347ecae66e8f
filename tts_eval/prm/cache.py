"""A bounded cache of processed token-id prefixes, looked up by longest common prefix.

Search scores a solution that grows one step at a time, and many candidates share a prefix (the
problem, the parent beam). ``PrefixCache`` remembers what the PRM already computed for a prefix so
the next call only runs the new tokens through the model. Prefixes are stored in fixed-size blocks
of token ids (``block_size`` tokens, the last partial block of a sequence is never stored); block
``k`` of a sequence is keyed by a digest chained over blocks ``0..k``, so two sequences share the
cached blocks of their common prefix (whole blocks) and a lookup walks the chain until the first
miss. Every block carries an opaque payload (the adapters store that block's key/value tensors and
per-token scores) and its size in bytes; blocks are evicted least-recently-used first once the
total exceeds ``max_bytes``. A lookup touches every block it matches, so a prefix is always at
least as recent as its extensions and eviction removes leaves before their parents.

What this module does not do: run a model, import torch, or know what a payload contains.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CachedBlock:
    """One stored block: its token ids, the digest of the block before it, payload and size."""

    tokens: tuple[int, ...]
    parent: bytes
    payload: object
    nbytes: int


_ROOT = b""


def _digest(parent: bytes, tokens: Sequence[int]) -> bytes:
    return hashlib.blake2b(parent + array("q", tokens).tobytes(), digest_size=16).digest()


class PrefixCache:
    """LRU (by bytes) store of token-id prefix blocks with longest-common-prefix lookup."""

    def __init__(self, max_bytes: int, block_size: int = 16) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.max_bytes = max_bytes
        self.block_size = block_size
        self._blocks: OrderedDict[bytes, CachedBlock] = OrderedDict()
        self._nbytes = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def __len__(self) -> int:
        return len(self._blocks)

    def digests(self, ids: Sequence[int]) -> list[bytes]:
        """Chained digests of every full block of ``ids``."""
        out: list[bytes] = []
        parent = _ROOT
        bs = self.block_size
        for start in range(0, len(ids) - bs + 1, bs):
            parent = _digest(parent, ids[start : start + bs])
            out.append(parent)
        return out

    def match(self, ids: Sequence[int]) -> list[object]:
        """Payloads of the longest cached run of full blocks at the start of ``ids``.

        ``len(result) * block_size`` tokens of ``ids`` are covered. Matched blocks become the most
        recently used.
        """
        payloads: list[object] = []
        parent = _ROOT
        bs = self.block_size
        for k, digest in enumerate(self.digests(ids)):
            block = self._blocks.get(digest)
            tokens = tuple(ids[k * bs : (k + 1) * bs])
            if block is None or block.parent != parent or block.tokens != tokens:
                break
            self._blocks.move_to_end(digest)
            payloads.append(block.payload)
            parent = digest
        return payloads

    def match_len(self, ids: Sequence[int]) -> int:
        """Number of leading tokens of ``ids`` a lookup would serve from the cache."""
        return len(self.match(ids)) * self.block_size

    def insert(self, ids: Sequence[int], payloads: Sequence[object], nbytes: Sequence[int]) -> None:
        """Store blocks ``0..len(payloads)-1`` of ``ids`` (already stored ones are only touched)."""
        if not self.enabled:
            return
        bs = self.block_size
        if len(payloads) != len(nbytes) or len(payloads) * bs > len(ids):
            raise ValueError(
                f"insert got {len(payloads)} payloads and {len(nbytes)} sizes for "
                f"{len(ids)} tokens (block_size {bs})"
            )
        parent = _ROOT
        for k, digest in enumerate(self.digests(ids)[: len(payloads)]):
            if digest in self._blocks:
                self._blocks.move_to_end(digest)
            else:
                tokens = tuple(ids[k * bs : (k + 1) * bs])
                self._blocks[digest] = CachedBlock(tokens, parent, payloads[k], int(nbytes[k]))
                self._nbytes += int(nbytes[k])
            parent = digest
        self._evict()

    def payloads(self) -> Iterator[object]:
        """The payload of every stored block (recency unchanged)."""
        return (block.payload for block in self._blocks.values())

    def clear(self) -> None:
        self._blocks.clear()
        self._nbytes = 0

    def _evict(self) -> None:
        while self._nbytes > self.max_bytes and self._blocks:
            _, block = self._blocks.popitem(last=False)
            self._nbytes -= block.nbytes
