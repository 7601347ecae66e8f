"""How the transformers PRM scorer plans its forwards: packing by cached past, then bucketing.

Pure (no torch): the scorer (:mod:`tts_eval.prm.hf`) hands the planner its sequences as
:class:`Item` (token ids and cached prefix blocks) and runs what it plans.

A batched forward is a rectangle (rows x the longest new part, after the longest cached past), and
every padded position costs as much as a real one. The planner (:func:`pack`, then :func:`bucket`)
weighs that with a cost model in tokens of work through the weights (:func:`row_cost`: linear
layers, attention from the backbone's shape (:func:`key_cost_of_shape`), the past's copy;
``FORWARD_COST_TOKENS`` per forward): children are packed into a row only while the row costs at
most ``MAX_PACK_EXTRA_COST`` more than they would as rows of their own (so a tree search's short
children on a long parent share a row, best-of-N's long samples on a short prompt do not), and
rows go, by decreasing length, into the planned forward they add the least cost to, or into one
of their own. Whatever the costs say, in every forward the padded new tokens are at most
``MAX_NEW_PADDING`` times the real ones and the padded past + new at most ``MAX_TOTAL_PADDING``
times the real past + new.

What this module does not do: run forwards or hold caches (``hf``, ``cache``).
"""

from __future__ import annotations

from dataclasses import dataclass

# Bucketing bounds of one forward: padded new tokens / real new tokens, and padded (past + new) /
# real (past + new).
MAX_NEW_PADDING = 1.10
MAX_TOTAL_PADDING = 1.25
# The planner's cost of one forward, in units of one token's work through the weights (the linear
# layers): FORWARD_COST_TOKENS + rows x new x (1 + key_cost x (past + new)) + PAST_COPY_COST x rows x
# past, with ``new`` and ``past`` the forward's longest new part and cached past, and ``key_cost``
# one query-key pair's attention work relative to a token's linear work, from the backbone's shape
# (_key_cost). Measured on a 2-core CPU with SmolLM2-135M: a forward's fixed cost (every weight
# streamed once) 16-32 tokens; copying a row's cached past into the forward's buffer ~0.01-0.05
# tokens per past token.
FORWARD_COST_TOKENS = 32
PAST_COPY_COST = 0.02
# Items sharing a cached past are packed into one row while the row costs at most
# 1 + MAX_PACK_EXTRA_COST times what they cost as rows of their own (see _pack).
MAX_PACK_EXTRA_COST = 0.05


@dataclass
class Item:
    """One sequence to score: its token ids and the cached blocks of its prefix (opaque to the
    planner; the scorer's key/value payloads), ``block_size`` tokens each."""

    ids: tuple[int, ...]
    blocks: list
    block_size: int

    @property
    def past(self) -> int:
        return len(self.blocks) * self.block_size

    @property
    def new(self) -> int:
        return len(self.ids) - self.past


@dataclass
class Row:
    """Items sharing one cached past, run as one row: ``[past | item 1 new | item 2 new | ...]``;
    each item attends to the past and to its own new tokens only."""

    items: list[Item]

    @property
    def blocks(self) -> list:
        return self.items[0].blocks

    @property
    def past(self) -> int:
        return self.items[0].past

    @property
    def new(self) -> int:
        return sum(it.new for it in self.items)


def row_cost(past: int, new: int, key_cost: float) -> float:
    """Planned work of one row (see FORWARD_COST_TOKENS), in tokens through the linear layers:
    every position runs them and attends to ``past + new`` keys (masked ones are computed too),
    and the row's past is copied into the forward's buffer."""
    return new * (1 + key_cost * (past + new)) + PAST_COPY_COST * past


