"""A Consul agent and server in one aiohttp process, for the tests: the subset of Consul's HTTP API smmf uses.

No Consul server can be installed on the test machines (it is in neither
Debian, PyPI nor npm), so the Consul driver is tested against this.  It
follows Consul's documented HTTP API and what its source does
(`agent/agent_endpoint.go`, `agent/structs`, `agent/consul/state`), and
`tests/test_consul_emulator.py` checks it with two clients smmf did not write:
py-consul's synchronous client and the npm `consul` package.

Covered:

- blocking queries (`index`, `wait`: default 5 min, capped at 10 min, plus up
  to wait/16 of jitter; `X-Consul-Index` on every response, never 0), with one
  index per service name, for the services table and per KV prefix;
- `PUT /v1/agent/service/register` (JSON keys decoded case-insensitively,
  as Consul does), `PUT /v1/agent/service/deregister/<id>`,
  `PUT /v1/agent/check/pass|warn|fail/<check id>`, `GET /v1/agent/services`;
- TTL checks: a new check is critical unless `Status` is given, a TTL that
  runs out makes it critical with `TTL expired`, re-registering keeps its
  status and restarts its TTL; `DeregisterCriticalServiceAfter` raised to the
  1-minute minimum and a reaper every 30 s (`--reaper-speedup` runs both
  faster, as a test clock);
- `GET /v1/health/service/<name>` (`passing`, `tag`) in Consul's response
  shape, with the node's `serfHealth` check; `GET /v1/catalog/services`;
- KV: `GET` (`recurse`, `keys`, `index`), `PUT` (`cas`), `DELETE` (`recurse`,
  `cas`), base64 values, `CreateIndex`/`ModifyIndex`;
- Meta validation with Consul's messages; ACLs: with `--token-env VAR`, a
  request without that token (`X-Consul-Token`, or `Authorization: Bearer`)
  gets 403.

Not Consul's, for tests only: `PUT /_emulator/reset-index` renumbers every
index from 1, as a restore from an older snapshot would, so a client's index
goes backwards.

    python -m tests.support.consul_emulator --port 8500 [--token-env VAR] [--reaper-speedup 30]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

NODE = "smmf-test-node"
NODE_ID = str(uuid.uuid5(uuid.NAMESPACE_DNS, NODE))
DATACENTER = "dc1"
DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0
#: The agent's reaper period (`CheckReapInterval`); the floor of DeregisterCriticalServiceAfter is 1 minute.
REAP_INTERVAL = 30.0
META_MAX_PAIRS = 64
META_KEY_MAX = 128
META_VALUE_MAX = 512
META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")
DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class HTTPError(Exception):
    """What Consul's handlers return as `HTTPError{StatusCode, Reason}`: the reason is the plain-text body."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def parse_duration(value: Any, what: str) -> float:
    """Go's `time.ParseDuration` for the forms Consul accepts ("10s", "1m30s", "500ms"); a bare number is seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise HTTPError(400, f"Invalid {what}: time: invalid duration {text!r}")
    return sum(float(n) * UNITS[u] for n, u in parts)


def go_duration(seconds: float) -> str:
    """How Go prints a `time.Duration` (`10s`, `1m0s`, `1.5s`), as Consul echoes `TTL` and friends back."""
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{rest:g}s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)}h{int(minutes)}m{rest:g}s"


def folded(data: Any) -> Any:
    """Object keys lower-cased, recursively, except inside maps Consul keeps as given (Meta, TaggedAddresses)."""
    if isinstance(data, dict):
        return {k.lower(): (v if k.lower() in ("meta", "taggedaddresses") else folded(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [folded(item) for item in data]
    return data


def validate_meta(meta: dict[str, str]) -> None:
    """`structs.ValidateServiceMetadata`, with its messages."""
    if len(meta) > META_MAX_PAIRS:
        raise HTTPError(
            400, f"Invalid Service Meta: Node metadata cannot contain more than {META_MAX_PAIRS} key/value pairs"
        )
    for key, value in sorted(meta.items()):
        problem = None
        if key == "":
            problem = "Key cannot be blank"
        elif not META_KEY.match(key):
            problem = "Key contains invalid characters"
        elif len(key) > META_KEY_MAX:
            problem = f"Key is too long (limit: {META_KEY_MAX} characters)"
        elif key.startswith("consul-"):
            problem = "Key prefix 'consul-' is reserved for internal use"
        elif len(str(value).encode()) > META_VALUE_MAX:
            problem = f"Value is too long (limit: {META_VALUE_MAX} characters)"
        if problem:
            raise HTTPError(400, f"Invalid Service Meta: Couldn't load metadata pair ('{key}', '{value}'): {problem}")


@dataclass
class Service:
    id: str
    name: str
    tags: list[str]
    address: str
    port: int
    meta: dict[str, str]
    weights: dict[str, int]
    create_index: int
    modify_index: int

    def fields(self) -> tuple[Any, ...]:
        return (self.name, self.tags, self.address, self.port, self.meta, self.weights)

    def render(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Service": self.name,
            "Tags": list(self.tags),
            "Address": self.address,
            "TaggedAddresses": {},
            "Meta": dict(self.meta),
            "Port": self.port,
            "Weights": dict(self.weights),
            "EnableTagOverride": False,
            "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
            "Connect": {},
            "PeerName": "",
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


@dataclass
class Check:
    id: str
    name: str
    service_id: str
    service_name: str
    status: str
    ttl: float | None
    deregister_after: float | None
    create_index: int
    modify_index: int
    output: str = ""
    notes: str = ""
    expires_at: float | None = None
    critical_since: float | None = None

    def render(self, tags: list[str]) -> dict[str, Any]:
        definition: dict[str, Any] = {}
        if self.ttl is not None:
            definition = {"Interval": "0s", "Timeout": "0s", "TTL": go_duration(self.ttl)}
        if self.deregister_after is not None:
            definition["DeregisterCriticalServiceAfterDuration"] = go_duration(self.deregister_after)
        return {
            "Node": NODE,
            "CheckID": self.id,
            "Name": self.name,
            "Status": self.status,
            "Notes": self.notes,
            "Output": self.output,
            "ServiceID": self.service_id,
            "ServiceName": self.service_name,
            "ServiceTags": list(tags),
            "Type": "ttl" if self.ttl is not None else "",
            "Interval": "",
            "Timeout": "",
            "ExposedPort": 0,
            "Definition": definition,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


@dataclass
class Entry:
    value: bytes
    flags: int
    create_index: int
    modify_index: int

    def render(self, key: str) -> dict[str, Any]:
        return {
            "LockIndex": 0,
            "Key": key,
            "Flags": self.flags,
            "Value": base64.b64encode(self.value).decode() if self.value else None,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


@dataclass
class State:
    """The catalog, the agent's checks and the KV store, with Raft-like indexes and a change signal."""

    token: str | None = None
    #: The test clock: the reaper runs this many times faster (its 30 s period and the 1-minute minimum shrink).
    reaper_speedup: float = 1.0
    index: int = 1
    node_index: int = 1
    services: dict[str, Service] = field(default_factory=dict)
    checks: dict[str, Check] = field(default_factory=dict)
    kv: dict[str, Entry] = field(default_factory=dict)
    tombstones: dict[str, int] = field(default_factory=dict)
    services_index: int = 1
    service_index: dict[str, int] = field(default_factory=dict)
    kv_index: int = 1
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def write(self) -> int:
        """One Raft write: the next index, and every blocked query woken to look again."""
        self.index += 1
        self.changed.set()
        self.changed = asyncio.Event()
        return self.index

    def touch_service(self, name: str, *, table: bool = False) -> int:
        index = self.write()
        self.service_index[name] = index
        if table:
            self.services_index = index
        return index

    def health_index(self, name: str) -> int:
        """A service's own index once it exists; before that, the services and nodes tables' (as the state store)."""
        if any(s.name == name for s in self.services.values()):
            return max(self.service_index.get(name, 0), self.node_index)
        return max(self.services_index, self.node_index, self.service_index.get(name, 0))

    def kv_prefix_index(self, prefix: str) -> int:
        """The highest index of a live key or a tombstone under `prefix`; the KV table's when there is none."""
        found = [e.modify_index for k, e in self.kv.items() if k.startswith(prefix)]
        found += [i for k, i in self.tombstones.items() if k.startswith(prefix)]
        return max(found) if found else self.kv_index

    def reset_indexes(self) -> None:
        """Every index from 1 again, as after a restore from an older snapshot."""
        self.index = 1
        for thing in [*self.services.values(), *self.checks.values(), *self.kv.values()]:
            thing.create_index = thing.modify_index = 1
        self.node_index = self.services_index = self.kv_index = 1
        self.service_index = dict.fromkeys(self.service_index, 1)
        self.tombstones = dict.fromkeys(self.tombstones, 1)

    # -- TTLs and the reaper ------------------------------------------------

    def set_status(self, check: Check, status: str, output: str) -> None:
        """`CheckTTL.SetStatus` then anti-entropy: a write only when status or output changed."""
        if check.status != status or check.output != output:
            check.status, check.output = status, output
            check.critical_since = time.monotonic() if status == "critical" else None
            check.modify_index = self.touch_service(check.service_name)

    def expire(self) -> None:
        now = time.monotonic()
        for check in list(self.checks.values()):
            if check.ttl is not None and check.expires_at is not None and now >= check.expires_at:
                check.expires_at = None
                self.set_status(check, "critical", "TTL expired")

    def reap(self) -> None:
        """`Agent.reapServicesInternal`: deregister services whose check was critical longer than its limit."""
        now = time.monotonic()
        for check in list(self.checks.values()):
            if check.deregister_after is None or check.critical_since is None:
                continue
            limit = check.deregister_after / self.reaper_speedup
            if now - check.critical_since > limit and check.service_id in self.services:
                self.remove_service(check.service_id)

    def remove_service(self, service_id: str) -> None:
        service = self.services.pop(service_id)
        for check_id in [c.id for c in self.checks.values() if c.service_id == service_id]:
            del self.checks[check_id]
        self.touch_service(service.name, table=True)

    # -- health ------------------------------------------------------------

    def serf_check(self) -> dict[str, Any]:
        return {
            "Node": NODE,
            "CheckID": "serfHealth",
            "Name": "Serf Health Status",
            "Status": "passing",
            "Notes": "",
            "Output": "Agent alive and reachable",
            "ServiceID": "",
            "ServiceName": "",
            "ServiceTags": [],
            "Type": "",
            "Interval": "",
            "Timeout": "",
            "ExposedPort": 0,
            "Definition": {},
            "CreateIndex": self.node_index,
            "ModifyIndex": self.node_index,
        }

    def node(self) -> dict[str, Any]:
        return {
            "ID": NODE_ID,
            "Node": NODE,
            "Address": "127.0.0.1",
            "Datacenter": DATACENTER,
            "TaggedAddresses": {
                "lan": "127.0.0.1",
                "lan_ipv4": "127.0.0.1",
                "wan": "127.0.0.1",
                "wan_ipv4": "127.0.0.1",
            },
            "Meta": {"consul-network-segment": "", "consul-version": "1.21.0"},
            "CreateIndex": self.node_index,
            "ModifyIndex": self.node_index,
        }

    def health(self, name: str, passing: bool, tags: list[str]) -> list[dict[str, Any]]:
        results = []
        for service in sorted(self.services.values(), key=lambda s: s.id):
            if service.name != name or any(tag not in service.tags for tag in tags):
                continue
            checks = [c.render(service.tags) for c in self.checks.values() if c.service_id == service.id]
            checks = [self.serf_check(), *checks]
            if passing and any(c["Status"] != "passing" for c in checks):
                continue
            results.append({"Node": self.node(), "Service": service.render(), "Checks": checks})
        return results


