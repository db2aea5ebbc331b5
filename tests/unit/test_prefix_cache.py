"""The sim backend's prefix cache: chained blocks, whole blocks only, LRU eviction, vLLM's token counts."""

from __future__ import annotations

import pytest

from smmf.worker.backends.prefix_cache import PrefixCache, block_hashes


def words(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def test_a_repeated_prompt_hits_its_whole_blocks_and_the_counts_are_in_tokens() -> None:
    cache = PrefixCache(capacity=100, block_tokens=4)
    prompt = words("t", 10)  # two whole blocks and two tokens over
    assert cache.admit(prompt) == 0
    assert cache.admit(prompt) == 8
    assert (cache.queries, cache.hits) == (20, 8)


def test_a_block_is_reused_only_behind_the_same_prefix() -> None:
    cache = PrefixCache(capacity=100, block_tokens=4)
    shared = words("s", 8)
    cache.admit(shared + words("a", 8))
    assert cache.cached(shared + words("b", 8)) == 8
    assert cache.cached(["x", *shared[1:], *words("a", 8)]) == 0  # same later blocks, different first one
    assert block_hashes(shared, 4)[1] != block_hashes(words("z", 4) + shared[4:], 4)[1]


def test_the_least_recently_used_blocks_go_first() -> None:
    cache = PrefixCache(capacity=4, block_tokens=2)
    a, b, c = words("a", 4), words("b", 4), words("c", 4)
    cache.admit(a)
    cache.admit(b)
    cache.admit(a)  # a is now the more recent
    cache.admit(c)  # evicts b's two blocks
    assert cache.blocks == 4
    assert cache.cached(a) == 4 and cache.cached(c) == 4 and cache.cached(b) == 0


def test_a_lookup_stops_at_the_first_block_not_held() -> None:
    cache = PrefixCache(capacity=2, block_tokens=2)
    cache.admit(words("p", 6))  # three blocks; the first was evicted
    assert cache.cached(words("p", 6)) == 0


def test_nonsense_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="block size"):
        PrefixCache(capacity=10, block_tokens=0)
