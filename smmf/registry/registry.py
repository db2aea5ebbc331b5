"""`Registry`: the registry protocol every part of smmf uses, written once over a driver's `Store`.

Sidecars `register` and keep a `Lease` alive; clients and dashboards `list`
and `watch`; management tools write admin keys that sidecars `watch_admin`.
The public surface is deliberately small, after etcd's naming/endpoints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from types import TracebackType

from pydantic import ValidationError

from ..admin import AdminAction, AdminState
from ..errors import UsageError
from ..instance import Instance, parse_record, report_invalid
from .events import Delete, Put, Snapshot, WatchEvent
from .keys import ADMIN, admin_key, instance_key, key_id, model_prefix
from .lease import Lease
from .store import Store
from .watch import Connection, watch_prefix

__all__ = ["Listing", "Registry", "decode_record"]

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


def decode_record(key: str, raw: bytes) -> Instance | None:
    """A valid record stored at its own key, or None (and one warning).

    A record's key is the only thing a delete names, so one whose model or id
    disagrees with its key could outlive its key in a reader's cache, or pass
    for another instance; it is refused.
    """
    record = parse_record(key, raw)
    if record is not None and instance_key(record.model, record.id) != key:
        report_invalid(key, raw, f"its key does not match its model {record.model!r} and id {record.id!r}")
        return None
    return record


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

    async def register(
        self,
        record: Instance,
        ttl: float | None,
        *,
        exclusive: bool = False,
        heartbeat: float | None = None,
        check: float | None = None,
    ) -> Lease:
        """Publish `record`; it lives while the returned lease is kept alive.

        `ttl=None` stores a persistent record (a third-party API no sidecar
        keeps alive) that lives until `remove()`.  An `exclusive` record is
        written only where none is: `AlreadyRegistered` says another holder
        has that id.  The keepalive rewrites the record every `heartbeat`
        seconds (default: the TTL) so its `alive_at` stays fresh, and writes
        it again within `check` seconds (default: TTL/3) of its deletion.
        """
        if ttl is not None and ttl <= 0:
            raise UsageError("ttl must be positive seconds, or None for a persistent record")
        lease = Lease(self.store, record, ttl, exclusive=exclusive, heartbeat=heartbeat, check=check)
        await lease.acquire()
        return lease

    async def get(self, model: str, instance_id: str) -> Instance | None:
        """One record by model and id; None when there is none (or it does not validate)."""
        key = instance_key(model, instance_id)
        raw = await self.store.get(key)
        return None if raw is None else decode_record(key, raw)

    async def list(self, model: str | None = None) -> Listing:
        raw, revision = await self.store.list(model_prefix(model))
        records = [rec for key, value in raw.items() if (rec := decode_record(key, value)) is not None]
        return Listing(records, revision)

    def watch(
        self, model: str | None = None, *, connection: Connection | None = None
    ) -> AsyncGenerator[WatchEvent[Instance], None]:
        """A snapshot of the instances (of one model, or all), then their puts and deletes.

        `connection`, when given, tells whether the watch is reaching the registry.
        """
        return watch_prefix(self.store, model_prefix(model), decode_record, connection=connection)

    async def remove(self, instance_id: str) -> bool:
        """Delete a record by id whatever its lease, and its admin key; False when there was neither."""
        raw, _ = await self.store.list(model_prefix(None))
        found = [key for key in raw if key_id(key) == instance_id]
        for key in found:
            await self.store.delete(key)
        had_admin = await self.delete_admin(instance_id)
        return bool(found) or had_admin

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

    async def watch_admin(self, instance_id: str | None = None) -> AsyncGenerator[WatchEvent[AdminState], None]:
        """A snapshot of admin keys (one instance's, or all), then their changes."""
        async for event in watch_prefix(self.store, ADMIN, _decode_admin):
            if instance_id is None:
                yield event
            elif isinstance(event, Snapshot):
                yield Snapshot({k: v for k, v in event.items.items() if key_id(k) == instance_id}, event.revision)
            elif isinstance(event, Put | Delete) and event.id == instance_id:
                yield event
