"""The registry protocol every part of smmf uses, written once over a driver's `Store`.

Sidecars `register` and keep a `Lease` alive; clients and dashboards `list`
and `watch`; management tools write admin keys that sidecars `watch_admin`.
The public surface is deliberately small, after etcd's naming/endpoints.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType

from pydantic import ValidationError

from ..instance import Instance, parse_record
from .backoff import Backoff
from .base import (
    AdminAction,
    AdminState,
    Delete,
    LeaseNotFound,
    Put,
    RegistryUnavailable,
    Snapshot,
    Store,
    WatchEvent,
)
from .keys import ADMIN, admin_key, instance_key, key_id, model_prefix
from .resync import watch_prefix
import contextlib

__all__ = ["Lease", "Listing", "Registry"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Listing:
    """A consistent snapshot of records and the revision it was taken at."""

    records: list[Instance]
    revision: int


def _decode_admin(key: str, raw: bytes) -> AdminState | None:
    try:
        return AdminState.model_validate_json(raw)
    except (ValidationError, ValueError) as exc:
        log.warning("skipping invalid admin key %r: %s", key, exc.__class__.__name__)
        return None


class Lease:
    """Keeps one record alive in the registry for as long as its holder runs.

    `keepalive()` refreshes every TTL/3 and, when the registry says the lease
    is gone (expired during a network cut, registry restarted without its
    data), registers the record again under a new lease.  It never gives up
    because the registry is away: it retries with a short, capped backoff so
    the record is back soon after the registry answers again.
    """

    def __init__(self, store: Store, record: Instance, ttl: float | None) -> None:
        self._store = store
        self._record = record
        self.ttl = ttl
        self._lease_id: int | None = None
        self._revoked = asyncio.Event()
        #: How many times the lease was found lost and the record registered again.
        self.reacquired = 0

    @property
    def record(self) -> Instance:
        return self._record

    @property
    def lease_id(self) -> int | None:
        """The backend's id of the current lease (None for a persistent record); changes on re-registration."""
        return self._lease_id

    @property
    def key(self) -> str:
        return instance_key(self._record.model, self._record.id)

    @property
    def revoked(self) -> bool:
        return self._revoked.is_set()

    async def acquire(self) -> None:
        """Grant a fresh lease and write the record under it."""
        lease_id = None if self.ttl is None else await self._store.grant(self.ttl)
        await self._store.put(self.key, self._record.to_json(), lease_id)
        self._lease_id = lease_id

    async def keepalive(self) -> None:
        """Run until `revoke()`: refresh, and register again whenever the lease is lost."""
        if self.ttl is None:
            await self._revoked.wait()
            return
        interval = self.ttl / 3
        backoff = Backoff(base=0.1, cap=min(1.0, interval))
        unreachable = False
        while not self.revoked:
            try:
                alive = self._lease_id is not None and await self._store.refresh(self._lease_id)
                if not alive and not self.revoked:
                    log.warning("lease for %s lost; registering again", self.key)
                    await self.acquire()
                    self.reacquired += 1
                    log.info("registered %s again", self.key)
                if unreachable:
                    log.info("registry %s reachable again; lease for %s kept", self._store.address, self.key)
                    unreachable = False
                backoff.reset()
                delay = interval
            except LeaseNotFound:
                self._lease_id = None
                delay = backoff.next_delay()
            except RegistryUnavailable as exc:
                if not unreachable:
                    log.warning("keepalive for %s: %s; retrying", self.key, exc.reason)
                    unreachable = True
                delay = backoff.next_delay()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._revoked.wait(), delay)

    async def update(self, record: Instance) -> None:
        """Rewrite the record under the same lease (load, state, weight changes)."""
        if (record.model, record.id) != (self._record.model, self._record.id):
            raise ValueError("update() keeps the record's model and id; register a new record instead")
        self._record = record
        try:
            await self._store.put(self.key, record.to_json(), self._lease_id)
        except LeaseNotFound:
            log.warning("lease for %s lost during update; registering again", self.key)
            await self.acquire()
            self.reacquired += 1

    async def revoke(self) -> None:
        """Delete the record now and stop `keepalive()`."""
        self._revoked.set()
        if self._lease_id is not None:
            await self._store.revoke(self._lease_id)
        await self._store.delete(self.key)


class Registry:
    """The registry protocol of the design, over any driver's `Store`."""

    def __init__(self, store: Store, url: str) -> None:
        self.store = store
        self.url = url

    async def __aenter__(self) -> Registry:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.store.close()

    # -- instances ---------------------------------------------------------

    async def register(self, record: Instance, ttl: float | None) -> Lease:
        """Publish `record`; it lives while the returned lease is kept alive.

        `ttl=None` stores a persistent record (a third-party API no sidecar
        keeps alive) that lives until `remove()`.
        """
        if ttl is not None and ttl <= 0:
            raise ValueError("ttl must be positive seconds, or None for a persistent record")
        lease = Lease(self.store, record, ttl)
        await lease.acquire()
        return lease

    async def list(self, model: str | None = None) -> Listing:
        raw, revision = await self.store.list(model_prefix(model))
        records = [rec for key, value in raw.items() if (rec := parse_record(key, value)) is not None]
        return Listing(records, revision)

    def watch(self, model: str | None = None) -> AsyncIterator[WatchEvent[Instance]]:
        """A snapshot of the instances (of one model, or all), then their puts and deletes."""
        return watch_prefix(self.store, model_prefix(model), parse_record)

    async def remove(self, instance_id: str) -> bool:
        """Delete a record by id whatever its lease; False when no such record exists."""
        raw, _ = await self.store.list(model_prefix(None))
        found = [key for key in raw if key_id(key) == instance_id]
        for key in found:
            await self.store.delete(key)
        return bool(found)

    # -- admin keys (desired state) ----------------------------------------

    async def put_admin(self, instance_id: str, action: AdminAction | str, requested_by: str | None = None) -> None:
        state = AdminState(action=AdminAction(action), requested_by=requested_by)
        await self.store.put(admin_key(instance_id), state.model_dump_json().encode())

    async def ack_admin(self, instance_id: str, state: AdminState) -> None:
        """Record that the sidecar has carried out `state` (written back with `acked_at`)."""
        acked = state.model_copy(update={"acked_at": time.time()})
        await self.store.put(admin_key(instance_id), acked.model_dump_json().encode())

    async def get_admin(self, instance_id: str) -> AdminState | None:
        key = admin_key(instance_id)
        raw = await self.store.get(key)
        return None if raw is None else _decode_admin(key, raw)

    async def delete_admin(self, instance_id: str) -> bool:
        return await self.store.delete(admin_key(instance_id))

    async def watch_admin(self, instance_id: str | None = None) -> AsyncIterator[WatchEvent[AdminState]]:
        """A snapshot of admin keys (one instance's, or all), then their changes."""
        async for event in watch_prefix(self.store, ADMIN, _decode_admin):
            if instance_id is None:
                yield event
            elif isinstance(event, Snapshot):
                yield Snapshot({k: v for k, v in event.items.items() if k == instance_id}, event.revision)
            elif isinstance(event, Put | Delete) and event.id == instance_id:
                yield event
