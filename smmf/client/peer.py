"""What one client knows locally about one instance (a peer): its record, in-flight count, latency, failures,
and the load it last reported on a response.

Kept apart from discovery (`cache.py`, which only says what exists) and from
balancing (`balancers.py`, which only picks): this is the shared state both
read.  A peer survives record updates (load changes, draining), so local
counters are not reset by the sidecar's writes.
"""

from __future__ import annotations

import math
import time
from collections import deque

from ..instance import Instance

__all__ = ["Peer", "Ticket"]

#: Consecutive failures that eject an instance.
EJECT_AFTER = 3
#: First ejection length; doubles with each repeated ejection, up to the cap.
EJECT_BASE = 2.0
EJECT_CAP = 60.0
#: Decay time of the latency EWMAs.
EWMA_TAU = 10.0
#: Time constant of the usual load of others on an instance (`Peer.usual`), in seconds of reports.
USUAL_TAU = 10.0
#: The most one figure moves it: one burst heard after a long silence is not what is usual.
USUAL_STEP = 0.2
#: Changes of the local in-flight count remembered, to tell which of a published load were this client's.
HISTORY = 256


class Ticket:
    """One attempt's claim on a peer: in-flight there from `Peer.begin()` until `end()`.

    Ending it twice is harmless, so in-flight never goes negative; see
    `router.py` for who ends it.
    """

    __slots__ = ("_done", "peer", "started")

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.started = time.monotonic()
        self._done = False
        peer.count(+1)

    def end(self, ok: bool, latency: float | None = None) -> None:
        """Release the claim; `ok` tells the peer's failure count and latency what happened."""
        if self._done:
            return
        self._done = True
        self.peer.count(-1)
        if ok:
            self.peer.succeeded(time.monotonic() - self.started if latency is None else latency)
        else:
            self.peer.failed()


