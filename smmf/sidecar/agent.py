"""The sidecar: keeps one server's record in the registry true for as long as the server runs.

One controller task owns every decision and takes `Event`s from a queue
(health changed, child exited, admin action, retry, lease taken, signal);
the probe, load and admin-watch loops only report.  So a drain, a health
flip and a restart can never race each other, and each change is logged on
one line.

What the record says is decided in one place, `Sidecar.state`:

    draining   a drain is under way (an operator's drain or restart, or shutting down)
    offline    the operator's desired state is offline (until `online`, across restarts)
    unhealthy  the probes fail, or the server is not this sidecar's child
    up         otherwise

The record is registered the first time the server is healthy and stays in
the registry, whatever its state, until the sidecar stops (or dies, and its
lease expires).  Its id is stable (`instance_id`, or `--id`), so an operator's
admin key still applies after a restart, and it is claimed exclusively: a
second live sidecar with the same id refuses to start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit

from ..admin import AdminAction, AdminState
from ..backoff import Backoff
from ..errors import AlreadyRegistered, ConfigurationError, RegistryUnavailable
from ..instance import Instance, Kind, Load, State, instance_id
from ..outage import Outage
from ..registry import Lease, open_registry
from ..tasks import cancel_and_wait
from .child import Child
from .probe import BACKEND, HealthCheck, LoadSample, Probe, UpstreamType
from .status import StatusServer

__all__ = ["Desired", "Sidecar", "SidecarConfig"]

log = logging.getLogger("smmf.sidecar")

#: How long a drain waits at least, so requests already on their way still land before the count is read.
DRAIN_SETTLE = 0.5
#: How long a drain waits when the server publishes no load to watch.
BLIND_DRAIN = 5.0
#: Exits in a row without becoming healthy after which the child is reported as crash-looping.
CRASH_LOOP = 3
#: Extra time, beyond a previous holder's TTL, that a leftover record of this id is given to expire.
EXPIRY_SLACK = 2.0


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
    #: The instance id; by default derived from the model and the advertised address.
    id: str | None = None
    #: Give up (exit 1) after the child exited this many times in a row without becoming healthy; 0: never.
    max_failed_starts: int = 0
    #: Where to serve /ready, /live and /drain for an orchestrator (host, port); None: nowhere.
    status_address: tuple[str, int] | None = None

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
        if self.max_failed_starts < 0:
            raise ConfigurationError("--max-failed-starts must be 0 (never give up) or more")


class Desired(StrEnum):
    """What the operator asked for; it outlives the sidecar in the instance's admin key."""

    ONLINE = "online"
    OFFLINE = "offline"


# -- events ------------------------------------------------------------------


@dataclass(frozen=True)
class HealthChanged:
    check: HealthCheck


@dataclass(frozen=True)
class ChildExited:
    code: int
    uptime: float


@dataclass(frozen=True)
class AdminRequested:
    state: AdminState


@dataclass(frozen=True)
class RetryRegister:
    pass


@dataclass(frozen=True)
class LeaseTaken:
    """The record's id is held by another sidecar now (found when the lease was registered again)."""


@dataclass(frozen=True)
class Terminate:
    pass


@dataclass(frozen=True)
class Retire:
    """The host is about to stop this pod or service (a `preStop` hook): drain for good, then wait for the signal."""


Event = HealthChanged | ChildExited | AdminRequested | RetryRegister | LeaseTaken | Terminate | Retire


def standing_desire(state: AdminState) -> Desired:
    """What an admin key means for the instance from now on, once acted on (and after any restart)."""
    return Desired.OFFLINE if state.action in (AdminAction.OFFLINE, AdminAction.DRAIN) else Desired.ONLINE


