"""`Lease`: keeps one record alive in the registry for as long as its holder runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ..backoff import Backoff
from ..errors import AlreadyRegistered, LeaseNotFound, RegistryUnavailable, UsageError
from ..instance import Instance
from ..outage import Outage
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

    Every write stamps the record's `alive_at`, and `keepalive()` rewrites
    the record when none was written for `heartbeat` seconds, so readers can
    tell a live, idle instance from a stuck one.  Every `check` seconds (or
    TTL/3) it also reads the record back and writes it again when someone
    deleted it under the live lease: a live instance stays findable, and the
    way to take one out of rotation is `offline`, not deleting its key.  An
    `exclusive` lease never
    replaces a record it does not hold: registering, or registering again,
    over someone else's raises `AlreadyRegistered`.
    """

    def __init__(
        self,
        store: Store,
        record: Instance,
        ttl: float | None,
        *,
        exclusive: bool = False,
        heartbeat: float | None = None,
        check: float | None = None,
    ) -> None:
        self._store = store
        self._record = record
        self.ttl = ttl
        self.exclusive = exclusive
        self.heartbeat = heartbeat if heartbeat is not None else ttl
        self.check = check
        self._lease_id: int | None = None
        self._revoked = asyncio.Event()
        self._writing = asyncio.Lock()
        self._written_at = 0.0
        #: How many times the lease was found lost and the record registered again.
        self.reacquired = 0
        #: How many times the record was found deleted under the live lease and written again.
        self.restored = 0

    @property
    def record(self) -> Instance:
        """The record as last written (with its `alive_at`)."""
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

    def _stamped(self) -> bytes:
        """The record to write now: a leased record says it was alive now."""
        now = time.time()
        if self.ttl is not None:
            self._record = self._record.model_copy(update={"alive_at": now})
        self._written_at = time.monotonic()
        return self._record.to_json()

    async def acquire(self) -> None:
        """Grant a fresh lease and write the record under it (for an exclusive lease, only if none is there)."""
        async with self._writing:
            await self._acquire()

    async def _acquire(self) -> None:
        lease_id = None if self.ttl is None else await self._store.grant(self.ttl)
        write = self._store.create if self.exclusive else self._store.put
        data = self._stamped()
        try:
            await write(self.key, data, lease_id)
        except AlreadyRegistered:
            # A driver that retried a create whose answer was lost finds its own write: that is a success.
            if await self._store.get(self.key) != data:
                if lease_id is not None:
                    await self._store.revoke(lease_id)
                raise
        self._lease_id = lease_id

    async def _reacquire(self, lost: int | None, why: str) -> None:
        """Register again in place of the lease `lost`, unless another writer already has.

        The keepalive and an update can find the same lease gone at once;
        the second to get here must not register again, or it would find
        the first one's record and take it for another holder's.
        """
        async with self._writing:
            if self._lease_id != lost or self.revoked:
                return
            log.warning("lease for %s lost%s; registering again", self.key, why)
            await self._acquire()
        self.reacquired += 1
        log.info("registered %s again", self.key)

    async def keepalive(self) -> None:
        """Run until `revoke()`: refresh, and register again whenever the lease is lost.

        Returns only when revoked; raises `AlreadyRegistered` when an exclusive
        lease was lost and another holder's record took its place.
        """
        if self.ttl is None:
            await self._revoked.wait()
            return
        interval = self.ttl / 3 if self.check is None else min(self.ttl / 3, self.check)
        backoff = Backoff(base=0.1, cap=min(1.0, interval))
        outage = Outage(log, f"keepalive of {self.key} at {self._store.address}", "retrying")
        lost: int | None = None  # a lease a write found gone, registered again on the next round
        while not self.revoked:
            lease_id = self._lease_id
            try:
                if lease_id is None or lease_id == lost or not await self._store.refresh(lease_id):
                    await self._reacquire(lease_id, "")
                    lost = None
                elif await self._store.get(self.key) is None and not self.revoked:
                    log.warning("the record %s was deleted under its live lease; writing it again", self.key)
                    await self._write(restore=True)
                    self.restored += 1
                elif self.heartbeat is not None and time.monotonic() - self._written_at >= self.heartbeat:
                    await self._write()
                outage.recovered()
                backoff.reset()
                delay = interval
            except LeaseNotFound:
                lost = lease_id
                delay = backoff.next_delay()
            except RegistryUnavailable as exc:
                outage.failed(exc.reason)
                delay = backoff.next_delay()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._revoked.wait(), delay)

    async def _write(self, *, restore: bool = False) -> None:
        """Rewrite the record; a missing one is `restore`d only where nobody else wrote it since, when exclusive."""
        write = self._store.create if restore and self.exclusive else self._store.put
        async with self._writing:
            await write(self.key, self._stamped(), self._lease_id)

    async def update(self, record: Instance) -> None:
        """Rewrite the record under the same lease (load, state, weight changes)."""
        if (record.model, record.id) != (self._record.model, self._record.id):
            raise UsageError("update() keeps the record's model and id; register a new record instead")
        self._record = record
        lease_id = self._lease_id
        try:
            await self._write()
        except LeaseNotFound:
            await self._reacquire(lease_id, " during update")

    async def revoke(self) -> None:
        """Delete the record now and stop `keepalive()`.

        A leased record goes with its lease.  Once a lease is lost, the key is
        no longer this lease's to delete: it expired, or another holder has it.
        """
        self._revoked.set()
        if self._lease_id is not None:
            await self._store.revoke(self._lease_id)
        elif self.ttl is None:
            await self._store.delete(self.key)
