"""How the transformers PRM scorer plans its forwards: packing by cached past, then bucketing.

Pure tables over ``tts_eval.prm.planning.pack`` / ``bucket`` (no model, no torch): which items
share a row, which rows share a forward, under the cost model and the budgets. That packed rows
score like separate ones is tested on tiny real PRMs in test_prm_models.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tts_eval.prm import planning

BLOCK = 16
KEY_COST = 3.2e-4  # SmolLM2-135M's (see tts_eval.prm.hf.key_cost)


def _item(past: int, new: int, prefix: int = 0) -> planning.Item:
    """An item with ``past`` cached tokens (ids from ``prefix``) and ``new`` uncached ones."""
    assert past % BLOCK == 0
    ids = tuple(range(prefix, prefix + past)) + tuple(range(10**6, 10**6 + new))
    blocks = [("payload", k) for k in range(past // BLOCK)]  # opaque to the planner
    return planning.Item(ids, blocks, BLOCK)


def _shape(rows: list[planning.Row]) -> list[tuple[int, ...]]:
    return sorted(tuple(sorted(it.new for it in row.items)) for row in rows)


@pytest.mark.parametrize(
    ("past", "news", "rows"),
    [
        # best-of-N samples on a short prompt: packing two nearly doubles their attention (+8%)
        (96, [280, 280], [(280,), (280,)]),
        # a tree search's children on a long parent: the past copied once, attention +4%
        (304, [50, 50, 50, 50], [(50, 50, 50, 50)]),
        (400, [30] * 8, [(30,) * 8]),
        # short children ride along a long one (+1%), but two long ones stay apart (+6%)
        (304, [400, 40, 30, 20], [(20, 30, 40, 400)]),
        (304, [400, 400, 40], [(40, 400), (400,)]),
        # nothing cached: nothing to share
        (0, [50, 50], [(50,), (50,)]),
    ],
)
def test_pack_shares_a_row_when_it_costs_little(past, news, rows):
    assert _shape(planning.pack([_item(past, n) for n in news], KEY_COST, 8192, 8192)) == rows


def test_pack_keeps_different_pasts_and_the_budgets_apart():
    items = [_item(304, 50, prefix=0), _item(304, 50, prefix=0), _item(304, 50, prefix=7)]
    packed = planning.pack(items, KEY_COST, 8192, 8192)
    assert _shape(packed) == [(50,), (50, 50)]  # the third has the same length, another past
    assert all(len({it.ids[:304] for it in row.items}) == 1 for row in packed)
    four = [_item(304, 50) for _ in range(4)]
    assert _shape(planning.pack(four, KEY_COST, 100, 8192)) == [(50, 50), (50, 50)]  # new budget
    assert _shape(planning.pack(four, KEY_COST, 8192, 404)) == [(50, 50), (50, 50)]  # past + new


def test_pack_extra_cost_bound_decides(monkeypatch):
    items = [_item(96, 280), _item(96, 280)]
    monkeypatch.setattr(planning, "MAX_PACK_EXTRA_COST", 0.10)  # the +8% of the pair is now allowed
    assert _shape(planning.pack(items, KEY_COST, 8192, 8192)) == [(280, 280)]
    monkeypatch.setattr(planning, "MAX_PACK_EXTRA_COST", 0.05)
    assert _shape(planning.pack(items, 0.0, 8192, 8192)) == [(280, 280)]  # free attention: packed


def _rows(*shapes: tuple[int, int]) -> list[planning.Row]:
    return [
        planning.Row([_item(past, new, prefix=i * 10**4)]) for i, (past, new) in enumerate(shapes)
    ]


def _forwards(plan: list[list[planning.Row]]) -> list[list[tuple[int, int]]]:
    return sorted(sorted((r.past, r.new) for r in batch) for batch in plan)


def test_bucket_joins_similar_rows_and_splits_on_the_padding_bounds():
    similar = _rows(*[(96, n) for n in (100, 98, 97, 95, 93)])
    assert len(planning.bucket(similar, KEY_COST, 8192, 8192)) == 1
    # 300 and 30 new tokens: one rectangle would be 80% padding
    assert _forwards(planning.bucket(_rows((96, 300), (96, 30)), KEY_COST, 8192, 8192)) == [
        [(96, 30)],
        [(96, 300)],
    ]
    plan = planning.bucket(similar + _rows((96, 300), (96, 30)), KEY_COST, 8192, 8192)
    for batch in plan:  # every forward within the bounds
        new, past = max(r.new for r in batch), max(r.past for r in batch)
        assert len(batch) * new <= planning.MAX_NEW_PADDING * sum(r.new for r in batch)
        total = sum(r.new + r.past for r in batch)
        assert len(batch) * (new + past) <= planning.MAX_TOTAL_PADDING * total


def test_bucket_keeps_to_the_token_budgets():
    rows = _rows(*[(96, 100)] * 10)
    assert [len(b) for b in planning.bucket(rows, KEY_COST, 450, 8192)] == [4, 4, 2]
    assert [len(b) for b in planning.bucket(rows, KEY_COST, 8192, 600)] == [3, 3, 3, 1]
    big = _rows((0, 9000), (0, 10))
    assert _forwards(planning.bucket(big, KEY_COST, 8192, 8192 * 8)) == [[(0, 10)], [(0, 9000)]]


def test_bucket_weighs_a_forward_against_padding(monkeypatch):
    """Rows within the padding bounds share a forward when the padding costs less than a
    forward of their own (FORWARD_COST_TOKENS), and not when forwards are free."""
    rows = _rows((96, 100), (96, 92))  # 8 padded tokens
    assert len(planning.bucket(rows, KEY_COST, 8192, 8192)) == 1
    monkeypatch.setattr(planning, "FORWARD_COST_TOKENS", 0)
    assert len(planning.bucket(rows, KEY_COST, 8192, 8192)) == 2
    monkeypatch.setattr(planning, "FORWARD_COST_TOKENS", 5)  # 8 padded tokens cost more than 5
    assert len(planning.bucket(rows, KEY_COST, 8192, 8192)) == 2
    monkeypatch.setattr(planning, "FORWARD_COST_TOKENS", 10)
    assert len(planning.bucket(rows, KEY_COST, 8192, 8192)) == 1


@pytest.mark.real_model
def test_key_cost_of_a_real_backbone_matches_the_measured_one(smollm2):
    """SmolLM2-135M: 4 x 9 heads x 64 x 30 layers / (2 x ~106M non-embedding parameters); a
    least-squares fit of forward times on the 2-core CPU gave 2.6e-4 to 3.8e-4 per query-key pair
    (relative to one token's linear work)."""
    from transformers import AutoModel

    from tts_eval.prm.hf import key_cost

    backbone = AutoModel.from_pretrained(smollm2)
    embedding = backbone.get_input_embeddings().weight.numel()
    linear = sum(p.numel() for p in backbone.parameters()) - embedding
    assert key_cost(backbone) == pytest.approx(4 * 9 * 64 * 30 / (2 * linear))
    assert 2.6e-4 <= key_cost(backbone) <= 3.8e-4


def test_key_cost_of_a_shape():
    # SmolLM2-135M: 30 layers of 9 heads of 64, ~106M parameters outside the embedding
    assert planning.key_cost_of_shape(30, 9, 64, 106_000_000) == pytest.approx(3.26e-4, rel=1e-2)
    assert planning.key_cost_of_shape(None, 9, 64, 10) == 0.0  # unknown shape: attention left out


def test_the_planner_needs_no_torch():
    code = "import sys, tts_eval.prm.planning; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
