"""Small shared helpers for the tests: records, polling with a deadline, watch consumers."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from smmf.instance import Instance
from smmf.registry import Delete, Lease, Put, Registry, Snapshot, WatchEvent, open_registry
from smmf.registry.keys import key_id
from smmf.tasks import cancel_and_wait

T = TypeVar("T")

_ports = itertools.count(20000)


def record(model: str = "m", **fields: Any) -> Instance:
    port = next(_ports)
    fields.setdefault("id", f"127.0.0.1:{port}-t{port}")
    fields.setdefault("endpoint", f"http://127.0.0.1:{port}/v1")
    return Instance(model=model, **fields)


async def eventually(check: Callable[[], Awaitable[T]], timeout: float, interval: float = 0.05) -> T:
    """Poll `check` until it returns a truthy value; fail with its last value after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)


async def next_event(watch: AsyncIterator[WatchEvent[T]], timeout: float = 5.0) -> WatchEvent[T]:
    return await asyncio.wait_for(anext(watch), timeout)


class Mirror:
    """Applies a watch to a dict, as a client cache would, in a background task."""

    def __init__(self, watch: AsyncIterator[WatchEvent[T]]) -> None:
        self.items: dict[str, T] = {}
        self.events: list[WatchEvent[T]] = []
        self.snapshots = 0
        self._watch = watch
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async for event in self._watch:
            self.events.append(event)
            if isinstance(event, Snapshot):
                self.snapshots += 1
                self.items = {key_id(key): value for key, value in event.items.items()}
            elif isinstance(event, Put):
                self.items[event.id] = event.value
            elif isinstance(event, Delete):
                self.items.pop(event.id, None)

    async def holds(self, *ids: str) -> bool:
        """All `ids` are present (as an awaitable predicate for `eventually`)."""
        return set(ids) <= self.items.keys()

    async def lacks(self, *ids: str) -> bool:
        return not set(ids) & self.items.keys()

    async def holds_exactly(self, *ids: str) -> bool:
        return set(ids) == self.items.keys()

    async def saw_delete(self, instance_id: str) -> bool:
        return any(isinstance(e, Delete) and e.id == instance_id for e in self.events)

    @property
    def failed(self) -> BaseException | None:
        return self._task.exception() if self._task.done() and not self._task.cancelled() else None

    async def close(self) -> None:
        """Stop the task for certain: aetcd creates a watch inside `wait_for`, which can swallow one cancel on 3.11."""
        await cancel_and_wait(self._task)
        await self._watch.aclose()  # type: ignore[attr-defined]


@dataclass
class HeldRecord:
    """A record kept alive by one registry client while another client mirrors the watch."""

    holder: Registry
    watcher: Registry
    record: Instance
    lease: Lease
    mirror: Mirror


@asynccontextmanager
async def held_and_watched(url: str, ttl: float) -> AsyncIterator[HeldRecord]:
    async with open_registry(url) as holder, open_registry(url) as watcher:
        rec = record()
        lease = await holder.register(rec, ttl)
        keepalive = asyncio.create_task(lease.keepalive())
        mirror = Mirror(watcher.watch())
        await eventually(lambda: mirror.holds(rec.id), 5)
        try:
            yield HeldRecord(holder, watcher, rec, lease, mirror)
        finally:
            keepalive.cancel()
            await mirror.close()


def assert_stream_matches_plain(client: Any, **params: Any) -> None:
    """A greedy completion streamed (with usage) arrives in several chunks that add up to the plain one."""
    plain = client.completions.create(**params)
    chunks = list(client.completions.create(**params, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    assert len(pieces) >= 3, pieces
    assert "".join(pieces) == plain.choices[0].text, "greedy decoding: streamed and plain text agree"
    usage = chunks[-1].usage
    assert usage is not None and plain.usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (plain.usage.prompt_tokens, plain.usage.completion_tokens)
