"""`etcd://host:port[,host:port...]/prefix` — etcd v3 through `aetcd`.

Keys live at `<prefix>/instances/<model>/<id>` under real etcd leases, and
watches are native etcd watches resumed from the listed revision.

`aetcd.Client` talks to one endpoint, so this store holds one client at a
time and moves to the next endpoint when a call fails to connect.  After any
connection failure the client is dropped and a new one (a new gRPC channel)
is made on the next call: a channel left in gRPC's reconnect backoff can stay
unusable for many seconds after etcd is back, which would delay both
re-registration and watch resync.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar

try:
    import aetcd
    from aetcd import exceptions as etcd_errors
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the etcd registry driver needs the etcd extra: pip install 'smmf[etcd]'") from exc

from ...errors import AlreadyRegistered, Compacted, LeaseNotFound, RegistryUnavailable, UnsupportedRegistry
from ..store import RawEvent, Store

R = TypeVar("R")

#: etcd rounds any TTL below this up to it.
MIN_TTL = 2
#: Seconds a dropped client's channel stays open for calls still running on it.
RETIRE_AFTER = 5.0

_CONNECTION_ERRORS = (
    etcd_errors.ConnectionFailedError,
    etcd_errors.ConnectionTimeoutError,
    etcd_errors.InternalError,
    etcd_errors.WatchTimeoutError,
)

_CHANNEL_OPTIONS = {
    # gRPC shares subchannels between channels to one target by default, so a
    # "fresh" channel would inherit the failed one's reconnect backoff.
    "grpc.use_local_subchannel_pool": 1,
    "grpc.max_receive_message_length": 512 * 1024 * 1024,
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
}


class EtcdStore(Store):
    def __init__(self, endpoints: list[tuple[str, int]], prefix: str = "/smmf", *, timeout: float = 3.0) -> None:
        if not endpoints:
            raise UnsupportedRegistry("the etcd registry needs at least one endpoint host:port")
        self.endpoints = endpoints
        self.prefix = prefix.rstrip("/") + "/"
        self.timeout = timeout
        self.address = "etcd://" + ",".join(f"{h}:{p}" for h, p in endpoints) + prefix.rstrip("/")
        self._index = 0
        self._client: aetcd.Client | None = None
        self._retired: dict[aetcd.Client, asyncio.Task[None]] = {}

    def _key(self, key: str) -> bytes:
        return (self.prefix + key).encode()

    def _relative(self, key: bytes) -> str:
        return key.decode()[len(self.prefix) :]

    def _current(self) -> aetcd.Client:
        if self._client is None:
            host, port = self.endpoints[self._index]
            self._client = aetcd.Client(host=host, port=port, timeout=self.timeout, options=dict(_CHANNEL_OPTIONS))
        return self._client

    def _drop(self, client: aetcd.Client) -> None:
        """Forget a failed client and move to the next endpoint (unless someone already did).

        The old channel is closed a little later, not now: other calls may
        still be running on it and should fail or finish on their own terms.
        """
        if self._client is client:
            self._client = None
            self._index = (self._index + 1) % len(self.endpoints)
            self._retired[client] = asyncio.get_running_loop().create_task(self._close_later(client))

    async def _close_later(self, client: aetcd.Client) -> None:
        await asyncio.sleep(RETIRE_AFTER)
        self._retired.pop(client, None)
        await _close_quietly(client)

    async def _call(self, op: Callable[[aetcd.Client], Awaitable[R]]) -> R:
        """Run `op`, moving through the endpoints; each is tried once, and the first twice.

        The extra attempt matters when the registry has just come back: the
        current channel may have failed its last connect and sit in backoff,
        while a fresh channel to the same endpoint connects at once.
        """
        reason = "no endpoint tried"
        for _ in range(len(self.endpoints) + 1):
            client = self._current()
            try:
                return await op(client)
            except _CONNECTION_ERRORS as exc:
                reason = f"{self.endpoints[self._index][0]}:{self.endpoints[self._index][1]}: {exc}"
                self._drop(client)
            except TimeoutError as exc:
                reason = f"timed out: {exc}"
                self._drop(client)
        raise RegistryUnavailable(self.address, reason)

    # -- Store -------------------------------------------------------------

    async def grant(self, ttl: float) -> int:
        seconds = max(MIN_TTL, round(ttl))
        lease = await self._call(lambda c: c.lease(seconds))
        return int(lease.id)

    async def refresh(self, lease: int) -> bool:
        reply = await self._call(lambda c: c.refresh_lease(lease))
        return reply is not None and reply.TTL > 0

    async def revoke(self, lease: int) -> None:
        try:
            await self._call(lambda c: c.revoke_lease(lease))
        except etcd_errors.ClientError as exc:
            if "not found" not in str(exc):
                raise

    async def put(self, key: str, value: bytes, lease: int | None = None) -> int:
        reply = await self._writing(lambda c: c.put(self._key(key), value, lease=lease))
        return int(reply.header.revision)

    async def create(self, key: str, value: bytes, lease: int | None = None) -> int:
        """One transaction: put only if the key's create revision is 0, that is, if it does not exist."""
        path = self._key(key)

        def transaction(c: aetcd.Client) -> Awaitable[tuple[bool, list[Any]]]:
            absent = c.transactions.create(path) == 0
            return c.transaction(compare=[absent], success=[c.transactions.put(path, value, lease=lease)], failure=[])

        succeeded, responses = await self._writing(transaction)
        if not succeeded:
            raise AlreadyRegistered(key)
        return int(responses[0].response_put.header.revision)

    async def _writing(self, op: Callable[[aetcd.Client], Awaitable[R]]) -> R:
        try:
            return await self._call(op)
        except etcd_errors.ClientError as exc:
            if "lease not found" in str(exc):
                raise LeaseNotFound(str(exc)) from exc
            raise

    async def get(self, key: str) -> bytes | None:
        reply = await self._call(lambda c: c.get(self._key(key)))
        return None if reply is None else bytes(reply.value)

    async def delete(self, key: str) -> bool:
        reply = await self._call(lambda c: c.delete(self._key(key)))
        return reply is not None

    async def list(self, prefix: str) -> tuple[dict[str, bytes], int]:
        reply = await self._call(lambda c: c.get_prefix(self._key(prefix)))
        items = {self._relative(kv.key): bytes(kv.value) for kv in reply}
        return items, int(reply.header.revision)

    async def stream(self, prefix: str, after: int) -> AsyncGenerator[RawEvent, None]:
        client = self._current()
        try:
            watch = await client.watch_prefix(self._key(prefix), start_revision=after + 1)
        except etcd_errors.RevisionCompactedError as exc:
            raise Compacted(after, exc.compacted_revision) from exc
        except _CONNECTION_ERRORS as exc:
            self._drop(client)
            raise RegistryUnavailable(self.address, str(exc)) from exc
        try:
            async for event in watch:
                deleted = event.kind == "DELETE"
                yield RawEvent(
                    self._relative(event.kv.key),
                    None if deleted else bytes(event.kv.value),
                    int(event.kv.mod_revision),
                )
        except etcd_errors.RevisionCompactedError as exc:
            raise Compacted(after, exc.compacted_revision) from exc
        except (*_CONNECTION_ERRORS, etcd_errors.ClientError) as exc:
            self._drop(client)
            raise RegistryUnavailable(self.address, str(exc)) from exc
        finally:
            if client.channel is not None:  # a closed client has no watch left to cancel
                try:
                    async with asyncio.timeout(1.0):
                        await watch.cancel()
                except Exception:  # noqa: BLE001 - the stream may already be gone
                    pass

    async def close(self) -> None:
        retired, self._retired = self._retired, {}
        for client, task in retired.items():
            task.cancel()
            await _close_quietly(client)
        if self._client is not None:
            client, self._client = self._client, None
            await _close_quietly(client)


async def _close_quietly(client: aetcd.Client) -> None:
    with suppress(Exception):  # a broken channel may fail to close; it is gone either way
        await client.close()