class Peer:
    def __init__(self, record: Instance) -> None:
        self.record = record
        self.inflight = 0
        #: How many of this client's requests the record's load figure counted.
        self.own_in_published = 0
        #: (others' in-flight and queued requests, wall-clock time) from the last load report on a response.
        self.reported: tuple[int, float] | None = None
        #: The load others usually put here (a time-weighted mean of what reports and records said), and as of when.
        self.usual = 0.0
        self._usual_at: float | None = None
        #: (when, in-flight before) of recent changes of `inflight`.
        self._changes: deque[tuple[float, int]] = deque(maxlen=HISTORY)
        #: Peak-sensitive latency EWMA, for `peak_ewma`: one slow answer is noticed at once.
        self.ewma = 0.0
        #: Plain latency EWMA, for telling a slow machine from a fast one that was briefly busy.
        self.mean_latency = 0.0
        self._ewma_at = time.monotonic()
        self.consecutive_failures = 0
        self.ejections = 0
        #: Every ejection so far (`ejections` is forgiven by successes; this is what a metric counts).
        self.times_ejected = 0
        self.ejected_until = 0.0
        self.cooling_until = 0.0
        #: Set by the cache: may this peer be ejected without leaving its model with none?
        self.can_eject = lambda: True

    @property
    def id(self) -> str:
        return self.record.id

    def begin(self) -> Ticket:
        return Ticket(self)

    def available(self, now: float) -> bool:
        """Up, not ejected and not cooling down after a `Retry-After`."""
        return self.record.eligible and now >= self.ejected_until and now >= self.cooling_until

    def count(self, change: int) -> None:
        """Change this client's in-flight count here, remembering when (see `inflight_at`)."""
        self._changes.append((time.time(), self.inflight))
        self.inflight += change

    def inflight_at(self, when: float) -> int:
        """This client's in-flight count here at wall-clock time `when` (now, for a time after the last change).

        As far back as the history reaches; before that, the oldest count it holds.
        """
        value = self.inflight
        for at, before in reversed(self._changes):
            if at <= when:
                break
            value = before
        return value

    def update(self, record: Instance) -> None:
        """A newer record of this instance: local counters carry over, and its published load is placed in time.

        A load the instance publishes already counts this client's requests
        that were in flight there when it was measured (`load.updated_at`).
        How many that was is looked up in this peer's history and left
        out of `load`.  The lookup trusts the clocks of the two hosts to
        agree to well within a request's duration (NTP does); a figure
        stamped later than this host's now counts what is in flight now.
        """
        changed = record.load != self.record.load
        if changed:
            self.own_in_published = self.inflight_at(record.load.updated_at)
        self.record = record
        if changed:
            self._observe(self.published_others, record.load.updated_at)

    def report(self, inflight: int, queued: int, at: float | None = None) -> None:
        """A load report that came on a response: the instance's work at `at` (now), less the request it answers.

        This client's own requests there are in it: those still in flight
        here, less the one being answered, whose ticket is still open.  They
        are taken out, as from a published load, so only others' work remains.
        """
        others = max(0, inflight + queued - max(0, self.inflight - 1))
        self.reported = (others, time.time() if at is None else at)
        self._observe(others, self.reported[1])

    def _observe(self, others: int, at: float) -> None:
        """Fold one figure of others' load, counted at wall-clock time `at`, into `usual`; older figures are ignored."""
        if self._usual_at is None:
            self.usual = float(others)
        elif at > self._usual_at:
            share = min(USUAL_STEP, 1 - math.exp(-(at - self._usual_at) / USUAL_TAU))
            self.usual += (others - self.usual) * share
        else:
            return
        self._usual_at = at

    @property
    def load(self) -> float:
        """Local in-flight plus the load others put on the instance, per unit of weight.

        Others' load is the freshest figure this client has: the last report
        on a response, or the load the sidecar published when that is newer,
        aged since it was counted (`aged`).  Counting a figure whole would
        count this client's own requests twice, once as they are now and once
        as they were when it was measured: with short requests that stale
        copy is noise larger than the difference between two instances.
        """
        return (self.inflight + self.aged(*self.heard)) / self.record.weight

    @property
    def heard(self) -> tuple[int, float]:
        """The freshest figure of others' load this client has, and the wall-clock time it was counted."""
        reported = self.reported
        if reported is not None and reported[1] >= self.record.load.updated_at:
            return reported
        return self.published_others, self.record.load.updated_at

    @property
    def published_others(self) -> int:
        """Others' load on the instance as its record last published it."""
        return max(0, self.record.load.inflight + self.record.load.queued - self.own_in_published)

    def aged(self, others: float, at: float) -> float:
        """Others' load counted at wall-clock time `at`, moved since toward the load others usually put here.

        With many callers each one hears from an instance far less often
        than the instance's queue turns over, so a figure read a few
        requests ago says little of now.  Above the usual load (`usual`)
        the instance has finished work since; below it, others have sent
        more.  Either way the figure moves toward `usual` at the
        instance's pace, taken as `weight` requests per mean latency seen
        here (an underestimate, since the latency includes queueing), and
        stops there.  Until that latency is known the figure is taken whole.

        It stops at `usual` because a pace learnt from this client's own
        requests says nothing of others' longer ones: moved to nothing,
        six long generations there looked gone a few short requests after
        each report, and `least_loaded` sent a third of its requests into
        them.  It moves up as well as down because sixteen callers hear one
        published figure at once: an instance it caught empty stayed empty
        for all of them until the next, and all of them sent there.  In
        the many-callers model that was about half of `least_loaded`'s gap
        to the oracle (`bench/README.md`).
        """
        if self.mean_latency <= 0:
            return float(others)
        step = max(0.0, time.time() - at) * self.record.weight / self.mean_latency
        if others > self.usual:
            return max(self.usual, others - step)
        return min(self.usual, others + step)

    @property
    def wait(self) -> float:
        """How long a request sent here now should take: the work ahead of it, and itself, at the mean latency."""
        return self.wait_behind(self.aged(*self.heard))

    def wait_behind(self, others: float) -> float:
        """`wait` with `others` requests of other clients here, so another figure of them is priced the same way."""
        return (self.inflight + others + 1) / self.record.weight * self.mean_latency

    @property
    def cost(self) -> float:
        """Peak-EWMA cost: expected latency times the work already waiting here."""
        return max(self.ewma, 1e-6) * (self.inflight + 1) / self.record.weight

    def succeeded(self, latency: float) -> None:
        now = time.monotonic()
        self.consecutive_failures = 0
        if self.ejections and now > self.ejected_until:
            self.ejections -= 1  # each success after an ejection forgives one, so only repeated ejections grow
        weight = math.exp(-(now - self._ewma_at) / EWMA_TAU)
        # peak-sensitive: a slow response counts at once, recovery decays
        self.ewma = latency if latency > self.ewma else self.ewma * weight + latency * (1 - weight)
        self.mean_latency = self.mean_latency * weight + latency * (1 - weight) if self.mean_latency else latency
        self._ewma_at = now

    def failed(self) -> None:
        self.consecutive_failures += 1
        if self.consecutive_failures >= EJECT_AFTER and self.can_eject():
            self.ejections += 1
            self.times_ejected += 1
            self.ejected_until = time.monotonic() + min(EJECT_CAP, EJECT_BASE * 2 ** (self.ejections - 1))
            self.consecutive_failures = 0

    def cool(self, seconds: float) -> None:
        self.cooling_until = max(self.cooling_until, time.monotonic() + seconds)
