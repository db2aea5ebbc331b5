"""`Lease`: keeps one record alive in the registry for as long as its holder runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..backoff import Backoff
from ..errors import LeaseNotFound, RegistryUnavailable, UsageError
from ..instance import Instance
from .keys import instance_key
from .store import Store

__all__ = ["Lease"]

log = logging.getLogger(__name__)


class Lease:
    """One record's lease.

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
            raise UsageError("update() keeps the record's model and id; register a new record instead")
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
