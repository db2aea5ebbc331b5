"""`nacos://host:port[,host:port...]` — Nacos 2.x/3.x over gRPC (port + 1000), through nacos-sdk-python's `v2.nacos`.

Options: `?namespace=` (blank and `public` are the same), `group=` (`smmf`
by default: it is what keeps one smmf deployment apart from another, as a
key prefix does in etcd), `username_env=VAR&password_env=VAR` (the
environment variables holding the credentials, never the URL), `dir=`
(where the SDK writes its logs and cache; a per-user directory under the
system's temporary directory by default, never the home directory),
`timeout=` (seconds per call, 3 by default) and `poll=` (seconds between
looks for models new to the group, 1 by default).

- A leased record is an **ephemeral instance** of the service named after
  its model.  Each lease is its own gRPC connection: the server keeps one
  instance (or one batch) per service per connection and drops them all
  when the connection closes or stops answering its checks, which is what a
  lease is.  The sidecar's TTL is kept on this side: a lease not refreshed
  within its TTL closes its connection, so the server drops its instances at
  once.  When the connection is lost the SDK connects again and registers the
  lease's instances again by itself (its redo), and the lease stays the same.
- A persistent record (a third-party API no sidecar keeps alive) and the
  admin keys are **configuration**: the data ids `smmf-records` and
  `smmf-admin` of the group, each one JSON object (key → value), changed by
  compare-and-set on its md5 and watched with the SDK's listener.
- The watch lists (services of the group, each one's instances, the records
  document), then follows pushes: the SDK's `subscribe` for each service, a
  look at the group's services every `poll` seconds for new models, and the
  config listener (with the document read again every `poll` seconds: the
  SDK can lose a change notice that arrives while it fetches the previous
  change).  After the reader's connection is lost and made again the
  stream ends, and the shared loop lists again.
- This process's own leased records are seen by its `get` and `list` at
  once: the server answers queries from the data of its last push, up to
  500 ms old.

Standing limits: only the connection that registered an ephemeral instance
can remove it (Nacos has no way to delete another client's), so removing a
live instance from elsewhere is refused with a message saying to take it
offline or stop its sidecar; a process that freezes keeps its instances
until the server's connection check drops it (about 20 to 28 s); an
exclusive registration checks then registers, so two processes racing for
one id can both succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import tempfile
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

try:
    from v2.nacos import (
        ClientConfigBuilder,
        ConfigParam,
        GRPCConfig,
        NacosConfigService,
        NacosException,
        NacosNamingService,
    )
    from v2.nacos.naming.model.instance import Instance as NacosInstance
    from v2.nacos.naming.model.naming_param import (
        BatchRegisterInstanceParam,
        DeregisterInstanceParam,
        ListServiceParam,
        RegisterInstanceParam,
        SubscribeServiceParam,
    )
    from v2.nacos.transport.connection_event_listener import ConnectionEventListener
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the Nacos registry driver needs the nacos extra: pip install 'smmf[nacos]'") from exc

from ...errors import (
    AlreadyRegistered,
    Compacted,
    LeaseNotFound,
    RegistryDenied,
    RegistryError,
    RegistryUnavailable,
    UnsupportedRegistry,
)
from ...tasks import cancel_and_wait
from ..keys import ADMIN, INSTANCES, instance_key, instance_parts, prefix_model
from ..store import RawEvent, Store
from .nacos_records import decode_instance, encode_instance, service_name

R = TypeVar("R")

#: The configuration documents that hold what is not an ephemeral instance.
RECORDS_DOC = "smmf-records"
ADMIN_DOC = "smmf-admin"
#: Listings remembered for streams to resume from.
RESUMABLE = 32
#: Service names asked for per page when listing the group.
PAGE = 500
#: A little more than the server's push delay (500 ms), after which its answers show a change.
PUSH_DELAY = 0.7
#: Compare-and-set attempts on a configuration document before giving up.
CAS_ATTEMPTS = 20
_SDK_LOGGERS = ("naming", "config")
_TOKEN = re.compile(r"(accessToken['\"]?\s*[:=]\s*['\"]?)[^'\",}\s]+")


@dataclass(frozen=True, slots=True)
class NacosOptions:
    """What the URL's query sets (see the module's docstring)."""

    namespace: str = ""
    group: str = "smmf"
    username_env: str | None = None
    password_env: str | None = None
    directory: str | None = None
    timeout: float = 3.0
    poll: float = 1.0


class _Redact(logging.Filter):
    """The SDK logs requests with their headers, access token included: never let one reach a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "accessToken" in message or "AccessToken" in message:
            record.msg, record.args = _TOKEN.sub(r"\1<redacted>", message.replace("AccessToken:", "accessToken:")), ()
        return True