class Sidecar:
    def __init__(self, config: SidecarConfig) -> None:
        self.config = config
        self.registry = open_registry(config.registry)
        probe_timeout = min(2.0, max(0.5, config.probe_interval))
        self.probe = Probe(config.upstream, config.upstream_type, probe_timeout)
        root = (config.advertise or config.upstream).rstrip("/")
        parts = urlsplit(root)
        self.instance_id = config.id or instance_id(config.model, parts.hostname or "localhost", parts.port or 80)
        self.endpoint = f"{root}/v1"
        self.upstream_port = urlsplit(config.upstream).port or 80
        self.child = Child(config.command, self._child_exited) if config.command else None
        self.backend = BACKEND[config.upstream_type]
        self.kind = config.kind or Kind.LLM
        self.lease: Lease | None = None
        # What decides the record's state (see `state`).
        self.healthy = False
        self.desired = Desired.ONLINE
        self.draining = False
        #: Set by a `Retire`: the record stays draining until the process ends.
        self.retiring = False
        #: Set once a `Retire`'s drain is over.
        self.retired = asyncio.Event()
        self.load = LoadSample(0, 0)
        self.prefix_cache_hit_rate: float | None = None
        self.load_reported = self.probe.publishes_load
        #: When `load` was read from the server: a record written for another reason keeps this time, so
        #: clients can tell which of their own requests the figure counted (`Peer.update`).
        self.load_at = time.time()
        self.writes = 0
        self.exit_code = 0
        self._failed_starts = 0
        self._pending_restart: AdminState | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._register_backoff = Backoff(base=0.2, cap=2.0)
        self._registry_outage = Outage(log, f"registry {self.registry.url}", "registering when it answers")
        self._signals = 0

    # -- the record ---------------------------------------------------------

    @property
    def state(self) -> State:
        if self.draining or self.retiring:
            return State.DRAINING
        if self.desired is Desired.OFFLINE:
            return State.OFFLINE
        if not self.healthy:
            return State.UNHEALTHY
        return State.UP

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
                prefix_cache_hit_rate=self.prefix_cache_hit_rate,
                updated_at=self.load_at,
                reported=self.load_reported,
            ),
        )

    async def _register(self) -> None:
        try:
            self.lease = await self.registry.register(
                self.record(), self.config.ttl, exclusive=True, check=self.config.probe_interval
            )
        except RegistryUnavailable as exc:
            delay = self._register_backoff.next_delay()
            self._registry_outage.failed(exc.reason)
            asyncio.get_running_loop().call_later(delay, self._events.put_nowait, RetryRegister())
            return
        except AlreadyRegistered:
            self._refuse(await self.registry.get(self.config.model, self.instance_id))
            return
        self._registry_outage.recovered()
        self._register_backoff.reset()
        self.writes += 1
        self._keepalive = asyncio.create_task(self.lease.keepalive())
        self._keepalive.add_done_callback(self._keepalive_ended)
        log.info(
            "registered %s: model %s at %s (%s, weight %g, ttl %gs), %s",
            self.instance_id, self.config.model, self.endpoint, self.backend, self.config.weight, self.config.ttl,
            self.state,
        )  # fmt: skip

    def _keepalive_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and isinstance(task.exception(), AlreadyRegistered):
            self._events.put_nowait(LeaseTaken())

    def _refuse(self, holder: Instance | None) -> None:
        """Another live sidecar holds this id: say so, and stop."""
        seen = f", alive {time.time() - holder.alive_at:.0f}s ago" if holder and holder.alive_at else ""
        where = f" for {holder.endpoint} ({holder.backend}){seen}" if holder else ""
        log.error(
            "instance id %s is already registered by another live sidecar%s; refusing to register it again. "
            "Stop that sidecar, or give this one its own --id.",
            self.instance_id, where,
        )  # fmt: skip
        self.exit_code = 1
        self._events.put_nowait(Terminate())

    async def _write(self) -> None:
        """Bring the registry in line: register once the server has been healthy, else rewrite the record."""
        if self.lease is None:
            if self.healthy or self.draining:
                await self._register()
            return
        try:
            await self.lease.update(self.record())
            self.writes += 1
        except RegistryUnavailable as exc:
            log.warning("could not update the record (%s); the next change retries", exc.reason)
        except AlreadyRegistered:
            self._events.put_nowait(LeaseTaken())

    async def _deregister(self) -> None:
        lease, self.lease = self.lease, None
        if lease is None:
            return
        if self._keepalive is not None:
            self._keepalive.cancel()
        try:
            await lease.revoke()
            self.writes += 1
        except RegistryUnavailable as exc:
            log.warning("could not delete the record now (%s); it expires with its lease", exc.reason)
        log.info("deregistered %s", self.instance_id)

    async def _drain(self, why: str) -> None:
        """Mark the record draining and wait until the server has no work left (or the drain timeout)."""
        if self.lease is None:
            return
        self.draining = True
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
        self.draining = False
        log.info("drained %s (%s) after %.1fs", self.instance_id, why, time.monotonic() - started)

    # -- identity -------------------------------------------------------------

    async def _identity_is_free(self) -> bool:
        """Wait for a leftover record of this id to expire; False when a live holder keeps it alive.

        A sidecar that crashed leaves its record until its lease expires; a
        live one rewrites it (`alive_at`) at least once per TTL.
        """
        try:
            first = await self.registry.get(self.config.model, self.instance_id)
        except RegistryUnavailable:
            return True  # cannot tell now; the exclusive registration still refuses a live holder
        if first is None:
            return True
        log.info("a record of %s is still registered; waiting for it to expire", self.instance_id)
        deadline = time.monotonic() + self.config.ttl * 3 + EXPIRY_SLACK
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            try:
                current = await self.registry.get(self.config.model, self.instance_id)
            except RegistryUnavailable:
                return True
            if current is None:
                return True
            if current.alive_at != first.alive_at:
                self._refuse(current)
                return False
        self._refuse(first)
        return False

    # -- reporters ----------------------------------------------------------

    async def _check(self) -> HealthCheck:
        check = await self.probe.health()
        if check.ok and self.child is not None and self.child.serves(self.upstream_port) is False:
            return HealthCheck(False, f"the server on port {self.upstream_port} is not this sidecar's child")
        return check

    async def _probe_loop(self) -> None:
        failures = 0
        last_detail = ""
        while True:
            check = await self._check()
            if check.detail != last_detail and not (check.ok and self.healthy):
                log.info("upstream %s: %s", "healthy" if check.ok else "not healthy", check.detail)
            last_detail = check.detail
            if check.ok:
                failures = 0
                if not self.healthy:
                    await self._events.put(HealthChanged(check))
            else:
                failures += 1
                if self.healthy and failures >= 2:
                    await self._events.put(HealthChanged(check))
            await asyncio.sleep(self.config.probe_interval)

    async def _load_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.load_interval)
            if self.lease is None or not self.probe.publishes_load:
                continue
            sample = await self.probe.load()
            reported = sample is not None
            if sample is not None and (sample != self.load or not self.load_reported):
                rate = sample.hit_rate_since(self.load)
                if rate is not None:  # else the last rate stands: no prompt was looked up since
                    self.prefix_cache_hit_rate = rate
                self.load, self.load_at, self.load_reported = sample, time.time(), True
                await self._write()
            elif not reported and self.load_reported:
                self.load_reported = False
                await self._write()

    async def _admin_loop(self) -> None:
        first = True
        async for event in self.registry.watch_admin(self.instance_id):
            for state in event.values:
                if state.acked_at is None:
                    await self._events.put(AdminRequested(state))
                elif first:
                    self.desired = standing_desire(state)
                    log.info("%s stays %s, as an operator asked earlier", self.instance_id, self.desired)
                    await self._events.put(RetryRegister())
            first = False

    async def _child_exited(self, code: int, uptime: float) -> None:
        await self._events.put(ChildExited(code, uptime))

    # -- the controller -----------------------------------------------------

    async def _handle(self, event: Event) -> None:
        if isinstance(event, HealthChanged):
            await self._health_changed(event)
        elif isinstance(event, ChildExited):
            await self._child_failed(event)
        elif isinstance(event, AdminRequested):
            await self._obey(event.state)
        elif isinstance(event, RetryRegister):
            await self._write()
        elif isinstance(event, LeaseTaken):
            self.lease = None
            self._refuse(await self.registry.get(self.config.model, self.instance_id))
        elif isinstance(event, Retire) and not self.retiring:
            await self._drain("the host is stopping it")
            self.retiring = True
            await self._write()
            self.retired.set()

    def retire(self) -> None:
        """Ask for a `Retire` (from the status server's /drain); wait for `retired`."""
        self._events.put_nowait(Retire())

    @property
    def ready(self) -> bool:
        """Registered and taking requests: what an orchestrator's readiness probe asks."""
        return self.lease is not None and self.state is State.UP

    async def _health_changed(self, event: HealthChanged) -> None:
        if event.check.ok == self.healthy:
            return
        self.healthy = event.check.ok
        if self.healthy:
            self._failed_starts = 0
            if self.config.upstream_type is UpstreamType.SMMF:
                backend, reported = await self.probe.describe()
                self.backend, self.kind = backend, self.config.kind or reported or self.kind
        log.info("upstream %s is %s: %s is %s", self.config.upstream, "healthy" if self.healthy else "unhealthy",
                 self.instance_id, self.state)  # fmt: skip
        await self._write()
        if self.healthy and self._pending_restart is not None:
            await self._ack(self._pending_restart)
            self._pending_restart = None

    async def _child_failed(self, event: ChildExited) -> None:
        self.healthy = False
        self._failed_starts += 1
        log.info("%s is %s: its server exited with %d", self.instance_id, self.state, event.code)
        await self._write()
        if self._failed_starts == CRASH_LOOP:
            log.error(
                "the server is crash-looping: it exited %d times in a row without becoming healthy (last exit %d)",
                self._failed_starts, event.code,
            )  # fmt: skip
        limit = self.config.max_failed_starts
        if limit and self._failed_starts >= limit:
            log.error("giving up after %d failed starts of the server (--max-failed-starts)", self._failed_starts)
            self.exit_code = 1
            await self._events.put(Terminate())

    async def _obey(self, state: AdminState) -> None:
        by = f" by {state.requested_by}" if state.requested_by else ""
        log.info("admin %s requested for %s%s", state.action, self.instance_id, by)
        if state.action in (AdminAction.OFFLINE, AdminAction.ONLINE):
            self.desired = standing_desire(state)
            await self._write()
        elif state.action is AdminAction.DRAIN:
            await self._drain("admin drain")
            self.desired = Desired.OFFLINE
            await self._write()
        elif state.action is AdminAction.RESTART:
            await self._drain("admin restart")
            self.desired = Desired.ONLINE
            if self.child is not None:
                self.healthy = False
                await self._write()
                await self.child.restart()
                self._pending_restart = state  # confirmed once the server is healthy again
                return
            await self._write()
        log.info("%s is %s", self.instance_id, self.state)
        await self._ack(state)

    async def _ack(self, state: AdminState) -> None:
        try:
            await self.registry.ack_admin(self.instance_id, state)
        except RegistryUnavailable as exc:
            log.warning("could not confirm admin %s (%s)", state.action, exc.reason)

    def _on_signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("signal received: draining, deregistering and stopping (again to exit at once)")
            self._events.put_nowait(Terminate())
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
        reporters: list[asyncio.Task[None]] = []
        status = StatusServer(self, *self.config.status_address) if self.config.status_address else None
        try:
            if status is not None:
                await status.start()
            if not await self._identity_is_free():
                return self.exit_code
            if self.child is not None:
                await self.child.start()
            reporters = [asyncio.create_task(job()) for job in (self._probe_loop, self._load_loop, self._admin_loop)]
            while not isinstance(event := await self._events.get(), Terminate):
                await self._handle(event)
            await self._drain("shutting down")
            await self._deregister()
        finally:
            for task in reporters:  # stopped before the registry closes under the admin watch
                await cancel_and_wait(task)
            if self.child is not None:
                await self.child.stop()
            if status is not None:
                await status.close()
            await self.probe.close()
            await self.registry.close()
        log.info("sidecar stopped")
        return self.exit_code
