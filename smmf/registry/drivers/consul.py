"""`consul://host:port[,host:port...][/prefix]` — Consul's agent HTTP API through py-consul (`consul.aio`).

Options: `?dc=` (datacenter), `token_env=VAR` (the environment variable
holding the ACL token; `CONSUL_HTTP_TOKEN` when not given, never the URL),
`scheme=https` with `ca=` (a CA bundle), and `wait=` (seconds a blocking
query waits, 55 by default, under proxies' usual 60 s idle limit).

Records are services, one Consul service per model (`consul_records.py`),
tagged `smmf` and `smmf-prefix=<prefix>` so that prefixes stay apart and
services smmf did not write are ignored.  A lease is a TTL check
(`service:<id>`, passed every TTL/3 by the sidecar's keepalive); a persistent
record has no check.  Admin keys live in Consul's KV store under
`<prefix>/admin/<id>`.

A service whose check is not passing is absent to smmf: Consul keeps a dead
one in the catalog, critical, for up to ~90 s (its 1-minute minimum for
`DeregisterCriticalServiceAfter` plus the 30-second reaper), and clients must
stop routing to it when its TTL runs out, as with etcd.

Consul has no global revision to resume from, so a watch resumes from what
its own listing saw: `list` remembers the index of every query it made,
under the revision it returns, and `stream` continues those blocking queries
(`/v1/catalog/services` for which models exist, `/v1/health/service/<name>`
for each one's instances, `/v1/kv/<prefix>/admin/` for admin keys).  A
`stream` from any other revision raises `Compacted`, and the shared watch
loop lists again.  Each query keeps Consul's rules for blocking clients: an
index that goes backwards starts over from 0, one below 1 is taken as 1, and
calls on one query are at least 100 ms apart; errors end the stream, and the
shared loop backs off with jitter.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import warnings
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

try:
    import consul
    import consul.aio
    from consul.exceptions import ACLPermissionDenied, ConsulException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the Consul registry driver needs the consul extra: pip install 'smmf[consul]'") from exc

from ...errors import (
    AlreadyRegistered,
    Compacted,
    LeaseNotFound,
    RegistryDenied,
    RegistryError,
    RegistryUnavailable,
    UnsupportedRegistry,
)
from ..keys import INSTANCES, instance_key, instance_parts, prefix_model
from ..store import RawEvent, Store
from .consul_records import LEASE_META, decode_service, encode_service, service_name

R = TypeVar("R")

#: Seconds a blocking query waits for a change, unless the URL says `wait=`.
WAIT = 55.0
#: Consul's own floor for DeregisterCriticalServiceAfter; a dead record is reaped after it.
DEREGISTER_AFTER = "1m"
#: Shortest time between two calls of one blocking query.
MIN_INTERVAL = 0.1
#: Longest wait for a dropped client's HTTP session to close.
CLOSE_WITHIN = 2.0
#: Listings remembered for streams to resume from.
RESUMABLE = 32
#: The message of the 500 Consul answers a pass on a check that has no TTL (any more).
NO_TTL = "does not have associated TTL"
_CATALOG = "\0catalog"


@dataclass(frozen=True, slots=True)
class ConsulOptions:
    """What the URL's query sets (see the module's docstring)."""

    dc: str | None = None
    token_env: str | None = None
    scheme: str = "http"
    ca: str | None = None
    wait: float = WAIT
    timeout: float = 5.0


@dataclass
class _Lease:
    ttl: float
    services: set[str] = field(default_factory=set)


@dataclass
class _Listing:
    """What one `list` saw: each query's index and each service's records, to resume from."""

    catalog_index: int | None
    indexes: dict[str, int]
    items: dict[str, dict[str, tuple[bytes, int]]]


class _Query:
    """One blocking query's index and pace, after Consul's rules for blocking clients."""

    def __init__(self, index: int) -> None:
        self.index = index
        self._last = 0.0

    async def pace(self) -> None:
        wait = self._last + MIN_INTERVAL - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last = time.monotonic()

    def advance(self, returned: int) -> None:
        self.index = 0 if returned < self.index else max(returned, 1)


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def _changes(known: dict[str, tuple[bytes, int]], current: dict[str, tuple[bytes, int]], index: int) -> list[RawEvent]:
    """The events from `known` to `current` (key → value and the index it was written at), oldest first."""
    events = [RawEvent(key, None, index) for key in known.keys() - current.keys()]
    events += [RawEvent(key, raw, rev) for key, (raw, rev) in current.items() if known.get(key, (None,))[0] != raw]
    return sorted(events, key=lambda e: e.revision)


class ConsulStore(Store):
    def __init__(self, addresses: list[tuple[str, int]], prefix: str, options: ConsulOptions | None = None) -> None:
        self._addresses = addresses
        self._prefix = prefix.strip("/") or "smmf"
        self._options = options or ConsulOptions()
        self.address = "consul://" + ",".join(f"{h}:{p}" for h, p in addresses) + "/" + self._prefix
        self._tag = f"smmf-prefix={self._prefix}"
        self._current = 0
        self._consul: consul.aio.Consul | None = None
        self._leases: dict[int, _Lease] = {}
        self._listings: OrderedDict[tuple[str, int], _Listing] = OrderedDict()
        self._wait = _duration(self._options.wait)
        if self._options.token_env and self._options.token_env not in os.environ:
            raise UnsupportedRegistry(
                f"{self.address}: token_env={self._options.token_env} names an environment variable that is not set"
            )

    # -- connection --------------------------------------------------------

    def _client(self) -> consul.aio.Consul:
        """The client for the current agent, made inside the running loop (its HTTP session belongs to it)."""
        if self._consul is None:
            host, port = self._addresses[self._current]
            options = self._options
            token = os.environ.get(options.token_env or "CONSUL_HTTP_TOKEN") or None
            blocking = options.wait + options.wait / 16 + options.timeout
            with warnings.catch_warnings():  # py-consul 1.8 passes aiohttp's deprecated ssl_context; ours is fine
                warnings.simplefilter("ignore", DeprecationWarning)
                client = consul.aio.Consul(
                    host=host,
                    port=port,
                    scheme=options.scheme,
                    dc=options.dc,
                    verify=options.ca or True,
                    connections_timeout=blocking,
                )
            client.token = token  # py-consul would otherwise prefer $CONSUL_HTTP_TOKEN to token_env's
            self._consul = client
        return self._consul

    async def _drop(self, client: consul.aio.Consul) -> None:
        """Forget a client that failed and move to the next agent; calls still on it fail and retry."""
        if self._consul is not client or client is None:
            return  # another call dropped it already
        self._consul = None
        self._current = (self._current + 1) % len(self._addresses)
        await self._close_quietly(client)

    @staticmethod
    async def _close_quietly(client: consul.aio.Consul) -> None:
        """Close a client's HTTP session, waiting at most `CLOSE_WITHIN`: aiohttp's close can wait on
        connections a dead agent never finishes, and the call that dropped the client must not wait with it."""
        with suppress(Exception):
            await asyncio.wait_for(client.close(), CLOSE_WITHIN)

    async def _call(self, operation: Callable[[consul.aio.Consul], Awaitable[R]], *, blocking: bool = False) -> R:
        """One API call, on each agent in turn until one answers; Consul's failures as smmf's errors."""
        reason = "no agent tried"
        for _ in self._addresses:
            client = self._client()
            try:
                call = operation(client)
                return await (call if blocking else asyncio.wait_for(call, self._options.timeout))
            except ACLPermissionDenied as exc:
                raise RegistryDenied(self.address, f"ACL: {str(exc).strip() or 'permission denied'}") from None
            except (aiohttp.ClientError, OSError, TimeoutError, consul.Timeout) as exc:
                reason = f"{exc.__class__.__name__}: {exc}".rstrip(": ")
                await self._drop(client)
            except ConsulException as exc:
                if not str(exc).startswith("5"):
                    raise RegistryError(f"registry {self.address} refused the call: {exc}") from None
                reason = str(exc)  # a 5xx: this agent cannot answer now (no leader, say); try the next
                await self._drop(client)
        raise RegistryUnavailable(self.address, reason)

    async def close(self) -> None:
        if self._consul is not None:
            client, self._consul = self._consul, None
            await self._close_quietly(client)

    # -- keys --------------------------------------------------------------

    def _kv(self, key: str) -> str:
        return f"{self._prefix}/{key}"

    # -- leases ------------------------------------------------------------

    async def grant(self, ttl: float) -> int:
        lease = secrets.randbits(62)
        self._leases[lease] = _Lease(ttl)
        return lease

    async def refresh(self, lease: int) -> bool:
        held = self._leases.get(lease)
        if held is None:
            return False
        for service_id in list(held.services):
            if not await self._call(lambda c: self._pass(c, f"service:{service_id}")):  # noqa: B023 - awaited here
                self._leases.pop(lease, None)
                return False
        return True

    @staticmethod
    async def _pass(client: consul.aio.Consul, check: str) -> bool:
        """Pass a TTL check: False when the agent does not have it (404) or has it without a TTL (500)."""
        try:
            return bool(await client.agent.check.ttl_pass(check))
        except ConsulException as exc:
            if NO_TTL in str(exc):
                return False
            raise

    async def _deregister(self, service_id: str) -> bool:
        """Remove a service from the agent; False when it has none of that id (404)."""
        return bool(await self._call(lambda c: c.agent.service.deregister(service_id)))

    async def revoke(self, lease: int) -> None:
        held = self._leases.pop(lease, None)
        if held is not None:
            doomed = held.services
        else:  # another process's lease: its services say which they are
            services = await self._call(lambda c: c.agent.services())
            doomed = {
                sid
                for sid, s in (services or {}).items()
                if (s.get("Meta") or {}).get(LEASE_META) == str(lease) and self._tag in (s.get("Tags") or [])
            }
        for service_id in doomed:
            await self._deregister(service_id)

    # -- single keys -------------------------------------------------------

    async def put(self, key: str, value: bytes, lease: int | None = None) -> int:
        """Register the service (instances) or write the KV key (anything else); Consul returns no index, so 0."""
        instance = instance_parts(key)
        if instance is None:
            if lease is not None:
                raise RegistryError(f"registry {self.address}: only instance records take a lease in Consul")
            await self._call(lambda c: c.kv.put(self._kv(key), value))
            return 0
        model, service_id = instance
        held = None if lease is None else self._leases.get(lease)
        if lease is not None and held is None:
            raise LeaseNotFound(f"lease {lease} not found")
        parts = encode_service(model, value, lease)
        check = None
        if held is not None:
            check = {
                "CheckID": f"service:{service_id}",
                "Name": "smmf lease",
                "TTL": _duration(held.ttl),
                "Status": "passing",
                "DeregisterCriticalServiceAfter": DEREGISTER_AFTER,
            }
        await self._call(
            lambda c: c.agent.service.register(
                parts.name,
                service_id=service_id,
                address=parts.address or None,
                port=parts.port,
                tags=["smmf", self._tag, parts.state],
                meta=parts.meta,
                weights={"Passing": parts.weight, "Warning": 1},
                check=check,
                replace_existing_checks=True,
            )
        )
        if held is not None:
            held.services.add(service_id)
        return 0

    async def create(self, key: str, value: bytes, lease: int | None = None) -> int:
        """Write only where nothing is.  Consul's agent API has no compare-and-set on services, so for a record
        this reads, then registers: two sidecars racing for one id within that gap can both succeed."""
        if instance_parts(key) is None:
            if not await self._call(lambda c: c.kv.put(self._kv(key), value, cas=0)):
                raise AlreadyRegistered(key)
            return 0
        if await self.get(key) is not None:
            raise AlreadyRegistered(key)
        return await self.put(key, value, lease)

    async def get(self, key: str) -> bytes | None:
        instance = instance_parts(key)
        if instance is None:
            _, entry = await self._call(lambda c: c.kv.get(self._kv(key)))
            return None if entry is None else (entry.get("Value") or b"")
        model, _ = instance
        _, found = await self._health(service_name(model), 0)
        item = found.get(key)
        return None if item is None else item[0]

    async def delete(self, key: str) -> bool:
        instance = instance_parts(key)
        if instance is None:
            if await self.get(key) is None:
                return False
            await self._call(lambda c: c.kv.delete(self._kv(key)))
            return True
        return await self._deregister(instance[1])

    # -- listing -----------------------------------------------------------

    async def _health(self, name: str, index: int) -> tuple[int, dict[str, tuple[bytes, int]]]:
        """The passing smmf records of one service (key → record, index), blocking when `index` is given."""
        returned, nodes = await self._call(
            lambda c: c.health.service(name, index=index or None, wait=self._wait, passing=True, tag=self._tag),
            blocking=bool(index),
        )
        found = {}
        for node in nodes or []:
            service = node.get("Service") or {}
            decoded = decode_service(service.get("Meta") or {})
            if decoded is None or service_name(decoded[0]) != service.get("Service"):
                continue
            model, raw = decoded
            written = max([service.get("ModifyIndex", 0)] + [c.get("ModifyIndex", 0) for c in node.get("Checks", [])])
            found[instance_key(model, service["ID"])] = (raw, int(written))
        return int(returned), found

    async def _services(self, index: int) -> tuple[int, set[str]]:
        """The names of the services that hold this prefix's records, blocking when `index` is given."""
        returned, listing = await self._call(
            lambda c: c.catalog.services(index=index or None, wait=self._wait), blocking=bool(index)
        )
        return int(returned), {name for name, tags in (listing or {}).items() if self._tag in (tags or [])}

    async def _admin(self, prefix: str, index: int) -> tuple[int, dict[str, tuple[bytes, int]]]:
        returned, entries = await self._call(
            lambda c: c.kv.get(self._kv(prefix), index=index or None, wait=self._wait, recurse=True),
            blocking=bool(index),
        )
        start = len(self._prefix) + 1
        return int(returned), {e["Key"][start:]: (e.get("Value") or b"", e["ModifyIndex"]) for e in entries or []}

    async def list(self, prefix: str) -> tuple[dict[str, bytes], int]:
        if not prefix.startswith(INSTANCES):
            index, items = await self._admin(prefix, 0)
            listing = _Listing(None, {"": index}, {"": items})
        else:
            model = prefix_model(prefix)
            catalog_index, names = (None, {service_name(model)}) if model else await self._services(0)
            listing = _Listing(catalog_index, {}, {})
            for name in sorted(names):
                index, found = await self._health(name, 0)
                listing.indexes[name] = index
                listing.items[name] = {k: v for k, v in found.items() if k.startswith(prefix)}
        revision = max([listing.catalog_index or 1, *listing.indexes.values()])
        self._listings[(prefix, revision)] = listing
        while len(self._listings) > RESUMABLE:
            self._listings.popitem(last=False)
        merged = {k: raw for items in listing.items.values() for k, (raw, _) in items.items()}
        return merged, revision

    async def stream(self, prefix: str, after: int) -> AsyncGenerator[RawEvent, None]:
        listing = self._listings.get((prefix, after))
        if listing is None:
            raise Compacted(after, after)  # not a revision this store listed: list again
        updates: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        known = {name: dict(items) for name, items in listing.items.items()}
        followers: dict[str, asyncio.Task[None]] = {}

        def follow(name: str, index: int) -> None:
            if not prefix.startswith(INSTANCES):
                fetch: Callable[[int], Awaitable[tuple[int, Any]]] = lambda i: self._admin(prefix, i)  # noqa: E731
            elif name == _CATALOG:
                fetch = self._services
            else:
                fetch = lambda i: self._health(name, i)  # noqa: E731
            followers[name] = asyncio.create_task(self._follow(name, index, fetch, updates))

        for name, index in listing.indexes.items():
            follow(name, index)
        if listing.catalog_index is not None:
            follow(_CATALOG, listing.catalog_index)
        try:
            while True:
                name, update = await updates.get()
                if isinstance(update, BaseException):
                    raise update
                index, current = update
                if name == _CATALOG:
                    for gone in set(followers) - current - {_CATALOG}:
                        followers.pop(gone).cancel()
                        for event in _changes(known.pop(gone, {}), {}, index):
                            yield event
                    for new in sorted(current - set(followers)):
                        known[new] = {}
                        follow(new, 0)
                    continue
                if name not in followers:
                    continue  # a service dropped from the catalog while its answer was on the way
                current = {k: v for k, v in current.items() if k.startswith(prefix)}
                for event in _changes(known.get(name, {}), current, index):
                    yield event
                known[name] = current
        finally:
            for task in followers.values():
                task.cancel()
            await asyncio.gather(*followers.values(), return_exceptions=True)

    @staticmethod
    async def _follow(
        name: str,
        index: int,
        fetch: Callable[[int], Awaitable[tuple[int, Any]]],
        updates: asyncio.Queue[tuple[str, Any]],
    ) -> None:
        """Repeat one blocking query, handing every answer (or the error that ends it) to the stream."""
        query = _Query(index)
        try:
            while True:
                await query.pace()
                returned, current = await fetch(query.index)
                query.advance(returned)
                updates.put_nowait((name, (returned, current)))
        except Exception as exc:  # noqa: BLE001 - handed to the stream, which raises it to the watch loop
            updates.put_nowait((name, exc))
