"""A model of an engine's prefix cache, for the `sim` backend: which of a prompt's leading tokens need no prefill.

It follows vLLM's automatic prefix caching closely enough for routing to
matter the way it does on the real engine: the prompt is cut into blocks of
`block_tokens` tokens; a block is known by a hash of its tokens chained to
the hash of the block before it, so a block is reused only behind the very
same prefix; only whole blocks are kept; a lookup stops at the first block
not held; and the least recently used blocks are evicted once `capacity`
blocks are held.  Queries and hits are counted in tokens, as vLLM's
`vllm:prefix_cache_queries` and `vllm:prefix_cache_hits` are.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["PrefixCache", "block_hashes"]


def block_hashes(tokens: Sequence[str], block_tokens: int) -> list[bytes]:
    """The chained hash of each whole block of `tokens`: equal only where the whole prefix up to it is equal."""
    hashes: list[bytes] = []
    parent = b""
    for start in range(0, len(tokens) - block_tokens + 1, block_tokens):
        block = "\0".join(tokens[start : start + block_tokens]).encode()
        parent = hashlib.blake2b(parent + block, digest_size=16).digest()
        hashes.append(parent)
    return hashes


class PrefixCache:
    def __init__(self, capacity: int, block_tokens: int = 16) -> None:
        if capacity < 0 or block_tokens < 1:
            raise ValueError("the prefix cache's capacity must be >= 0 blocks and its block size >= 1 token")
        self.capacity = capacity
        self.block_tokens = block_tokens
        self._blocks: OrderedDict[bytes, None] = OrderedDict()
        self.queries = 0
        self.hits = 0

    def cached(self, tokens: Sequence[str]) -> int:
        """How many leading tokens of `tokens` are held now, without counting or changing anything."""
        return self._held(block_hashes(tokens, self.block_tokens))

    def _held(self, hashes: list[bytes]) -> int:
        held = 0
        for digest in hashes:
            if digest not in self._blocks:
                break
            held += 1
        return held * self.block_tokens

    def admit(self, tokens: Sequence[str]) -> int:
        """Look `tokens` up, count the query, and keep all their whole blocks; returns the tokens that hit."""
        hashes = block_hashes(tokens, self.block_tokens)
        hit = self._held(hashes)
        self.queries += len(tokens)
        self.hits += hit
        for digest in hashes:
            self._blocks[digest] = None
            self._blocks.move_to_end(digest)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)
        return hit

    @property
    def blocks(self) -> int:
        """Blocks held now.  Not `__len__`: an empty cache would then be falsy, and `if cache:` would skip it."""
        return len(self._blocks)