def pack(items: list[Item], key_cost: float, max_new: int, max_total: int) -> list[Row]:
    """Rows of items, those sharing their cached past (same ids up to it) packed together:
    first-fit by decreasing new length into the first row of their past that then costs at most
    ``1 + MAX_PACK_EXTRA_COST`` times its items as rows of their own (``row_cost``: packing
    saves the past's copies and makes rows of even lengths, at the price of attention computed
    and masked away) and keeps its new tokens within ``max_new``, its past + new within
    ``max_total``."""
    rows: list[Row] = []
    groups: dict[tuple[int, ...], list[Row]] = {}
    for it in sorted(items, key=lambda it: it.new, reverse=True):
        group = groups.setdefault(it.ids[: it.past], []) if it.past else []
        for row in group:
            new = row.new + it.new
            alone = sum(row_cost(i.past, i.new, key_cost) for i in (*row.items, it))
            if (
                new <= max_new
                and row.past + new <= max_total
                and row_cost(row.past, new, key_cost) <= (1 + MAX_PACK_EXTRA_COST) * alone
            ):
                row.items.append(it)
                break
        else:
            rows.append(Row([it]))
            group.append(rows[-1])
    return rows


@dataclass(frozen=True)
class Shape:
    """A planned forward: ``rows`` x (``past`` + ``new``) padded tokens, ``new_sum`` and
    ``past_sum`` real ones (a packed row's past counted once)."""

    rows: int = 0
    new: int = 0
    past: int = 0
    new_sum: int = 0
    past_sum: int = 0

    def cost(self, key_cost: float) -> float:
        return self.rows * row_cost(self.past, self.new, key_cost)

    def grown(self, row: Row) -> Shape:
        return Shape(
            self.rows + 1,
            max(self.new, row.new),
            max(self.past, row.past),
            self.new_sum + row.new,
            self.past_sum + row.past,
        )

    def fits(self, budget: int, kv_budget: int) -> bool:
        padded, padded_total = self.rows * self.new, self.rows * (self.past + self.new)
        return (
            padded <= budget
            and padded_total <= kv_budget
            and padded <= MAX_NEW_PADDING * self.new_sum
            and padded_total <= MAX_TOTAL_PADDING * (self.past_sum + self.new_sum)
        )


def bucket(rows: list[Row], key_cost: float, budget: int, kv_budget: int) -> list[list[Row]]:
    """Forwards of ``rows``: by decreasing new length, each row goes where it adds the least
    planned cost (``FORWARD_COST_TOKENS``, ``row_cost``): into a forward already planned (padded
    to its longest row and past) or into one of its own. A forward keeps to the token budgets
    (``budget`` new, ``kv_budget`` padded past + new tokens) and to the padding bounds
    (``MAX_NEW_PADDING``, ``MAX_TOTAL_PADDING``), however cheap it would be."""
    forwards: list[tuple[Shape, list[Row]]] = []
    for row in sorted(rows, key=lambda r: (r.new, r.past), reverse=True):
        best, best_cost = None, FORWARD_COST_TOKENS + row_cost(row.past, row.new, key_cost)
        for i, (shape, _) in enumerate(forwards):
            grown = shape.grown(row)
            extra = grown.cost(key_cost) - shape.cost(key_cost)
            if extra < best_cost and grown.fits(budget, kv_budget):
                best, best_cost = i, extra
        if best is None:
            forwards.append((Shape().grown(row), [row]))
        else:
            shape, planned = forwards[best]
            planned.append(row)
            forwards[best] = (shape.grown(row), planned)
    return [planned for _, planned in forwards]


def key_cost_of_shape(
    layers: int | None, heads: int | None, head_dim: int | None, linear_params: int
) -> float:
    """One query-key pair's attention work (scores and the weighted sum of values, all layers)
    relative to one token's work through the linear layers: 4 x query width x layers / (2 x
    non-embedding parameters); ~3e-4 for SmolLM2-135M (measured on CPU: 2.6-3.8e-4). 0.0 when the
    shape is unknown."""
    if not (layers and heads and head_dim) or linear_params <= 0:
        return 0.0
    return 4 * heads * head_dim * layers / (2 * linear_params)
