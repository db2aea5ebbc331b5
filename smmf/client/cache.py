"""The instance cache: one watch on the registry, kept in memory, read on every request.

The request path reads this cache and never calls the registry.  The watch
resyncs by itself after errors and never empties what it holds because the
registry went away (see `smmf.registry.watch`), so a registry outage
leaves the client serving from its last-known instances.  Each instance is
held as a `Peer`, which keeps what this client learned about it across the
sidecar's rewrites of its record.

Peers are kept by registry key, so a delete removes exactly what its key
held.  Records this client's `Trust` refuses are never held at all.

A burst of deletes that would leave a model with no instance is held back
for `HOLD_EMPTY` seconds, after Nacos's push-empty protection: when a
registry that froze for longer than the TTL resumes, it expires every lease
at once and the sidecars register again milliseconds later.  Requests in
that window go to the last known instances, and retries deal with any that
are really gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

from ..instance import Instance, first_report
from ..registry import Connection, Delete, Put, Registry, Snapshot
from ..tasks import cancel_and_wait
from .peer import Peer
from .trust import Trust

__all__ = ["HOLD_EMPTY", "InstanceCache"]

log = logging.getLogger(__name__)

#: Seconds a change that would leave a model with no instance is held back.
HOLD_EMPTY = 5.0


class InstanceCache:
    def __init__(self, registry: Registry, trust: Trust | None = None) -> None:
        self.registry = registry
        self.trust = trust or Trust()
        self.models: dict[str, dict[str, Peer]] = {}
        self._keys: dict[str, tuple[str, str]] = {}
        #: Records this client's `Trust` refuses, by key, with the reason: never routed to, but shown to operators.
        self.refused: dict[str, tuple[Instance, str]] = {}
        #: Per model, the peers deleted in the last HOLD_EMPTY seconds: (when, key, peer).
        self._recent: dict[str, list[tuple[float, str, Peer]]] = {}
        #: Keys deleted from the registry but held back, so their model is not left empty.
        self._held: set[str] = set()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Whether the watch is reaching the registry (what it serves meanwhile is the last-known state).
        self.connection = Connection()
        #: Counts the watch's events, so a viewer can wait for the next one (`changed`).
        self.version = 0
        self._changed = asyncio.Event()

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

    async def first_snapshot(self, timeout: float = 10.0) -> bool:
        """Wait for the registry's first snapshot if it has not come yet; True when it came during this call.

        A request that finds no instance before the first snapshot may only
        be early (a slow registry, a loaded machine): it waits for the
        snapshot rather than fail.  But first the registry is asked directly,
        so that when it cannot be reached its own error, with its address,
        says why at once (`RegistryUnavailable`): then a missing model is the
        registry's fault, not the caller's.
        """
        if self.ready:
            return False
        await self.registry.list()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self.ready

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def changed(self, version: int) -> int:
        """Wait until the cache has moved past `version` (a record came, changed or went); the new version.

        For one watcher of the whole fleet, such as the gateway's dashboard
        feed; the request path never waits here.
        """
        while self.version == version:
            await self._changed.wait()
        return self.version

    async def holds(self, model: str, instance_id: str, timeout: float) -> bool:
        """Wait up to `timeout` seconds until the watch has brought this instance; whether it has.

        For a process that has just registered a record and is about to be
        asked for it (the gateway answering its own register): the registry
        has it at once, this cache only when the watch delivers it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        version = self.version
        while not any(peer.id == instance_id for peer in self.peers(model)):
            if not any(r.id == instance_id for r, _ in self.refused.values()) and loop.time() < deadline:
                with contextlib.suppress(TimeoutError):
                    version = await asyncio.wait_for(self.changed(version), deadline - loop.time())
                continue
            return False
        return True

    async def _run(self) -> None:
        async for event in self.registry.watch(connection=self.connection):
            if isinstance(event, Snapshot):
                for key in set(self._keys) - set(event.items):
                    self._remove(key)
                for key, record in event.items.items():
                    self._put(key, record)
                self._ready.set()
            elif isinstance(event, Put):
                self._put(event.key, event.value)
            elif isinstance(event, Delete):
                self._remove(event.key)
            self._touch()

    def _touch(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def _put(self, key: str, record: Instance) -> None:
        reason = self.trust.refusal(record)
        if reason is not None:
            if first_report(key, reason):
                log.warning("not routing to the record at %r: %s", key, reason)
            self._drop(key)
            self.refused[key] = (record, reason)
            return
        self.refused.pop(key, None)
        self._held.discard(key)
        peers = self.models.setdefault(record.model, {})
        peer = peers.get(record.id)
        if peer is None:
            peer = peers[record.id] = Peer(record)
            peer.can_eject = functools.partial(self._others_available, record.model)
        else:
            peer.update(record)
        self._keys[key] = (record.model, record.id)

    def _remove(self, key: str) -> None:
        """A key was deleted: drop its peer, unless that leaves the model with none (see `HOLD_EMPTY`)."""
        self.refused.pop(key, None)
        if key in self._held or key not in self._keys:
            return
        model, instance_id = self._keys[key]
        peer = self.models[model][instance_id]
        self._drop(key)
        if not self.ready:
            return
        now = time.monotonic()
        recent = [entry for entry in self._recent.get(model, []) if entry[0] > now - HOLD_EMPTY]
        recent.append((now, key, peer))
        if model in self.models:
            self._recent[model] = recent
            return
        self._recent.pop(model, None)
        log.warning(
            "%s would have no instance left: keeping its last %d for %gs in case they register again",
            model, len(recent), HOLD_EMPTY,
        )  # fmt: skip
        peers = self.models.setdefault(model, {})
        for _, held_key, held in recent:
            peers[held.id] = held
            self._keys[held_key] = (model, held.id)
            self._held.add(held_key)
        asyncio.get_running_loop().call_later(HOLD_EMPTY, self._release, [k for _, k, _ in recent])

    def _release(self, keys: list[str]) -> None:
        """The hold is over: drop what was held back and has not been registered again."""
        for key in keys:
            if key in self._held:
                self._held.discard(key)
                self._drop(key)
        self._touch()

    def _drop(self, key: str) -> None:
        where = self._keys.pop(key, None)
        if where is None:
            return
        model, instance_id = where
        peers = self.models.get(model, {})
        peers.pop(instance_id, None)
        if not peers:
            self.models.pop(model, None)

    def _others_available(self, model: str) -> bool:
        """Ejecting one more instance still leaves the model at least one other available instance."""
        now = time.monotonic()
        return sum(peer.available(now) for peer in self.models.get(model, {}).values()) > 1

    def peers(self, model: str) -> list[Peer]:
        return list(self.models.get(model, {}).values())

    def known_models(self) -> list[str]:
        return sorted(self.models)
