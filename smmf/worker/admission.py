"""Admission control: a bounded number of generations at once, a bounded queue, and 429 beyond.

A worker that accepts everything lets latency grow without bound and hides
overload from the balancer; refusing early with `Retry-After` lets a client
retry elsewhere at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ..errors import ConfigurationError
from .error_responses import overloaded


class Admission:
    def __init__(self, max_concurrency: int, max_queue: int, retry_after: float = 1.0) -> None:
        if max_concurrency < 1 or max_queue < 0:
            raise ConfigurationError("--max-concurrency must be >= 1 and --max-queue >= 0")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.retry_after = retry_after
        self._slots = asyncio.Semaphore(max_concurrency)
        self.inflight = 0
        self.queued = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one generation slot; raise a 429 `ErrorResponse` when the queue is full too."""
        if self._slots.locked():
            if self.queued >= self.max_queue:
                raise overloaded(self.retry_after)
            self.queued += 1
            try:
                await self._slots.acquire()
            finally:
                self.queued -= 1
        else:
            await self._slots.acquire()
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1
            self._slots.release()
