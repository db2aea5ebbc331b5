"""`etcd://host:port[,host:port...]/prefix` — etcd v3 through `aetcd`.

Access control is etcd's own: `?user_env=VAR&password_env=VAR` names the
environment variables holding a user and password (never the URL, whose
`user:pass@` form is refused), and `?cacert=&cert=&key=` are the TLS files,
named as etcdctl names them.  With `cacert` the channel is TLS; with `cert`
and `key` too, the client proves itself by certificate.

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
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

try:
    import aetcd
    from aetcd import exceptions as etcd_errors
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the etcd registry driver needs the etcd extra: pip install 'smmf[etcd]'") from exc

from ...errors import (
    AlreadyRegistered,
    Compacted,
    LeaseNotFound,
    RegistryDenied,
    RegistryError,
    RegistryUnavailable,
    UnsupportedRegistry,
)
from ..store import RawEvent, Store

R = TypeVar("R")

#: etcd rounds any TTL below this up to it.
MIN_TTL = 2
#: Seconds a dropped client's channel stays open for calls still running on it.
RETIRE_AFTER = 5.0
#: Longest wait for a client to close before its channel is closed under it.
CLOSE_WITHIN = 2.0
#: While a watch streams, a read through the same channel every this many seconds proves the member alive.
PROGRESS_EVERY = 2.0

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


#: What etcd says when a request's token has expired: authenticate again, then retry.
_EXPIRED_TOKEN = ("invalid auth token", "auth token is expired")
#: What etcd says when it refuses who we are or what we ask.
_DENIED = ("permission denied", "authentication failed", "user name is empty", "user name not found")


@dataclass(frozen=True, slots=True)
class EtcdSecurity:
    """Who this client is to etcd: a user whose name and password are in environment variables, TLS files."""

    user_env: str | None = None
    password_env: str | None = None
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if (self.user_env is None) != (self.password_env is None):
            raise UnsupportedRegistry("etcd: give both user_env= and password_env=, or neither")
        if (self.cert is None) != (self.key is None):
            raise UnsupportedRegistry("etcd: give both cert= and key= (the client certificate and its key), or neither")
        if self.cert is not None and self.cacert is None:
            raise UnsupportedRegistry("etcd: a client certificate needs cacert= too (the CA that signed etcd's)")
        for name in ("cacert", "cert", "key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise UnsupportedRegistry(f"etcd: {name}={path} is not a readable file")

    @property
    def user(self) -> str | None:
        """The user name, for messages: never the password."""
        return None if self.user_env is None else os.environ.get(self.user_env)

    def credentials(self) -> tuple[str | None, str | None]:
        """The user and password, read from the environment now."""
        if self.user_env is None or self.password_env is None:
            return None, None
        user, password = os.environ.get(self.user_env), os.environ.get(self.password_env)
        missing = [name for name, value in ((self.user_env, user), (self.password_env, password)) if not value]
        if missing:
            raise UnsupportedRegistry(f"etcd: the environment variable {' and '.join(missing)} is not set")
        return user, password

    def channel(self) -> grpc.ChannelCredentials | None:
        if self.cacert is None:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=Path(self.cacert).read_bytes(),
            private_key=None if self.key is None else Path(self.key).read_bytes(),
            certificate_chain=None if self.cert is None else Path(self.cert).read_bytes(),
        )


class _TlsClient(aetcd.Client):
    """aetcd's client over a TLS channel: aetcd itself only opens plaintext ones."""

    def __init__(self, tls: grpc.ChannelCredentials, **options: Any) -> None:
        super().__init__(**options)
        self._tls = tls
        self._is_connecting: bool = False

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        self._is_connecting = True
        try:
            self.channel = grpc.aio.secure_channel(f"{self._host}:{self._port}", self._tls, list(self._options.items()))
            if self._username is not None:
                self.auth_stub = aetcd.rpc.AuthStub(self.channel)
                request = aetcd.rpc.AuthenticateRequest(name=self._username, password=self._password)
                try:
                    reply = await self.auth_stub.Authenticate(request, timeout=self._timeout)
                except aetcd.rpc.AioRpcError as exc:
                    etcd_errors._handle_exception(exc)
                self.metadata = (("token", reply.token),)
            self.kvstub = aetcd.rpc.KVStub(self.channel)
            self.clusterstub = aetcd.rpc.ClusterStub(self.channel)
            self.leasestub = aetcd.rpc.LeaseStub(self.channel)
            self.maintenancestub = aetcd.rpc.MaintenanceStub(self.channel)
            self._watcher = aetcd.watcher.Watcher(
                aetcd.rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
            )
            self._connected.set()
        finally:
            self._is_connecting = False


