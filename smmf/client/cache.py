"""The instance cache: one watch on the registry, kept in memory, read on every request.

The request path reads this cache and never calls the registry.  The watch
resyncs by itself after errors and never empties what it holds because the
registry went away (see `smmf.registry.watch`), so a registry outage
leaves the client serving from its last-known instances.  Each instance is
held as a `Peer`, which keeps what this client learned about it across the
sidecar's rewrites of its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

from ..instance import Instance
from ..registry import Delete, Put, Registry, Snapshot
from .peer import Peer

__all__ = ["InstanceCache"]

log = logging.getLogger(__name__)


class InstanceCache:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.models: dict[str, dict[str, Peer]] = {}
        self._by_id: dict[str, str] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float | None = 10.0) -> None:
        """Begin watching; wait (up to `timeout`) for the first snapshot so the first request finds instances."""
        self._task = asyncio.create_task(self._run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
        if not self._ready.is_set():
            log.warning("no snapshot from %s yet; requests fail until the registry answers", self.registry.url)

    @property
    def ready(self) -> bool:
        """Whether the registry's first snapshot has arrived."""
        return self._ready.is_set()

    async def check_registry(self) -> None:
        """Raise `RegistryUnavailable` when the cache is empty because the registry was never reached.

        Then a missing model is the registry's fault, and the caller should
        hear that, with its address, rather than that the model is unknown.
        """
        if not self.ready:
            await self.registry.list()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async for event in self.registry.watch():
            if isinstance(event, Snapshot):
                for instance_id in set(self._by_id) - set(event.items):
                    self._remove(instance_id)
                for record in event.items.values():
                    self._put(record)
                self._ready.set()
            elif isinstance(event, Put):
                self._put(event.value)
            elif isinstance(event, Delete):
                self._remove(event.id)

    def _put(self, record: Instance) -> None:
        previous_model = self._by_id.get(record.id)
        if previous_model is not None and previous_model != record.model:
            self._remove(record.id)
        peers = self.models.setdefault(record.model, {})
        peer = peers.get(record.id)
        if peer is None:
            peer = peers[record.id] = Peer(record)
            peer.can_eject = functools.partial(self._others_available, record.model)
        else:
            peer.update(record)
        self._by_id[record.id] = record.model

    def _remove(self, instance_id: str) -> None:
        model = self._by_id.pop(instance_id, None)
        if model is None:
            return
        self.models.get(model, {}).pop(instance_id, None)
        if not self.models.get(model):
            self.models.pop(model, None)

    def _others_available(self, model: str) -> bool:
        """Ejecting one more instance still leaves the model at least one other available instance."""
        now = time.monotonic()
        return sum(peer.available(now) for peer in self.models.get(model, {}).values()) > 1

    def peers(self, model: str) -> list[Peer]:
        return list(self.models.get(model, {}).values())

    def known_models(self) -> list[str]:
        return sorted(self.models)
