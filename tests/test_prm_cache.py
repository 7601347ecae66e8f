"""PrefixCache: block-granular longest-common-prefix lookup and LRU eviction by bytes."""

from __future__ import annotations

import pytest

from tts_eval.prm import PrefixCache


def _fill(cache: PrefixCache, ids, tag: str, size: int = 10) -> None:
    n = len(ids) // cache.block_size
    cache.insert(ids, [f"{tag}{k}" for k in range(n)], [size] * n)


@pytest.mark.parametrize(
    ("stored", "query", "matched"),
    [
        (list(range(12)), list(range(12)), 12),
        (list(range(12)), list(range(14)), 12),  # longer query: all stored blocks
        (list(range(12)), list(range(10)), 8),  # shorter query: whole blocks only
        (list(range(12)), [0, 1, 2, 3, 4, 9, 9, 9, 8, 9, 10, 11], 4),  # diverges in block 2
        (list(range(12)), [9] + list(range(1, 12)), 0),
        (list(range(3)), list(range(3)), 0),  # partial blocks are never stored
    ],
)
def test_match_length(stored, query, matched):
    cache = PrefixCache(max_bytes=10_000, block_size=4)
    _fill(cache, stored, "a")
    assert cache.match_len(query) == matched
    assert cache.match(query) == [f"a{k}" for k in range(matched // 4)]


def test_same_block_tokens_under_different_prefix_do_not_match():
    cache = PrefixCache(max_bytes=10_000, block_size=2)
    _fill(cache, [1, 2, 3, 4], "a")
    assert cache.match_len([9, 9, 3, 4]) == 0
    _fill(cache, [9, 9, 3, 4], "b")
    assert cache.match([9, 9, 3, 4]) == ["b0", "b1"]
    assert cache.match([1, 2, 3, 4]) == ["a0", "a1"]


def test_shared_prefix_blocks_are_stored_once():
    cache = PrefixCache(max_bytes=10_000, block_size=2)
    _fill(cache, [1, 2, 3, 4], "a")
    _fill(cache, [1, 2, 3, 4, 5, 6], "b")
    assert len(cache) == 3 and cache.nbytes == 30
    assert cache.match([1, 2, 3, 4, 5, 6]) == ["a0", "a1", "b2"]


def test_lru_eviction_by_bytes_keeps_recent_prefixes():
    cache = PrefixCache(max_bytes=40, block_size=2)
    _fill(cache, [1, 2, 3, 4], "a")
    _fill(cache, [7, 8, 9, 10], "b")
    cache.match([1, 2, 3, 4])  # touch a: b becomes least recently used
    _fill(cache, [1, 2, 3, 4, 5, 6], "c")  # 50 bytes > 40: evicts b0 first
    assert cache.nbytes <= 40
    assert cache.match_len([1, 2, 3, 4, 5, 6]) == 6
    assert cache.match_len([7, 8, 9, 10]) == 0


def test_disabled_cache_stores_nothing_and_bad_args():
    cache = PrefixCache(max_bytes=0, block_size=2)
    _fill(cache, [1, 2, 3, 4], "a")
    assert len(cache) == 0 and not cache.enabled
    with pytest.raises(ValueError, match="block_size"):
        PrefixCache(10, block_size=0)
    with pytest.raises(ValueError, match="max_bytes"):
        PrefixCache(-1)
    with pytest.raises(ValueError, match="payloads"):
        PrefixCache(10, 2).insert([1, 2], ["x", "y"], [1, 1])