def _quiet_sdk_logs() -> None:
    """One file handler per SDK module (the SDK adds one per client it makes) and no access token in them."""
    for name in _SDK_LOGGERS:
        logger = logging.getLogger(name)
        seen: set[str] = set()
        for handler in list(logger.handlers):
            path = getattr(handler, "baseFilename", None)
            if path in seen:
                logger.removeHandler(handler)
                handler.close()
            elif path:
                seen.add(path)
        if not any(isinstance(f, _Redact) for f in logger.filters):
            logger.addFilter(_Redact())


@dataclass
class _Lease:
    ttl: float
    naming: NacosNamingService
    deadline: float
    records: dict[str, tuple[str, RegisterInstanceParam, bytes]] = field(default_factory=dict)
    watchdog: asyncio.Task[None] | None = None


@dataclass
class _Listing:
    """What one `list` saw, per source (a service's name, or a configuration document), to resume from."""

    sources: dict[str, dict[str, bytes]]
    models: bool  # whether new services of the group are looked for


class _Reconnects(ConnectionEventListener):
    """Ends every live stream when the reader's connection is replaced: the shared loop lists again."""

    def __init__(self, queues: set[asyncio.Queue[tuple[str, Any]]], address: str, rpc_client: Any) -> None:
        self.queues = queues
        self.address = address
        self.rpc_client = rpc_client
        self.connection = self._current()

    def _current(self) -> str | None:
        connection = self.rpc_client.current_connection
        return None if connection is None else str(connection.get_connection_id())

    async def on_connected(self) -> None:
        # The SDK also reports the first connection, maybe after this listener was added: only a new one counts.
        if self._current() != self.connection:
            self.connection = self._current()
            self._end("the connection was made again")

    async def on_disconnect(self) -> None:
        pass  # followed by on_connected once a new connection is made; meanwhile every call fails

    def _end(self, reason: str) -> None:
        for queue in self.queues:
            queue.put_nowait(("", RegistryUnavailable(self.address, reason)))


def _encoded(items: dict[str, str]) -> dict[str, bytes]:
    return {k: v.encode() for k, v in items.items()}


def _md5(content: str) -> str:
    return hashlib.md5(content.encode()).hexdigest() if content else ""


