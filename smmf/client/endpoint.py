"""What one client knows locally about one instance: its record, its in-flight count, its latency, its failures.

Kept apart from discovery (`cache.py`, which only says what exists) and from
balancing (`balancers.py`, which only picks): this is the shared state both
read.  An endpoint survives record updates (load changes, draining), so
local counters are not reset by the sidecar's writes.
"""

from __future__ import annotations

import math
import time

from ..instance import Instance

#: Consecutive failures that eject an instance.
EJECT_AFTER = 3
#: First ejection length; doubles with each repeated ejection, up to the cap.
EJECT_BASE = 2.0
EJECT_CAP = 60.0
#: Decay time of the latency EWMA.
EWMA_TAU = 10.0


class Ticket:
    """One request's claim on an endpoint; ending it twice is harmless, so in-flight never goes negative."""

    __slots__ = ("_done", "endpoint", "started")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.started = time.monotonic()
        self._done = False
        endpoint.inflight += 1

    def end(self, ok: bool, latency: float | None = None) -> None:
        if self._done:
            return
        self._done = True
        self.endpoint.inflight -= 1
        if ok:
            self.endpoint.succeeded(time.monotonic() - self.started if latency is None else latency)
        else:
            self.endpoint.failed()


class Endpoint:
    def __init__(self, record: Instance) -> None:
        self.record = record
        self.inflight = 0
        self.ewma = 0.0
        self._ewma_at = time.monotonic()
        self.consecutive_failures = 0
        self.ejections = 0
        self.ejected_until = 0.0
        self.cooling_until = 0.0
        #: Set by the cache: may this endpoint be ejected without leaving its model with none?
        self.can_eject = lambda: True

    @property
    def id(self) -> str:
        return self.record.id

    def begin(self) -> Ticket:
        return Ticket(self)

    def available(self, now: float) -> bool:
        """Up, not ejected and not cooling down after a `Retry-After`."""
        return self.record.eligible and now >= self.ejected_until and now >= self.cooling_until

    @property
    def load(self) -> float:
        """Local in-flight plus the load the instance last published, per unit of weight."""
        published = self.record.load.inflight + self.record.load.queued
        return (self.inflight + published) / self.record.weight

    @property
    def cost(self) -> float:
        """Peak-EWMA cost: expected latency times the work already waiting here."""
        return max(self.ewma, 1e-6) * (self.inflight + 1) / self.record.weight

    def succeeded(self, latency: float) -> None:
        now = time.monotonic()
        self.consecutive_failures = 0
        if self.ejections and now > self.ejected_until:
            self.ejections -= 1  # each success after an ejection forgives one, so only repeated ejections grow
        if latency > self.ewma:  # peak-sensitive: a slow response counts at once, recovery decays
            self.ewma = latency
        else:
            weight = math.exp(-(now - self._ewma_at) / EWMA_TAU)
            self.ewma = self.ewma * weight + latency * (1 - weight)
        self._ewma_at = now

    def failed(self) -> None:
        self.consecutive_failures += 1
        if self.consecutive_failures >= EJECT_AFTER and self.can_eject():
            self.ejections += 1
            self.ejected_until = time.monotonic() + min(EJECT_CAP, EJECT_BASE * 2 ** (self.ejections - 1))
            self.consecutive_failures = 0

    def cool(self, seconds: float) -> None:
        self.cooling_until = max(self.cooling_until, time.monotonic() + seconds)