class EtcdStore(Store):
    def __init__(
        self,
        endpoints: list[tuple[str, int]],
        prefix: str = "/smmf",
        *,
        timeout: float = 3.0,
        security: EtcdSecurity | None = None,
    ) -> None:
        if not endpoints:
            raise UnsupportedRegistry("the etcd registry needs at least one endpoint host:port")
        self.endpoints = endpoints
        self.prefix = prefix.rstrip("/") + "/"
        self.timeout = timeout
        self.security = security or EtcdSecurity()
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
            user, password = self.security.credentials()
            options = {"host": host, "port": port, "timeout": self.timeout, "options": dict(_CHANNEL_OPTIONS)}
            tls = self.security.channel()
            if tls is None:
                self._client = aetcd.Client(username=user, password=password, **options)
            else:
                self._client = _TlsClient(tls, username=user, password=password, **options)
        return self._client

    def _denied(self, exc: etcd_errors.ClientError) -> RegistryDenied | None:
        """The refusal `exc` is, naming the user (never the password); None when it is something else."""
        text = str(exc)
        if not any(word in text.lower() for word in _DENIED):
            return None
        user = self.security.user
        who = f"user {user!r} (from ${self.security.user_env})" if user else "no user (set user_env= and password_env=)"
        return RegistryDenied(self.address, f"{text.removeprefix('etcdserver: ')}, as {who}")

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
            except etcd_errors.ClientError as exc:
                if any(words in str(exc) for words in _EXPIRED_TOKEN):
                    reason = str(exc)
                    self._drop(client)  # a new client authenticates again
                    continue
                if (denied := self._denied(exc)) is not None:
                    raise denied from None
                raise
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
        except etcd_errors.ClientError as exc:
            raise self._watch_failure(client, after, exc) from exc
        stalled = asyncio.create_task(self._stops_answering(client))
        try:
            async for event in _until(watch, stalled, lambda: self._stalled(client)):
                deleted = event.kind == "DELETE"
                yield RawEvent(
                    self._relative(event.kv.key),
                    None if deleted else bytes(event.kv.value),
                    int(event.kv.mod_revision),
                )
        except etcd_errors.ClientError as exc:
            raise self._watch_failure(client, after, exc) from exc
        finally:
            stalled.cancel()
            if client.channel is not None:  # a closed client has no watch left to cancel
                try:
                    async with asyncio.timeout(1.0):
                        await watch.cancel()
                except Exception:  # noqa: BLE001 - the stream may already be gone
                    pass

    def _watch_failure(self, client: aetcd.Client, after: int, exc: etcd_errors.ClientError) -> RegistryError:
        """What a watch's failure means: history compacted, or (after dropping the client) a refusal or an outage."""
        if isinstance(exc, etcd_errors.RevisionCompactedError):
            return Compacted(after, exc.compacted_revision)
        self._drop(client)
        return self._denied(exc) or RegistryUnavailable(self.address, str(exc))

    async def _stops_answering(self, client: aetcd.Client) -> None:
        """Return once the member behind `client` fails to answer a read within the timeout.

        A member that hangs (SIGSTOP, a stuck disk, a half-open connection)
        keeps its watch streams open and silent: nothing errors, so the
        watch must ask.  The read goes through the watch's own channel, and
        is linearizable, so a member cut off from its cluster fails it too.
        """
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            try:
                await asyncio.wait_for(client.get(self._key("")), self.timeout)
            except Exception:  # noqa: BLE001 - any failure to answer is the member's: move on
                return

    def _stalled(self, client: aetcd.Client) -> RegistryUnavailable:
        host, port = self.endpoints[self._index] if self._client is client else ("a member", 0)
        self._drop(client)
        where = f"{host}:{port}" if port else host
        return RegistryUnavailable(self.address, f"{where} stopped answering; watching through another member")

    async def close(self) -> None:
        retired, self._retired = self._retired, {}
        for client, task in retired.items():
            task.cancel()
            await _close_quietly(client)
        if self._client is not None:
            client, self._client = self._client, None
            await _close_quietly(client)


async def _until(
    events: AsyncIterator[Any], stalled: asyncio.Task[None], failure: Callable[[], Exception]
) -> AsyncGenerator[Any, None]:
    """`events` as they come, until the `stalled` task finishes: then `failure()` is raised."""
    iterator = aiter(events)
    while True:
        step: asyncio.Future[Any] = asyncio.ensure_future(anext(iterator))
        try:
            await asyncio.wait({step, stalled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting = not step.done()
            if waiting:  # stalled, or this generator closed while it waited
                step.cancel()
        if waiting:
            raise failure()
        try:
            yield step.result()
        except StopAsyncIteration:
            return


async def _close_quietly(client: aetcd.Client) -> None:
    """Close `client` within `CLOSE_WITHIN` seconds, whatever state its watcher is in.

    aetcd's close first shuts its watcher down, which delivers a last event
    to every watch still registered; a watch whose consumer is gone can make
    that wait for ever (it hung `smmf chat` at exit).  Past the limit, the
    channel is closed under the watcher.
    """
    channel = client.channel
    try:
        async with asyncio.timeout(CLOSE_WITHIN):
            await client.close()
        return
    except Exception:  # noqa: BLE001 - a broken channel may fail to close; it is gone either way
        pass
    if channel is not None:
        with suppress(Exception):
            await channel.close()
