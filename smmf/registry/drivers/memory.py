"""`memory://NAME` — an in-process registry for tests and single-process tools.

Every `open_registry("memory://NAME")` in one process shares one key space, so
a sidecar and a client in the same test see each other.  Leases expire on
event-loop timers; watchers are fed through asyncio queues.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from ...errors import AlreadyRegistered, Compacted, LeaseNotFound
from ..store import RawEvent, Store

#: How many changes are kept for watchers that resume; older ones are compacted.
HISTORY = 10_000


@dataclass
class _Space:
    data: dict[str, tuple[bytes, int | None]] = field(default_factory=dict)
    leases: dict[int, tuple[float, asyncio.TimerHandle]] = field(default_factory=dict)
    lease_ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    revision: int = 0
    history: deque[RawEvent] = field(default_factory=lambda: deque(maxlen=HISTORY))
    subscribers: set[asyncio.Queue[RawEvent]] = field(default_factory=set)

    @property
    def compacted(self) -> int:
        return self.history[0].revision - 1 if len(self.history) == self.history.maxlen else 0

    def record(self, key: str, value: bytes | None) -> int:
        self.revision += 1
        event = RawEvent(key, value, self.revision)
        self.history.append(event)
        for queue in self.subscribers:
            queue.put_nowait(event)
        return self.revision


_SPACES: dict[str, _Space] = {}


class MemoryStore(Store):
    def __init__(self, name: str = "default") -> None:
        self.address = f"memory://{name}"
        self._space = _SPACES.setdefault(name, _Space())

    async def grant(self, ttl: float) -> int:
        lease = next(self._space.lease_ids)
        self._arm(lease, ttl)
        return lease

    def _arm(self, lease: int, ttl: float) -> None:
        handle = asyncio.get_running_loop().call_later(ttl, self._expire, lease)
        self._space.leases[lease] = (ttl, handle)

    def _expire(self, lease: int) -> None:
        self._space.leases.pop(lease, None)
        for key in [k for k, (_, owner) in self._space.data.items() if owner == lease]:
            del self._space.data[key]
            self._space.record(key, None)

    async def refresh(self, lease: int) -> bool:
        entry = self._space.leases.get(lease)
        if entry is None:
            return False
        ttl, handle = entry
        handle.cancel()
        self._arm(lease, ttl)
        return True

    async def revoke(self, lease: int) -> None:
        entry = self._space.leases.get(lease)
        if entry is not None:
            entry[1].cancel()
            self._expire(lease)

    async def put(self, key: str, value: bytes, lease: int | None = None) -> int:
        if lease is not None and lease not in self._space.leases:
            raise LeaseNotFound(f"lease {lease} not found")
        self._space.data[key] = (value, lease)
        return self._space.record(key, value)

    async def create(self, key: str, value: bytes, lease: int | None = None) -> int:
        if key in self._space.data:
            raise AlreadyRegistered(key)
        return await self.put(key, value, lease)

    async def get(self, key: str) -> bytes | None:
        entry = self._space.data.get(key)
        return None if entry is None else entry[0]

    async def delete(self, key: str) -> bool:
        if self._space.data.pop(key, None) is None:
            return False
        self._space.record(key, None)
        return True

    async def list(self, prefix: str) -> tuple[dict[str, bytes], int]:
        items = {k: v for k, (v, _) in self._space.data.items() if k.startswith(prefix)}
        return items, self._space.revision

    async def stream(self, prefix: str, after: int) -> AsyncGenerator[RawEvent, None]:
        space = self._space
        if after < space.compacted:
            raise Compacted(after, space.compacted)
        queue: asyncio.Queue[RawEvent] = asyncio.Queue()
        for event in space.history:
            if event.revision > after:
                queue.put_nowait(event)
        space.subscribers.add(queue)
        try:
            while True:
                event = await queue.get()
                if event.key.startswith(prefix):
                    yield event
        finally:
            space.subscribers.discard(queue)