class NacosStore(Store):
    def __init__(self, addresses: list[tuple[str, int]], options: NacosOptions | None = None) -> None:
        self._addresses = addresses
        self._options = options = options or NacosOptions()
        namespace = options.namespace or "public"
        self.address = (
            "nacos://" + ",".join(f"{h}:{p}" for h, p in addresses) + f"?namespace={namespace}&group={options.group}"
        )
        self._credentials: tuple[str, str] | None = None
        if options.username_env or options.password_env:
            missing = [v for v in (options.username_env, options.password_env) if not v or v not in os.environ]
            if missing:
                raise UnsupportedRegistry(
                    f"{self.address}: username_env= and password_env= must both name environment variables that "
                    f"are set (missing: {', '.join(str(m) for m in missing)})"
                )
            self._credentials = (os.environ[str(options.username_env)], os.environ[str(options.password_env)])
        self._directory = Path(options.directory or Path(tempfile.gettempdir()) / f"smmf-nacos-{os.getuid()}")
        self._reader: NacosNamingService | None = None
        self._configs: NacosConfigService | None = None
        self._connecting = asyncio.Lock()
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(1)
        self._revision = 0
        self._listings: OrderedDict[tuple[str, int], _Listing] = OrderedDict()
        self._streams: set[asyncio.Queue[tuple[str, Any]]] = set()

    # -- connections -------------------------------------------------------

    def _client_config(self) -> Any:
        options = self._options
        builder = (
            ClientConfigBuilder()
            .server_address(",".join(f"{h}:{p}" for h, p in self._addresses))
            .namespace_id(options.namespace)
            .log_dir(str(self._directory / "logs"))
            .cache_dir(str(self._directory / "cache"))
            .log_level(logging.WARNING)
            .timeout_ms(int(options.timeout * 1000))
            .grpc_config(GRPCConfig(grpc_timeout=int(options.timeout * 1000)))
            .load_cache_at_start(False)
        )
        if self._credentials:
            builder = builder.username(self._credentials[0]).password(self._credentials[1])
        config = builder.build()
        config.update_cache_when_empty = True  # a push that empties a service must reach the watch
        config.disable_use_config_cache = True  # never answer a stale local copy for the server's
        return config

    def _next_revision(self) -> int:
        self._revision += 1
        return self._revision

    async def _naming(self) -> NacosNamingService:
        """A new naming connection, or `RegistryUnavailable` when it could not be made."""
        naming = await NacosNamingService.create_naming_service(self._client_config())
        _quiet_sdk_logs()
        if not await naming.server_health():
            with contextlib.suppress(Exception):
                await naming.shutdown()
            raise RegistryUnavailable(self.address, "no server answered")
        return naming

    async def _reading(self) -> NacosNamingService:
        """The connection that lists and watches; `RegistryUnavailable` while it is down."""
        async with self._connecting:
            if self._reader is None:
                self._reader = await self._naming()
                proxy = self._reader.grpc_client_proxy
                await proxy.rpc_client.register_connection_listener(
                    _Reconnects(self._streams, self.address, proxy.rpc_client)
                )
                # The SDK cannot read a refused service listing (it requires fields the server leaves out of a
                # failure), so ask something whose refusal it can read: a 403 is then `RegistryDenied`.
                await self._call(proxy.query_instance_of_service("smmf-access-check", self._options.group, "", False))
        if not await self._reader.server_health():
            raise RegistryUnavailable(self.address, "the connection to the server is down; reconnecting")
        return self._reader

    async def _config(self) -> NacosConfigService:
        async with self._connecting:
            if self._configs is None:
                self._configs = await NacosConfigService.create_config_service(self._client_config())
                _quiet_sdk_logs()
        if not await self._configs.server_health():
            raise RegistryUnavailable(self.address, "the connection to the server is down; reconnecting")
        return self._configs

    async def _call(self, call: Awaitable[R]) -> R:
        """One SDK call, bounded, with Nacos's failures as smmf's errors."""
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation (see smmf.tasks).
            async with asyncio.timeout(self._options.timeout * 4 + 1):
                return await call
        except NacosException as exc:
            code, message = getattr(exc, "error_code", None), str(getattr(exc, "message", "") or exc)
            if code == 403 or "access token" in message:
                raise RegistryDenied(self.address, message) from None
            if code in (400, 404, 409):
                raise RegistryError(f"registry {self.address} refused the call: {message}") from None
            raise RegistryUnavailable(self.address, message) from None
        except (TimeoutError, OSError) as exc:
            raise RegistryUnavailable(self.address, f"{exc.__class__.__name__}: {exc}".rstrip(": ")) from None

    async def close(self) -> None:
        for lease_id in list(self._leases):
            await self._end_lease(lease_id)
        reader, self._reader = self._reader, None
        configs, self._configs = self._configs, None
        if configs is not None:
            # Its shutdown waits for its listen loop, which only looks at the stop flag every 5 s: end it now.
            proxy = configs.grpc_client_proxy
            proxy.listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await proxy.listen_task
            proxy.listen_task = asyncio.get_running_loop().create_future()
            proxy.listen_task.set_result(None)
        for client in (reader, configs):
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.shutdown(), 5)

    # -- keys --------------------------------------------------------------

    @staticmethod
    def _document(key: str) -> str:
        return ADMIN_DOC if key.startswith(ADMIN) else RECORDS_DOC

    # -- leases ------------------------------------------------------------

    async def grant(self, ttl: float) -> int:
        naming = await self._naming()
        lease_id = next(self._lease_ids)
        lease = _Lease(ttl, naming, time.monotonic() + ttl)
        lease.watchdog = asyncio.create_task(self._expire(lease_id))
        self._leases[lease_id] = lease
        return lease_id

    async def _expire(self, lease_id: int) -> None:
        """Close a lease's connection when it was not refreshed within its TTL: the server drops its instances."""
        while (lease := self._leases.get(lease_id)) is not None:
            left = lease.deadline - time.monotonic()
            if left <= 0:
                await self._end_lease(lease_id, expired=True)
                return
            await asyncio.sleep(left)

    async def _end_lease(self, lease_id: int, *, expired: bool = False) -> None:
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            return
        if lease.watchdog is not None and not expired:
            lease.watchdog.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(lease.naming.shutdown(), 5)

    async def refresh(self, lease: int) -> bool:
        held = self._leases.get(lease)
        if held is None:
            return False
        held.deadline = time.monotonic() + held.ttl
        return True

    async def revoke(self, lease: int) -> None:
        """End a lease this process holds; another process's lease is its connection, out of reach."""
        await self._end_lease(lease)

    async def _publish(self, lease: _Lease, service: str) -> None:
        """Make the lease's instances of `service` exactly what it holds (one, a batch, or none)."""
        group = self._options.group
        mine = [param for s, param, _ in lease.records.values() if s == service]
        naming = lease.naming
        if not mine:
            await self._call(
                naming.deregister_instance(
                    DeregisterInstanceParam(ip="0.0.0.0", port=0, service_name=service, group_name=group)
                )
            )
        elif len(mine) == 1:
            await self._call(naming.register_instance(mine[0]))
        else:
            await self._call(
                naming.batch_register_instances(
                    BatchRegisterInstanceParam(service_name=service, group_name=group, instances=mine)
                )
            )

    def _held(self, key: str) -> tuple[_Lease, bytes] | None:
        for lease in self._leases.values():
            if key in lease.records:
                return lease, lease.records[key][2]
        return None

    # -- single keys -------------------------------------------------------

    async def put(self, key: str, value: bytes, lease: int | None = None) -> int:
        """Register the instance under its lease's connection, or write the key into its configuration document."""
        instance = instance_parts(key)
        if instance is None or lease is None:
            if lease is not None:
                raise RegistryError(f"registry {self.address}: only instance records take a lease in Nacos")

            def write(items: dict[str, str]) -> bool:
                items[key] = value.decode()
                return True

            await self._update(self._document(key), write)
            return self._next_revision()
        held = self._leases.get(lease)
        if held is None:
            raise LeaseNotFound(f"lease {lease} not found")
        parts = encode_instance(instance[0], value)
        param = RegisterInstanceParam(
            ip=parts.ip,
            port=parts.port,
            weight=parts.weight,
            metadata=parts.metadata,
            service_name=parts.service,
            group_name=self._options.group,
            ephemeral=True,
        )
        previous = held.records.get(key)
        held.records[key] = (parts.service, param, value)
        try:
            await self._publish(held, parts.service)
        except RegistryError:
            if previous is None:
                held.records.pop(key, None)
            else:
                held.records[key] = previous
            raise
        return self._next_revision()

    async def create(self, key: str, value: bytes, lease: int | None = None) -> int:
        """Write only where nothing is.  For a record this checks, then writes: Nacos has no compare-and-set
        on instances, so two processes racing for one id within that gap can both succeed."""
        if instance_parts(key) is not None:
            if await self.get(key) is not None:
                # The server answers from its last push: a record dropped just now can still be there.
                await asyncio.sleep(PUSH_DELAY)
                if await self.get(key) is not None:
                    raise AlreadyRegistered(key)
            if lease is not None:
                return await self.put(key, value, lease)

        def add(items: dict[str, str]) -> bool:
            if key in items:
                raise AlreadyRegistered(key)
            items[key] = value.decode()
            return True

        await self._update(self._document(key), add)
        return self._next_revision()

    async def get(self, key: str) -> bytes | None:
        instance = instance_parts(key)
        if instance is not None:
            held = self._held(key)
            if held is not None:
                return held[1]
            found = await self._service(service_name(instance[0]))
            if key in found:
                return found[key]
        return (await self._read(self._document(key))).get(key)

    async def delete(self, key: str) -> bool:
        instance = instance_parts(key)
        if instance is not None:
            held = self._held(key)
            if held is not None:
                lease, _ = held
                service, _, _ = lease.records.pop(key)
                await self._publish(lease, service)
                return True
            if key in await self._service(service_name(instance[0])):
                raise RegistryError(
                    f"registry {self.address}: {key} is an ephemeral instance, and Nacos lets only the connection "
                    "that registered it remove it; take it offline (smmf offline) or stop its sidecar"
                )

        def remove(items: dict[str, str]) -> bool:
            return items.pop(key, None) is not None

        return await self._update(self._document(key), remove)

    # -- configuration documents -------------------------------------------

    async def _fetch(self, doc: str) -> str:
        configs = await self._config()
        content = await self._call(configs.get_config(ConfigParam(data_id=doc, group=self._options.group)))
        return content or ""

    @staticmethod
    def _parse(content: str) -> dict[str, str]:
        try:
            items = json.loads(content) if content.strip() else {}
        except ValueError:
            return {}  # not smmf's: nothing in it is a record
        return {str(k): v for k, v in items.items() if isinstance(v, str)} if isinstance(items, dict) else {}

    async def _read(self, doc: str) -> dict[str, bytes]:
        return _encoded(self._parse(await self._fetch(doc)))

    async def _update(self, doc: str, change: Callable[[dict[str, str]], bool]) -> bool:
        """Apply `change` to a document by compare-and-set on its md5; False when `change` changed nothing."""
        for _ in range(CAS_ATTEMPTS):
            content = await self._fetch(doc)
            items = self._parse(content)
            if not change(items):
                return False
            written = json.dumps(dict(sorted(items.items())), indent=1, ensure_ascii=False)
            configs = await self._config()
            param = ConfigParam(data_id=doc, group=self._options.group, content=written, cas_md5=_md5(content))
            try:
                if await self._call(configs.publish_config(param)):
                    return True
            except RegistryUnavailable as exc:
                if "Cas publish fail" not in exc.reason:
                    raise
        raise RegistryUnavailable(self.address, f"{doc} kept changing under {CAS_ATTEMPTS} attempts to write it")

    # -- listing -----------------------------------------------------------

    def _decode(self, service: str, hosts: list[NacosInstance]) -> dict[str, bytes]:
        """The smmf records among a service's instances; an instance the console disabled is absent."""
        found = {}
        for host in hosts:
            if not host.enabled:
                continue
            decoded = decode_instance(service, dict(host.metadata or {}))
            if decoded is not None:
                model, raw = decoded
                record_id = (host.metadata or {}).get("id", "")
                found[instance_key(model, record_id)] = raw
        for lease in self._leases.values():  # this process's own records, without the push delay
            found.update({k: raw for k, (s, _, raw) in lease.records.items() if s == service})
        return found

    async def _service(self, service: str) -> dict[str, bytes]:
        """A service's records as the server has them now.  Not the SDK's `list_instances`: that answers from
        its cache while a subscription is registered, and after a connection was lost the cache is stale."""
        reader = await self._reading()
        proxy = reader.grpc_client_proxy
        info = await self._call(proxy.query_instance_of_service(service, self._options.group, "", False))
        return self._decode(service, list(info.hosts) if info is not None else [])

    async def _service_names(self) -> set[str]:
        reader = await self._reading()
        names: set[str] = set()
        for page in itertools.count(1):
            param = ListServiceParam(
                namespace_id=self._options.namespace, group_name=self._options.group, page_no=page, page_size=PAGE
            )
            listing = await self._call(reader.list_services(param))
            names.update(listing.services)
            if len(listing.services) < PAGE or len(names) >= listing.count:
                return names
        return names  # pragma: no cover - the loop returns

    async def list(self, prefix: str) -> tuple[dict[str, bytes], int]:
        sources: dict[str, dict[str, bytes]] = {}
        models = False
        if prefix.startswith(INSTANCES):
            model = prefix_model(prefix)
            models = model is None
            names = await self._service_names() if models else {service_name(str(model))}
            for name in sorted(names):
                sources[name] = {k: v for k, v in (await self._service(name)).items() if k.startswith(prefix)}
        doc = self._document(prefix)
        sources["\0" + doc] = {k: v for k, v in (await self._read(doc)).items() if k.startswith(prefix)}
        revision = self._next_revision()
        self._listings[(prefix, revision)] = _Listing(sources, models)
        while len(self._listings) > RESUMABLE:
            self._listings.popitem(last=False)
        return {k: v for items in sources.values() for k, v in items.items()}, revision

    async def stream(self, prefix: str, after: int) -> AsyncGenerator[RawEvent, None]:
        listing = self._listings.get((prefix, after))
        if listing is None:
            raise Compacted(after, after)  # not a revision this store listed: list again
        known = {name: dict(items) for name, items in listing.sources.items()}
        updates: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        reader = await self._reading()
        configs = await self._config()
        group = self._options.group
        callbacks: dict[str, Callable[[list[NacosInstance]], Awaitable[None]]] = {}
        doc = self._document(prefix)

        async def subscribe(name: str) -> None:
            async def pushed(hosts: list[NacosInstance]) -> None:
                updates.put_nowait((name, self._decode(name, hosts)))

            callbacks[name] = pushed
            await self._call(
                reader.subscribe(SubscribeServiceParam(service_name=name, group_name=group, subscribe_callback=pushed))
            )
            updates.put_nowait((name, await self._service(name)))  # what changed between the listing and now

        async def changed(tenant: str, group_: str, data_id: str, content: str) -> None:
            updates.put_nowait(("\0" + doc, _encoded(self._parse(content))))

        async def poll() -> None:
            """New models of the group, and the document again: the SDK can lose a change notice that arrives
            while it fetches the previous change (its fetch marks the document in sync after the notice)."""
            try:
                while True:
                    await asyncio.sleep(self._options.poll)
                    if listing.models:
                        for name in sorted(await self._service_names() - set(callbacks)):
                            known.setdefault(name, {})
                            await subscribe(name)
                    updates.put_nowait(("\0" + doc, await self._read(doc)))
            except RegistryError as exc:
                updates.put_nowait(("", exc))

        self._streams.add(updates)
        poller = None
        try:
            await self._call(configs.add_listener(doc, group, changed))
            # The SDK sends its listen request on its next 5-second tick; ask for it now.
            manager = configs.grpc_client_proxy.config_subscribe_manager
            await manager.notify_config_changed(doc, group, configs.namespace_id)
            for name in [n for n in known if not n.startswith("\0")]:
                await subscribe(name)
            updates.put_nowait(("\0" + doc, await self._read(doc)))
            poller = asyncio.create_task(poll())
            while True:
                name, update = await updates.get()
                if isinstance(update, BaseException):
                    raise update
                current = {k: v for k, v in update.items() if k.startswith(prefix)}
                before = known.get(name, {})
                revision = self._next_revision()
                for key in before.keys() - current.keys():
                    yield RawEvent(key, None, revision)
                for key, raw in current.items():
                    if before.get(key) != raw:
                        yield RawEvent(key, raw, revision)
                known[name] = current
        finally:
            self._streams.discard(updates)
            if poller is not None:
                await cancel_and_wait(poller)
            with contextlib.suppress(RegistryError):
                await self._call(configs.remove_listener(doc, group, changed))
            for name, pushed in callbacks.items():
                with contextlib.suppress(RegistryError):
                    await self._call(
                        reader.unsubscribe(
                            SubscribeServiceParam(service_name=name, group_name=group, subscribe_callback=pushed)
                        )
                    )
