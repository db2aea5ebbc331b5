"""Small shared helpers for the tests: records, polling with a deadline, watch consumers."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from smmf.instance import Instance
from smmf.registry_drivers import Delete, Put, Snapshot, WatchEvent

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
                self.items = dict(event.items)
            elif isinstance(event, Put):
                self.items[event.id] = event.value
            elif isinstance(event, Delete):
                self.items.pop(event.id, None)

    @property
    def failed(self) -> BaseException | None:
        return self._task.exception() if self._task.done() and not self._task.cancelled() else None

    async def close(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        await self._watch.aclose()  # type: ignore[attr-defined]