def _state(request: web.Request) -> State:
    return request.app["state"]


def _respond(state: State, body: Any, index: int | None = None, status: int = 200) -> web.Response:
    headers = {"X-Consul-Effective-Consistency": "leader", "X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}
    headers["X-Consul-Index"] = str(max(index if index is not None else state.index, 1))
    return web.json_response(body, status=status, headers=headers)


async def _blocking(request: web.Request, current: Callable[[], int]) -> int:
    """Consul's `blockingQuery`: return at once without `index`, else when the index passes it or `wait` runs out."""
    state = _state(request)
    query = request.query
    if "index" not in query:
        return current()
    try:
        min_index = int(query["index"])
    except ValueError:
        raise HTTPError(400, "Invalid index") from None
    wait = DEFAULT_WAIT if "wait" not in query else parse_duration(query["wait"], "wait time")
    wait = min(wait or DEFAULT_WAIT, MAX_WAIT)
    deadline = time.monotonic() + wait + random.uniform(0, wait / 16)
    while (index := current()) <= min_index:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            await asyncio.wait_for(state.changed.wait(), remaining)
        except TimeoutError:
            break
    return index


def _tags(request: web.Request) -> list[str]:
    return request.query.getall("tag", [])


async def health_service(request: web.Request) -> web.Response:
    state = _state(request)
    name = request.match_info["name"]
    index = await _blocking(request, lambda: state.health_index(name))
    passing = "passing" in request.query and request.query["passing"].lower() not in ("0", "false")
    return _respond(state, state.health(name, passing, _tags(request)), index)


async def catalog_services(request: web.Request) -> web.Response:
    state = _state(request)
    index = await _blocking(request, lambda: max(state.services_index, state.node_index))
    listing: dict[str, list[str]] = {"consul": []}
    for service in state.services.values():
        tags = listing.setdefault(service.name, [])
        tags += [t for t in service.tags if t not in tags]
    return _respond(state, listing, index)


async def agent_services(request: web.Request) -> web.Response:
    state = _state(request)
    body = {}
    for service in state.services.values():
        shown = service.render()
        for gone in ("CreateIndex", "ModifyIndex", "Proxy", "Connect", "PeerName"):
            shown.pop(gone)
        body[service.id] = shown | {"Datacenter": DATACENTER}
    return _respond(state, body)


async def register(request: web.Request) -> web.Response:
    state = _state(request)
    try:
        raw = json.loads(await request.read() or b"null")
    except ValueError as exc:
        raise HTTPError(400, f"Request decode failed: {exc}") from None
    if not isinstance(raw, dict):
        raise HTTPError(
            400, "Request decode failed: json: cannot unmarshal into Go value of type structs.ServiceDefinition"
        )
    body = folded(raw)
    name = body.get("name") or ""
    if not name:
        raise HTTPError(400, "Missing service name")
    address = body.get("address") or ""
    if address in ("0.0.0.0", "::", "[::]"):
        raise HTTPError(400, "Invalid service address")
    weights = body.get("weights") or {"passing": 1, "warning": 1}
    weights = {"Passing": int(weights.get("passing", 0)), "Warning": int(weights.get("warning", 0))}
    if weights["Passing"] < 1:
        raise HTTPError(400, "Invalid Weights: Passing must be greater than 0")
    if weights["Warning"] < 0:
        raise HTTPError(400, "Invalid Weights: Warning must be greater or equal than 0")
    if weights["Passing"] > 65535 or weights["Warning"] > 65535:
        raise HTTPError(400, "Invalid Weights: DNS Weight must be between 0 and 65535")
    meta = {str(k): str(v) for k, v in (body.get("meta") or {}).items()}
    validate_meta(meta)
    definitions = ([body["check"]] if body.get("check") else []) + list(body.get("checks") or [])
    for definition in definitions:
        status = definition.get("status") or ""
        if status and status not in ("passing", "warning", "critical"):
            raise HTTPError(400, "Status for checks must 'passing', 'warning', 'critical'")
        if definition.get("ttl") is None and not any(definition.get(k) for k in ("http", "tcp", "grpc", "args")):
            raise HTTPError(400, "Invalid check: TTL must be > 0 for TTL checks")
    service_id = body.get("id") or name
    tags = list(body.get("tags") or [])
    port = int(body.get("port") or 0)
    existing = state.services.get(service_id)
    fresh = Service(service_id, name, tags, address, port, meta, weights, 0, 0)
    if existing is None or existing.fields() != fresh.fields():
        index = state.touch_service(name, table=True)
        if existing is not None and existing.name != name:
            state.service_index[existing.name] = index
        fresh.create_index = existing.create_index if existing else index
        fresh.modify_index = index
        state.services[service_id] = fresh
    now = time.monotonic()
    wanted = set()
    for number, definition in enumerate(definitions, start=1):
        check_id = definition.get("checkid") or definition.get("id")
        if not check_id:
            check_id = f"service:{service_id}" + (f":{number}" if len(definitions) > 1 else "")
        wanted.add(check_id)
        # A check of any other kind (http, tcp...) is kept but never run: its status stays as registered.
        ttl = None if definition.get("ttl") is None else parse_duration(definition["ttl"], "TTL")
        after = definition.get("deregistercriticalserviceafter")
        after = None if after is None else max(parse_duration(after, "DeregisterCriticalServiceAfter"), 60.0)
        previous = state.checks.get(check_id)
        if previous is not None:  # the status is kept; the TTL starts again
            previous.ttl, previous.deregister_after = ttl, after
            previous.expires_at = None if ttl is None else now + ttl
            continue
        status = definition.get("status") or "critical"
        name_ = definition.get("name") or f"Service '{name}' check"
        index = state.touch_service(name)
        check = Check(
            check_id, name_, service_id, name, status, ttl, after, index, index, notes=definition.get("notes", "")
        )
        check.expires_at = None if ttl is None else now + ttl
        check.critical_since = now if status == "critical" else None
        state.checks[check_id] = check
    replace = request.query.get("replace-existing-checks")
    if replace is not None and replace in ("", "true"):
        for stale in [c.id for c in state.checks.values() if c.service_id == service_id and c.id not in wanted]:
            del state.checks[stale]
            state.touch_service(name)
    return web.Response(status=200)


async def deregister(request: web.Request) -> web.Response:
    state = _state(request)
    service_id = request.match_info["id"]
    if service_id not in state.services:
        raise HTTPError(
            404, f'Unknown service ID "{service_id}". Ensure that the service ID is passed, not the service name.'
        )
    state.remove_service(service_id)
    return web.Response(status=200)


async def update_check(request: web.Request) -> web.Response:
    state = _state(request)
    status = {"pass": "passing", "warn": "warning", "fail": "critical"}[request.match_info["verb"]]
    check_id = request.match_info["id"]
    check = state.checks.get(check_id)
    if check is None:
        raise HTTPError(404, f'Unknown check ID "{check_id}". Ensure that the check ID is passed, not the check name.')
    if check.ttl is None:
        raise HTTPError(500, f'CheckID "{check_id}" does not have associated TTL')
    check.expires_at = time.monotonic() + check.ttl
    state.set_status(check, status, request.query.get("note", ""))
    return web.Response(status=200)


def _flag(request: web.Request, name: str) -> bool:
    return name in request.query


async def kv_get(request: web.Request) -> web.Response:
    state = _state(request)
    key = request.match_info["key"]
    recurse, keys_only = _flag(request, "recurse"), _flag(request, "keys")
    prefix_wide = recurse or keys_only
    index = await _blocking(request, lambda: state.kv_prefix_index(key) if prefix_wide else _key_index(state, key))
    if keys_only:
        separator = request.query.get("separator", "")
        found: list[str] = []
        for k in sorted(state.kv):
            if not k.startswith(key):
                continue
            if separator and separator in k[len(key) :]:
                k = k[: len(key) + k[len(key) :].index(separator) + len(separator)]
            if k not in found:
                found.append(k)
        if not found:
            return _respond(state, None, index, status=404)
        return _respond(state, found, index)
    matched = sorted(k for k in state.kv if (k.startswith(key) if recurse else k == key))
    if not matched:
        return web.Response(status=404, headers={"X-Consul-Index": str(max(index, 1)), "X-Consul-KnownLeader": "true"})
    return _respond(state, [state.kv[k].render(k) for k in matched], index)


def _key_index(state: State, key: str) -> int:
    entry = state.kv.get(key)
    if entry is not None:
        return entry.modify_index
    return state.tombstones.get(key) or state.kv_index


async def kv_put(request: web.Request) -> web.Response:
    state = _state(request)
    key = request.match_info["key"]
    if not key:
        raise HTTPError(400, "Missing key name")
    value = await request.read()
    flags = int(request.query.get("flags", "0"))
    existing = state.kv.get(key)
    if "cas" in request.query:
        cas = int(request.query["cas"])
        if (cas == 0 and existing is not None) or (cas != 0 and (existing is None or existing.modify_index != cas)):
            return _respond(state, False)
    index = state.write()
    state.kv_index = index
    state.kv[key] = Entry(value, flags, existing.create_index if existing else index, index)
    state.tombstones.pop(key, None)
    return _respond(state, True)


async def kv_delete(request: web.Request) -> web.Response:
    state = _state(request)
    key = request.match_info["key"]
    recurse = _flag(request, "recurse")
    doomed = [k for k in state.kv if (k.startswith(key) if recurse else k == key)]
    if "cas" in request.query:
        cas = int(request.query["cas"])
        entry = state.kv.get(key)
        if recurse or entry is None or entry.modify_index != cas:
            return _respond(state, False)
    if doomed:
        index = state.write()
        state.kv_index = index
        for k in doomed:
            del state.kv[k]
            state.tombstones[k] = index
    return _respond(state, True)


async def reset_index(request: web.Request) -> web.Response:
    state = _state(request)
    state.reset_indexes()
    return web.json_response({"index": state.index})


@web.middleware
async def consul_errors(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
    """Consul's ACL check and its way of answering errors: the status and the reason as plain text."""
    state = _state(request)
    try:
        if state.token is not None and not request.path.startswith("/_emulator/"):
            given = request.headers.get("X-Consul-Token") or request.query.get("token")
            bearer = request.headers.get("Authorization", "")
            if not given and bearer.startswith("Bearer "):
                given = bearer[len("Bearer ") :]
            if not given:
                raise HTTPError(403, "Permission denied: anonymous token lacks permission")
            if given != state.token:
                raise HTTPError(403, "ACL not found")
        return await handler(request)
    except HTTPError as exc:
        return web.Response(status=exc.status, text=exc.reason)


async def _housekeeping(app: web.Application) -> Any:
    state: State = app["state"]

    async def run() -> None:
        last_reap = time.monotonic()
        while True:
            await asyncio.sleep(0.05)
            state.expire()
            if time.monotonic() - last_reap >= REAP_INTERVAL / state.reaper_speedup:
                state.reap()
                last_reap = time.monotonic()

    task = asyncio.create_task(run())
    yield
    task.cancel()


def make_app(token: str | None = None, reaper_speedup: float = 1.0) -> web.Application:
    app = web.Application(middlewares=[consul_errors])
    app["state"] = State(token=token, reaper_speedup=reaper_speedup)
    app.cleanup_ctx.append(_housekeeping)
    app.router.add_put("/v1/agent/service/register", register)
    app.router.add_put("/v1/agent/service/deregister/{id}", deregister)
    app.router.add_put("/v1/agent/check/{verb:pass|warn|fail}/{id:.+}", update_check)
    app.router.add_get("/v1/agent/services", agent_services)
    app.router.add_get("/v1/health/service/{name}", health_service)
    app.router.add_get("/v1/catalog/services", catalog_services)
    app.router.add_get("/v1/kv/{key:.*}", kv_get)
    app.router.add_put("/v1/kv/{key:.*}", kv_put)
    app.router.add_delete("/v1/kv/{key:.*}", kv_delete)
    app.router.add_put("/_emulator/reset-index", reset_index)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-env", help="the environment variable holding the one ACL token accepted")
    parser.add_argument("--reaper-speedup", type=float, default=1.0, help="run the reaper's clock this much faster")
    args = parser.parse_args()
    token = os.environ[args.token_env] if args.token_env else None
    app = make_app(token, args.reaper_speedup)
    web.run_app(app, host="127.0.0.1", port=args.port, print=lambda *_: print("ready", flush=True))


if __name__ == "__main__":
    main()
