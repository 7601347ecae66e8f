"""transformers execution of PRMs: backbone + small score head, with prefix KV reuse and batching.

``HFScorer`` runs formatted token sequences through a decoder backbone (``AutoModel``) and a
format-specific head that maps the last hidden state at every position to a probability-like
score, and returns the scores at the requested read positions plus the number of tokens actually
run through the backbone. Heads are our own small modules whose weights are read from the
checkpoint files by name (:mod:`tts_eval.prm.heads`).

Cost: every call first looks each sequence up in a ``PrefixCache`` (block-granular longest common
prefix); cached blocks carry the backbone's key/value tensors and the per-token scores, so only the
uncached suffix runs, with ``past_key_values``. Prefixes shared by two or more sequences of one
call and not yet cached are run once first. Forwards are packed under a token budget
(``batch_tokens`` new tokens per forward; padded past + new tokens bounded too, to at most
``MAX_FORWARD_KV_BYTES`` of key/value tensors); a sequence longer than the budget runs alone in
chunks. Sequences that share their whole cached past (a search's children of one parent) may run
packed in one row, ``[past | child 1 | child 2 | ...]``, with a 4D mask that lets each child see
the past and its own tokens only (SDPA backbones): the past copied once and rows of even lengths,
at the price of attention computed and masked away.

Memory: the prefix cache holds at most ``cache_bytes`` of key/value tensors and scores (LRU
eviction; ``prm_cache_bytes``); the blocks' key/value tensors live in large slabs whose slots are
reused once evicted and which ``clear_cache`` returns to the system (many small tensors would
fragment the heap, and the process would keep memory it no longer uses). A forward writes the
rows' cached past and its new keys and values into one reused scratch buffer (no per-layer
concatenation), bounded by ``MAX_FORWARD_KV_BYTES``. ``HFScorer.memory_bytes`` says what the
scorer holds besides its weights. Callers get plain Python floats and ints (no tensor outlives a
call outside the cache). Backbones that return no KV cache (bidirectional encoders) run every
sequence in full.

Planning: which sequences share a row and which rows share a forward is decided by the pure
planner of :mod:`tts_eval.prm.planning` (a cost model in tokens of work through the weights, with
the backbone's attention cost from :func:`key_cost`). ``HFScorer.stats`` (:class:`ScorerStats`)
counts forwards, real and padded tokens and forward time, so the waste is measurable.

What this module does not do: format requests (``formats``), pick the PRM type (``registry``),
or plan forwards (``planning``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from .cache import PrefixCache
from .heads import build_head  # noqa: F401  (registry builds heads through this module)
from .planning import Item, Row, bucket, key_cost_of_shape, pack

logger = logging.getLogger(__name__)

# A packed forward may hold at most this many times ``batch_tokens`` tokens of (padded) past + new,
# and at most MAX_FORWARD_KV_BYTES of key/value tensors for them (the scratch buffer's size).
KV_TOKENS_PER_BATCH_TOKEN = 8
MAX_FORWARD_KV_BYTES = 256 << 20
# Cached key/value blocks are carved from slabs of at least this many bytes (see _BlockPool).
SLAB_BYTES = 64 << 20
# --------------------------------------------------------------------------------------------
# Execution with prefix reuse
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredSequence:
    """Scores at the requested positions and tokens actually run for one sequence."""

    scores: tuple[float, ...]
    tokens_processed: int


@dataclass
class ScorerStats:
    """What an ``HFScorer`` ran since it was built (or since :meth:`reset`).

    ``real_tokens`` are the new tokens run (the PRM tokens processed), ``padded_tokens`` the
    positions of the forwards' input rectangles (rows x longest new part); ``real_past_tokens`` /
    ``padded_past_tokens`` the same for the cached past attended to; ``context_tokens`` sums, over
    the real new tokens, the positions each attends to (its cached past plus the new tokens up to
    it: attention work grows with it). ``forward_s`` is the time
    spent in forwards (backbone + head), excluding planning and cache lookups.
    """

    forwards: int = 0
    peak_forward_tokens: int = 0  # the largest rows x (past + new) rectangle of one forward
    real_tokens: int = 0
    padded_tokens: int = 0
    real_past_tokens: int = 0
    padded_past_tokens: int = 0
    context_tokens: int = 0
    forward_s: float = 0.0

    @property
    def padding_ratio(self) -> float:
        """Padded / real new tokens (1.0 when nothing ran)."""
        return self.padded_tokens / self.real_tokens if self.real_tokens else 1.0

    def reset(self) -> None:
        self.forwards = self.peak_forward_tokens = self.real_tokens = self.padded_tokens = 0
        self.real_past_tokens = self.padded_past_tokens = self.context_tokens = 0
        self.forward_s = 0.0


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class _BlockPool:
    """Equal-shape key/value blocks carved from large slabs, reused once no longer cached.

    One small tensor per cached block fragments the process heap: memory freed by eviction or
    ``clear_cache`` stays in the allocator, and the process keeps growing over runs. Slabs of at
    least ``SLAB_BYTES`` are mapped and unmapped as a whole (glibc serves allocations above 32 MiB
    with mmap), so the cache's memory is reused while the pool lives and returned when it is
    dropped. Which slots are free is decided between calls (``collect``: every slot no cached
    block holds), never during one, so a block a pending forward still reads is never overwritten.
    """

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
        self.shape, self.dtype, self.device = shape, dtype, device
        self.per_slab = max(1, -(-SLAB_BYTES // (math.prod(shape) * dtype.itemsize)))
        self.slabs: list[torch.Tensor] = []
        self.blocks: list[torch.Tensor] = []  # slot -> view of its slab
        self.free: list[int] = []

    @property
    def nbytes(self) -> int:
        return sum(slab.numel() * slab.element_size() for slab in self.slabs)

    def take(self) -> int:
        if not self.free:
            slab = torch.empty((self.per_slab, *self.shape), dtype=self.dtype, device=self.device)
            first = len(self.blocks)
            self.slabs.append(slab)
            self.blocks.extend(slab.unbind(0))
            self.free = list(range(len(self.blocks) - 1, first - 1, -1))
        return self.free.pop()

    def collect(self, live: set[int]) -> None:
        self.free = [slot for slot in range(len(self.blocks) - 1, -1, -1) if slot not in live]


class HFScorer:
    """Runs token sequences through ``backbone`` + ``head``; see the module docstring."""

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        *,
        batch_tokens: int = 8192,
        cache_bytes: int = 2 << 30,
        block_size: int = 16,
    ) -> None:
        if batch_tokens < 1:
            raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
        self.backbone = backbone.eval()
        self.device = next(backbone.parameters()).device
        self.head = head.to(self.device).eval()
        self.batch_tokens = batch_tokens
        self.cache = PrefixCache(cache_bytes, block_size)
        self.reuse = self.cache.enabled
        self.stats = ScorerStats()
        self._scratch: torch.Tensor | None = None  # see _scratch_tensor
        self._pool: _BlockPool | None = None  # storage of the cached blocks' keys and values
        self._kv_layout: tuple[int, int, int, torch.dtype] | None = None  # layers, heads, dim
        # packed rows need a 4D boolean mask, which only SDPA attention reads as such
        self._packable = _attention(backbone) == "sdpa"
        self._key_cost = key_cost(backbone)  # planning: attention work per query-key pair

    # ---- public ----------------------------------------------------------------------------

    def run(
        self, sequences: Sequence[Sequence[int]], positions: Sequence[Sequence[int]]
    ) -> list[ScoredSequence]:
        """Scores at ``positions[i]`` of ``sequences[i]`` and tokens run, one per sequence."""
        keys = [tuple(s) for s in sequences]
        first: dict[tuple[int, ...], int] = {}
        for i, key in enumerate(keys):
            if key:
                first.setdefault(key, i)
        unique = list(first)
        processed = [0] * len(keys)
        with torch.inference_mode():
            if self.reuse:
                self._warm_shared(unique, [first[k] for k in unique], processed)
            results = self._process(unique)
        if self._pool is not None:
            self._pool.collect({payload[2] for payload in self.cache.payloads()})
        for key in unique:
            processed[first[key]] += results[key][1]
        out = []
        for i, (key, pos) in enumerate(zip(keys, positions, strict=True)):
            if not pos:
                out.append(ScoredSequence((), processed[i]))
                continue
            scores = results[key][0]
            out.append(ScoredSequence(tuple(float(scores[p]) for p in pos), processed[i]))
        return out

    def clear_cache(self) -> None:
        self.cache.clear()
        self._scratch = self._pool = None

    @property
    def memory_bytes(self) -> int:
        """Bytes the scorer holds besides its weights: the cached blocks' slabs (cached blocks
        and free slots) and the forwards' scratch buffer."""
        pool = self._pool.nbytes if self._pool is not None else 0
        scratch = self._scratch
        scratch_bytes = 0 if scratch is None else scratch.numel() * scratch.element_size()
        return pool + scratch_bytes

    # ---- planning --------------------------------------------------------------------------

    def _warm_shared(
        self, seqs: list[tuple[int, ...]], owners: list[int], processed: list[int]
    ) -> None:
        """Run (once) the block-aligned prefixes shared by 2+ of ``seqs`` that are not cached."""
        bs = self.cache.block_size
        order = sorted(range(len(seqs)), key=seqs.__getitem__)
        prefix_owner: dict[tuple[int, ...], int] = {}
        for a, b in pairwise(order):
            cut = _lcp(seqs[a], seqs[b]) // bs * bs
            if cut == 0:
                continue
            prefix = seqs[a][:cut]
            if self.cache.match_len(prefix) >= cut:
                continue
            owner = min(owners[a], owners[b])
            prefix_owner[prefix] = min(prefix_owner.get(prefix, owner), owner)
        if not prefix_owner:
            return
        prefixes = list(prefix_owner)
        powners = [prefix_owner[p] for p in prefixes]
        self._warm_shared(prefixes, powners, processed)
        done = self._process(prefixes)
        for prefix, owner in zip(prefixes, powners, strict=True):
            processed[owner] += done[prefix][1]

    def _process(self, seqs: list[tuple[int, ...]]) -> dict[tuple[int, ...], tuple]:
        """Per-token scores (CPU float tensor over the whole sequence) and tokens run, per seq."""
        results: dict[tuple[int, ...], tuple] = {}
        todo: list[Item] = []
        for seq in seqs:
            blocks = self.cache.match(seq) if self.reuse else []
            item = Item(seq, blocks, self.cache.block_size)
            if item.new == 0:
                results[seq] = (torch.cat([b[1] for b in blocks]), 0)
            else:
                todo.append(item)
        for batch in self._plan(todo):
            alone = len(batch) == 1 and len(batch[0].items) == 1
            if self.reuse and alone and batch[0].new > self.batch_tokens:
                self._forward_chunked(batch[0].items[0], results)
            else:
                self._forward_batch(batch, results)
        return results

    def _budgets(self, items: Sequence[Item]) -> tuple[int, int]:
        """New tokens and (padded) past + new tokens one forward may hold."""
        budget, kv_budget = self.batch_tokens, self.batch_tokens * KV_TOKENS_PER_BATCH_TOKEN
        kv = next((b[0] for it in items for b in it.blocks[:1]), None)
        if kv is not None:  # bytes of one token's keys and values over all layers
            per_token = kv.numel() * kv.element_size() // kv.shape[3]
            kv_budget = max(1, min(kv_budget, MAX_FORWARD_KV_BYTES // per_token))
        return budget, kv_budget

    def _plan(self, items: list[Item]) -> list[list[Row]]:
        """The forwards that run ``items``: rows packed by cached past (SDPA backbones only,
        ``planning.pack``), then bucketed into forwards (``planning.bucket``)."""
        budget, kv_budget = self._budgets(items)
        if self.reuse and self._packable:
            rows = pack(items, self._key_cost, budget, kv_budget)
        else:
            rows = [Row([it]) for it in items]
        return bucket(rows, self._key_cost, budget, kv_budget)

    # ---- forwards --------------------------------------------------------------------------

    def _kv_buffer(self, items: list[Row], past_max: int, length: int) -> torch.Tensor | None:
        """One buffer for the forward's keys and values, the rows' cached blocks copied in.

        ``[layers, 2, rows, kv_heads, length, head_dim]``: row ``i``'s past is left-padded to end
        at ``past_max`` (padding zeroed: masked, but it must be finite); the forward writes its new
        keys and values after it in place (see ``_cache``). None before the backbone's key/value
        layout is known (the first forward without a past; the model then allocates its own).
        """
        if self._kv_layout is None:
            return None
        layers, heads, dim, dtype = self._kv_layout
        buf = self._scratch_tensor((layers, 2, len(items), heads, length, dim), dtype)
        bs = self.cache.block_size
        for row, it in enumerate(items):
            start = past_max - it.past
            if start:
                buf[:, :, row, :, :start] = 0
            for k, (kv, *_) in enumerate(it.blocks):
                buf[:, :, row, :, start + k * bs : start + (k + 1) * bs] = kv
        return buf

    def _scratch_tensor(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` in the scorer's reused scratch storage.

        A fresh buffer per forward costs more than copying into it (the kernel zero-fills new
        pages on first touch); the storage grows to the largest forward's keys and values (at
        most ``MAX_FORWARD_KV_BYTES`` for packed forwards) and is kept until ``clear_cache``. A
        request above that bound (one long sequence run in chunks) gets its own tensor.
        """
        numel = math.prod(shape)
        if numel * dtype.itemsize > MAX_FORWARD_KV_BYTES:
            return torch.empty(shape, dtype=dtype, device=self.device)
        scratch = self._scratch
        if scratch is None or scratch.numel() < numel or scratch.dtype != dtype:
            scratch = self._scratch = torch.empty(numel, dtype=dtype, device=self.device)
        return scratch[:numel].view(shape)

    def _forward_batch(self, batch: list[Row], results: dict) -> None:
        past_max = max(row.past for row in batch)
        new_max = max(row.new for row in batch)
        n = len(batch)
        packed = any(len(row.items) > 1 for row in batch)
        input_ids = torch.zeros((n, new_max), dtype=torch.long)
        position_ids = torch.zeros((n, new_max), dtype=torch.long)
        if packed:  # [rows, 1, new, past + new], True: attend
            mask = torch.zeros((n, 1, new_max, past_max + new_max), dtype=torch.bool)
        else:
            mask = torch.zeros((n, past_max + new_max), dtype=torch.long)
        offsets: list[list[int]] = []
        for i, row in enumerate(batch):
            start, at, where = past_max - row.past, 0, []
            for it in row.items:
                input_ids[i, at : at + it.new] = torch.tensor(it.ids[it.past :])
                position_ids[i, at : at + it.new] = torch.arange(it.past, it.past + it.new)
                if packed:
                    mask[i, 0, at : at + it.new, start:past_max] = True
                    mask[i, 0, at : at + it.new, past_max + at : past_max + at + it.new] = (
                        torch.ones((it.new, it.new), dtype=torch.bool).tril()
                    )
                where.append(at)
                at += it.new
            position_ids[i, at:] = torch.arange(row.past + at, row.past + new_max)
            if packed:  # padding attends to itself only (a fully masked query would give NaN)
                pad = torch.arange(at, new_max)
                mask[i, 0, pad, past_max + pad] = True
            else:
                mask[i, start : past_max + at] = 1
            offsets.append(where)
        kwargs = {}
        t0 = time.perf_counter()
        buffer = None
        if self.reuse:
            buffer = self._kv_buffer(batch, past_max, past_max + new_max)
            kwargs = {"past_key_values": _cache(buffer, past_max), "use_cache": True}
        out = self.backbone(
            input_ids=input_ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=position_ids.to(self.device),
            **kwargs,
        )
        scores = self.head(out.last_hidden_state).float().cpu()
        self._count(
            time.perf_counter() - t0,
            [(row.past, [it.new for it in row.items]) for row in batch],
            n * new_max,
            n * past_max,
        )
        kv = self._returned_kv(out, buffer, past_max + new_max) if self.reuse else None
        if self.reuse and kv is None:
            logger.warning("PRM backbone returned no usable KV cache; prefix reuse disabled")
            self.reuse = False
            self.cache.clear()
        for i, row in enumerate(batch):
            for it, at in zip(row.items, offsets[i], strict=True):
                new_scores = scores[i, at : at + it.new]
                if kv is not None:
                    self._store(it, kv, i, past_max + at, new_scores)
                old = [b[1] for b in it.blocks]
                results[it.ids] = (torch.cat([*old, new_scores]), it.new)

    def _count(
        self,
        seconds: float,
        rows: Sequence[tuple[int, Sequence[int]]],
        padded: int,
        padded_past: int,
    ) -> None:
        """Stats of one forward of ``rows`` ((past, new tokens of each item) per row) on padded
        rectangles; a row's past is counted once, however many items share it."""
        real = sum(sum(news) for _, news in rows)
        past = sum(p for p, _ in rows)
        stats = self.stats
        stats.forwards += 1
        stats.peak_forward_tokens = max(stats.peak_forward_tokens, padded + padded_past)
        stats.forward_s += seconds
        stats.real_tokens += real
        stats.padded_tokens += padded
        stats.real_past_tokens += past
        stats.padded_past_tokens += padded_past
        stats.context_tokens += sum(
            p * new + new * (new + 1) // 2 for p, news in rows for new in news
        )

    def _forward_chunked(self, item: Item, results: dict) -> None:
        buffer = self._kv_buffer([item], item.past, len(item.ids))
        cache = _cache(buffer, item.past)
        chunks = []
        for start in range(item.past, len(item.ids), self.batch_tokens):
            t0 = time.perf_counter()
            ids = item.ids[start : start + self.batch_tokens]
            out = self.backbone(
                input_ids=torch.tensor([ids], device=self.device),
                position_ids=torch.arange(start, start + len(ids), device=self.device)[None],
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
            chunks.append(self.head(out.last_hidden_state)[0].float().cpu())
            self._count(time.perf_counter() - t0, [(start, [len(ids)])], len(ids), start)
        new_scores = torch.cat(chunks)
        kv = self._returned_kv(out, buffer, len(item.ids))
        if kv is None:  # a backbone without a KV cache never gets here (it fails the first batch)
            raise RuntimeError("PRM backbone returned no KV cache for a chunked forward")
        self._store(item, kv, 0, item.past, new_scores)
        results[item.ids] = (torch.cat([*(b[1] for b in item.blocks), new_scores]), item.new)

    def _returned_kv(self, out, buffer: torch.Tensor | None, length: int) -> torch.Tensor | None:
        """The forward's keys and values as one ``[layers, 2, rows, heads, length, dim]`` tensor
        (``buffer`` when the forward filled it, else the returned cache's layers stacked), and
        the layout ``_kv_buffer`` needs from then on; None when the backbone returned no usable
        cache."""
        kv = getattr(out, "past_key_values", None)
        if kv is None or kv.get_seq_length() != length:
            return None
        if buffer is None:
            buffer = torch.stack([torch.stack((layer.keys, layer.values)) for layer in kv.layers])
        self._kv_layout = (buffer.shape[0], buffer.shape[3], buffer.shape[5], buffer.dtype)
        return buffer

    def _store(
        self, item: Item, kv: torch.Tensor, row: int, past_max: int, new_scores: torch.Tensor
    ) -> None:
        """Insert the full blocks of ``item`` (the cached ones and the newly computed ones);
        ``kv`` is the forward's ``[layers, 2, rows, heads, length, dim]`` keys and values."""
        bs = self.cache.block_size
        payloads = list(item.blocks)
        pool = self._pool
        shape = (kv.shape[0], 2, kv.shape[3], bs, kv.shape[5])
        if pool is None or pool.shape != shape or pool.dtype != kv.dtype:
            pool = self._pool = _BlockPool(shape, kv.dtype, kv.device)
        for k in range(len(item.ids) // bs - len(item.blocks)):
            at = past_max + k * bs
            slot = pool.take()
            block = pool.blocks[slot].copy_(kv[:, :, row, :, at : at + bs])
            payloads.append((block, new_scores[k * bs : (k + 1) * bs].clone(), slot))
        sizes = [p[0].numel() * p[0].element_size() + p[1].numel() * 4 for p in payloads]
        self.cache.insert(item.ids, payloads, sizes)


# --------------------------------------------------------------------------------------------
# A KV cache whose layers are views of one preallocated buffer
# --------------------------------------------------------------------------------------------


def _buffer_layer_class():
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):
        """A layer's keys/values in a preallocated ``[rows, heads, length, dim]`` buffer: the past
        is already there; ``update`` writes the new states after it in place (no concatenation)
        and returns views up to them."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, filled: int) -> None:
            super().__init__()
            self.buffer_keys, self.buffer_values, self.filled = keys, values, filled
            self.keys, self.values = keys[:, :, :filled], values[:, :, :filled]
            self.dtype, self.device = keys.dtype, keys.device
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            end = self.filled + key_states.shape[-2]
            if end > self.buffer_keys.shape[-2]:
                raise RuntimeError(
                    f"KV buffer of {self.buffer_keys.shape[-2]} positions, {end} asked"
                )
            self.buffer_keys[:, :, self.filled : end] = key_states
            self.buffer_values[:, :, self.filled : end] = value_states
            self.filled = end
            self.keys, self.values = self.buffer_keys[:, :, :end], self.buffer_values[:, :, :end]
            return self.keys, self.values

    return BufferLayer


_BUFFER_LAYER = None


def _cache(buffer: torch.Tensor | None, filled: int):
    """A transformers ``Cache`` over ``buffer`` (see ``HFScorer._kv_buffer``), or an empty
    ``DynamicCache`` when there is no past."""
    global _BUFFER_LAYER
    from transformers.cache_utils import Cache, DynamicCache

    if buffer is None:
        return DynamicCache()
    if _BUFFER_LAYER is None:
        _BUFFER_LAYER = _buffer_layer_class()
    return Cache(layers=[_BUFFER_LAYER(layer[0], layer[1], filled) for layer in buffer])


def _attention(backbone: nn.Module) -> str:
    """The backbone's attention implementation ("sdpa", "eager", ...), "" when unknown."""
    return str(getattr(backbone.config, "_attn_implementation", "") or "")


def key_cost(backbone: nn.Module) -> float:
    """One query-key pair's attention work relative to one token's linear work for this backbone
    (:func:`tts_eval.prm.planning.key_cost_of_shape` of its config and parameter counts); 0.0
    when the config does not give the shape."""
    config = backbone.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = getattr(config, "num_hidden_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    head_dim = getattr(config, "head_dim", None) or (hidden // heads if hidden and heads else None)
    embedding = sum(m.weight.numel() for m in backbone.modules() if isinstance(m, nn.Embedding))
    linear = sum(p.numel() for p in backbone.parameters()) - embedding
    return key_cost_of_shape(layers, heads, head_dim, linear)
