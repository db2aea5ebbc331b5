"""`sim`: a deterministic simulated LLM for tests and benchmarks (labelled as simulated in /v1/models).

It behaves like a batching engine: up to `--slots` requests decode at once,
each one slower as more share the engine (`--slowdown` per extra request),
and the rest wait.  Output is a deterministic function of the prompt, so
tests can compare answers across instances.  `--fail-rate` fails that
fraction of requests before their first token, with a 503 a client may
retry elsewhere.  Embeddings are hashed bags of words, 384 wide.

With `--prefix-cache-blocks N` it models a prefix cache of N blocks
(`prefix_cache.py`; a token is a whitespace-separated word): the time to
first token grows by `--prefill-ms-per-token` for every prompt token not
already cached, as prefill does on a real engine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import random
from collections.abc import AsyncIterator

from ...errors import ConfigurationError, ErrorResponse
from ...wire.responses import Usage
from ..requests import ChatRequest, CompletionRequest, Delta, EmbeddingRequest
from .base import Backend
from .prefix_cache import PrefixCache

_WORDS = (  # noqa: SIM905 - a sentence reads better than thirty quoted words
    "the model answers with simulated words that carry no meaning but arrive at a steady pace "
    "like tokens from a real engine under load so balancers and tests can measure what they need"
).split()

DEFAULT_MAX_TOKENS = 16
EMBEDDING_DIMENSIONS = 384


def prompt_of(request: ChatRequest | CompletionRequest) -> str:
    if isinstance(request, ChatRequest):
        return "\n".join(f"{m.role}: {m.text}" for m in request.messages)
    return request.text


class SimBackend(Backend):
    name = "sim"
    simulated = True
    routes = frozenset({"chat", "completions", "embeddings"})

    def __init__(
        self,
        ttft_ms: float = 20.0,
        tpot_ms: float = 5.0,
        slots: int = 8,
        slowdown: float = 0.05,
        fail_rate: float = 0.0,
        seed: int | None = None,
        prefix_cache_blocks: int = 0,
        block_tokens: int = 16,
        prefill_ms_per_token: float = 0.0,
    ) -> None:
        if not 0.0 <= fail_rate <= 1.0:
            raise ConfigurationError("--fail-rate is a fraction between 0 and 1")
        if slots < 1 or ttft_ms < 0 or tpot_ms < 0 or slowdown < 0 or prefill_ms_per_token < 0:
            raise ConfigurationError("--slots must be >= 1 and the latencies and slowdown >= 0")
        if prefix_cache_blocks < 0 or block_tokens < 1:
            raise ConfigurationError("--prefix-cache-blocks must be >= 0 and --block-tokens >= 1")
        self.prefix_cache = PrefixCache(prefix_cache_blocks, block_tokens) if prefix_cache_blocks else None
        self.prefill = prefill_ms_per_token / 1000
        self.ttft = ttft_ms / 1000
        self.tpot = tpot_ms / 1000
        self.slowdown = slowdown
        self.fail_rate = fail_rate
        self._random = random.Random(seed)
        self._slots = asyncio.Semaphore(slots)
        self.active = 0

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--ttft-ms", type=float, default=20.0, help="time to first token (ms)")
        parser.add_argument("--tpot-ms", type=float, default=5.0, help="time per output token (ms)")
        parser.add_argument("--slots", type=int, default=8, help="requests decoded at once")
        parser.add_argument("--slowdown", type=float, default=0.05, help="extra time per token per other request")
        parser.add_argument("--fail-rate", type=float, default=0.0, help="fraction of requests failed on purpose")
        parser.add_argument("--seed", type=int, default=None, help="seed for --fail-rate")
        parser.add_argument("--prefix-cache-blocks", type=int, default=0, help="prefix cache size in blocks (0: none)")
        parser.add_argument("--block-tokens", type=int, default=16, help="tokens per prefix-cache block")
        parser.add_argument(
            "--prefill-ms-per-token", type=float, default=0.0, help="extra time to first token per uncached token"
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SimBackend:
        return cls(
            args.ttft_ms, args.tpot_ms, args.slots, args.slowdown, args.fail_rate, args.seed,
            args.prefix_cache_blocks, args.block_tokens, args.prefill_ms_per_token,
        )  # fmt: skip

    def prefix_cache_counts(self) -> tuple[int, int] | None:
        if self.prefix_cache is None:
            return None
        return self.prefix_cache.queries, self.prefix_cache.hits

    async def embed(self, request: EmbeddingRequest) -> tuple[list[list[float]], int]:
        """Hashed bag-of-words vectors: deterministic, and sentences sharing words come out closer."""
        vectors = []
        for text in request.texts:
            vector = [0.0] * EMBEDDING_DIMENSIONS
            for word in text.lower().split():
                slot = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big")
                vector[slot % EMBEDDING_DIMENSIONS] += 1.0
            norm = math.sqrt(sum(x * x for x in vector)) or 1.0
            vectors.append([x / norm for x in vector])
        return vectors, sum(len(text.split()) for text in request.texts)

    def _token_time(self) -> float:
        return self.tpot * (1 + self.slowdown * max(0, self.active - 1))

    async def generate(self, request: ChatRequest | CompletionRequest) -> AsyncIterator[Delta]:
        prompt = prompt_of(request)
        if self.fail_rate and self._random.random() < self.fail_rate:
            raise ErrorResponse(503, "Simulated failure (--fail-rate).", type="server_error", code="simulated_failure")
        count = request.token_limit or DEFAULT_MAX_TOKENS
        start = int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=4).digest(), "big")
        tokens = prompt.split()
        async with self._slots:
            self.active += 1
            try:
                cached = None if self.prefix_cache is None else self.prefix_cache.admit(tokens)
                uncached = len(tokens) - (cached or 0)
                usage = Usage.counted(len(tokens), count, cached)
                if self.ttft or self.prefill:
                    await asyncio.sleep(self.ttft + uncached * self.prefill)
                for i in range(count):
                    if i and self.tpot:
                        await asyncio.sleep(self._token_time())
                    word = _WORDS[(start + i * 7) % len(_WORDS)]
                    last = i == count - 1
                    yield Delta(
                        text=word if i == 0 else " " + word,
                        finish_reason="length" if last else None,
                        usage=usage if last else None,
                    )
            finally:
                self.active -= 1
