"""The sidecar: keeps one server's record in the registry true for as long as the server runs.

One controller task owns every decision and takes events from a queue
(health changed, child exited, admin action, signal); the probe, load and
admin-watch loops only report.  So a drain, a health flip and a restart can
never race each other, and each state change is logged on one line.

The record is registered when the server is healthy and the operator wants
it online; otherwise it is withdrawn.  The lease's own keepalive registers it
again if the registry loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from ..admin import AdminAction, AdminState
from ..backoff import Backoff
from ..errors import ConfigurationError, RegistryUnavailable
from ..instance import Instance, Kind, Load, State, new_instance_id
from ..registry import Lease, open_registry
from .child import Child
from .probe import BACKEND, LoadSample, Probe, UpstreamType

log = logging.getLogger("smmf.sidecar")

#: How long a drain waits at least, so requests already on their way still land before the count is read.
DRAIN_SETTLE = 0.5
#: How long a drain waits when the server publishes no load to watch.
BLIND_DRAIN = 5.0


@dataclass
class SidecarConfig:
    model: str
    upstream: str
    registry: str | None = None
    kind: Kind | None = None
    weight: float = 1.0
    labels: dict[str, str] = field(default_factory=dict)
    ttl: float = 10.0
    probe_interval: float = 2.0
    load_interval: float = 1.0
    advertise: str | None = None
    upstream_type: UpstreamType = UpstreamType.SMMF
    drain_timeout: float = 30.0
    command: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("upstream", "advertise"):
            url = getattr(self, name)
            if url is not None and urlsplit(url).scheme not in ("http", "https"):
                raise ConfigurationError(f"--{name} must be an http(s) URL, got {url!r}")
        if self.ttl <= 0 or self.probe_interval <= 0 or self.load_interval <= 0 or self.drain_timeout < 0:
            raise ConfigurationError(
                "--ttl, --probe-interval and --load-interval must be positive, --drain-timeout >= 0"
            )
        if self.weight <= 0:
            raise ConfigurationError("--weight must be positive")


Event = tuple[Literal["health", "child_exited", "admin", "retry", "terminate"], object]


class Sidecar:
    def __init__(self, config: SidecarConfig) -> None:
        self.config = config
        self.registry = open_registry(config.registry)
        probe_timeout = min(2.0, max(0.5, config.probe_interval))
        self.probe = Probe(config.upstream, config.upstream_type, probe_timeout)
        root = (config.advertise or config.upstream).rstrip("/")
        parts = urlsplit(root)
        self.instance_id = new_instance_id(parts.hostname or "localhost", parts.port or 80)
        self.endpoint = f"{root}/v1"
        self.child = Child(config.command, self._child_exited) if config.command else None
        self.backend = BACKEND[config.upstream_type]
        self.kind = config.kind or Kind.LLM
        self.lease: Lease | None = None
        self.state = State.UP
        self.desired: Literal["online", "offline", "drained"] = "online"
        self.healthy = False
        self.terminating = False
        self.load = LoadSample(0, 0)
        #: When `load` was read from the server: a record written for another reason keeps this time, so
        #: clients can tell which of their own requests the figure counted (`Peer.update`).
        self.load_at = time.time()
        self.writes = 0
        self._probed_healthy = False
        self._keepalive: asyncio.Task[None] | None = None
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._register_backoff = Backoff(base=0.2, cap=2.0)
        self._signals = 0

    # -- the record ---------------------------------------------------------

    def record(self) -> Instance:
        return Instance(
            id=self.instance_id,
            model=self.config.model,
            kind=self.kind,
            endpoint=self.endpoint,
            backend=self.backend,
            weight=self.config.weight,
            state=self.state,
            labels=self.config.labels,
            load=Load(
                inflight=self.load.inflight,
                queued=self.load.queued,
                kv_cache_usage=self.load.kv_cache_usage,
                updated_at=self.load_at,
            ),
        )

    async def _register(self) -> None:
        try:
            self.lease = await self.registry.register(self.record(), self.config.ttl)
        except RegistryUnavailable as exc:
            delay = self._register_backoff.next_delay()
            log.warning("registry unavailable (%s); registering %s in %.1fs", exc.reason, self.instance_id, delay)
            asyncio.get_running_loop().call_later(delay, self._events.put_nowait, ("retry", None))
            return
        self._register_backoff.reset()
        self.writes += 1
        self._keepalive = asyncio.create_task(self.lease.keepalive())
        log.info(
            "registered %s: model %s at %s (%s, weight %g, ttl %gs)",
            self.instance_id, self.config.model, self.endpoint, self.backend, self.config.weight, self.config.ttl,
        )  # fmt: skip

    async def _withdraw(self, reason: str) -> None:
        lease, self.lease = self.lease, None
        if lease is None:
            return
        if self._keepalive is not None:
            self._keepalive.cancel()
        self.state = State.UP
        try:
            await lease.revoke()
            self.writes += 1
        except RegistryUnavailable as exc:
            log.warning("could not delete the record now (%s); it expires with its lease", exc.reason)
        log.info("withdrawn %s: %s", self.instance_id, reason)

    async def _write(self) -> None:
        if self.lease is None:
            return
        try:
            await self.lease.update(self.record())
            self.writes += 1
        except RegistryUnavailable as exc:
            log.warning("could not update the record (%s); the next change retries", exc.reason)

    async def _reconcile(self) -> None:
        want = self.healthy and self.desired == "online" and not self.terminating
        if want and self.lease is None:
            await self._register()
        elif not want and self.lease is not None:
            reason = "upstream unhealthy" if not self.healthy else f"desired state {self.desired}"
            await self._withdraw(reason)

    async def _drain(self, why: str) -> None:
        """Mark the record draining, wait for in-flight work to finish (or the timeout), then withdraw."""
        if self.lease is None:
            return
        self.state = State.DRAINING
        await self._write()
        log.info(
            "draining %s (%s): no new requests; waiting up to %gs", self.instance_id, why, self.config.drain_timeout
        )
        started = time.monotonic()
        deadline = started + self.config.drain_timeout
        await asyncio.sleep(min(DRAIN_SETTLE, self.config.drain_timeout))
        while time.monotonic() < deadline:
            sample = await self.probe.load()
            if sample is None:
                await asyncio.sleep(max(0.0, min(deadline, started + BLIND_DRAIN) - time.monotonic()))
                break
            if sample.inflight + sample.queued == 0:
                break
            await asyncio.sleep(0.1)
        else:
            log.warning(
                "drain of %s timed out after %gs with work in flight", self.instance_id, self.config.drain_timeout
            )
        await self._withdraw(f"drained ({why}) after {time.monotonic() - started:.1f}s")

    # -- reporters ----------------------------------------------------------

    async def _probe_loop(self) -> None:
        failures = 0
        while True:
            ok = await self.probe.healthy()
            if ok:
                failures = 0
                if not self._probed_healthy:
                    self._probed_healthy = True
                    await self._events.put(("health", True))
            else:
                failures += 1
                if self._probed_healthy and failures >= 2:
                    self._probed_healthy = False
                    await self._events.put(("health", False))
            await asyncio.sleep(self.config.probe_interval)

    async def _load_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.load_interval)
            if self.lease is None:
                continue
            sample = await self.probe.load()
            if sample is not None and sample != self.load:
                self.load, self.load_at = sample, time.time()
                await self._write()

    async def _admin_loop(self) -> None:
        async for event in self.registry.watch_admin(self.instance_id):
            for state in event.values:
                if state.acked_at is None:
                    await self._events.put(("admin", state))

    async def _child_exited(self, code: int) -> None:
        self._probed_healthy = False
        await self._events.put(("child_exited", code))

    # -- the controller -----------------------------------------------------

    async def _handle(self, kind: str, payload: object) -> None:
        if kind == "health":
            self.healthy = bool(payload)
            log.info("upstream %s is %s", self.config.upstream, "healthy" if self.healthy else "unhealthy")
            if self.healthy and self.config.upstream_type is UpstreamType.SMMF:
                backend, reported = await self.probe.describe()
                self.backend, self.kind = backend, self.config.kind or reported or self.kind
            await self._reconcile()
        elif kind == "child_exited":
            self.healthy = False
            await self._withdraw(f"child exited with {payload}")
        elif kind == "retry":
            await self._reconcile()
        elif kind == "admin":
            assert isinstance(payload, AdminState)
            await self._obey(payload)

    async def _obey(self, state: AdminState) -> None:
        log.info(
            "admin %s requested for %s%s",
            state.action,
            self.instance_id,
            f" by {state.requested_by}" if state.requested_by else "",
        )
        if state.action is AdminAction.OFFLINE:
            self.desired = "offline"
            await self._reconcile()
        elif state.action is AdminAction.ONLINE:
            self.desired = "online"
            await self._reconcile()
        elif state.action is AdminAction.DRAIN:
            self.desired = "drained"
            await self._drain("admin drain")
        elif state.action is AdminAction.RESTART:
            await self._drain("admin restart")
            if self.child is not None:
                self.healthy = self._probed_healthy = False
                await self.child.restart()
                await self._wait_healthy()
            self.desired = "online"
            await self._reconcile()
        with contextlib.suppress(RegistryUnavailable):
            await self.registry.ack_admin(self.instance_id, state)

    async def _wait_healthy(self, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not await self.probe.healthy():
            await asyncio.sleep(min(0.2, self.config.probe_interval))
        self.healthy = self._probed_healthy = time.monotonic() < deadline

    def _on_signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("signal received: draining, deregistering and stopping (again to exit at once)")
            self._events.put_nowait(("terminate", None))
            return
        log.warning("second signal: exiting now")
        if self.child is not None:
            self.child.kill_now()
        os._exit(1)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal)
        log.info("sidecar for %s: instance %s, upstream %s, registry %s",
                 self.config.model, self.instance_id, self.config.upstream, self.registry.url)  # fmt: skip
        if self.child is not None:
            await self.child.start()
        reporters = [asyncio.create_task(job()) for job in (self._probe_loop, self._load_loop, self._admin_loop)]
        try:
            while True:
                kind, payload = await self._events.get()
                if kind == "terminate":
                    break
                await self._handle(kind, payload)
            self.terminating = True
            await self._drain("shutting down")
            await self._withdraw("shutting down")
        finally:
            for task in reporters:
                task.cancel()
            if self.child is not None:
                await self.child.stop()
            with contextlib.suppress(RegistryUnavailable):
                await self.registry.delete_admin(self.instance_id)
            await self.probe.close()
            await self.registry.close()
        log.info("sidecar stopped")
        return 0
