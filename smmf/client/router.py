"""The request path's decisions: which instance, and whether to try another after a failure.

`Router.send` takes a `Request` from a front end (`ModelClient` or the SDK
transport) and owns the rest:

* candidates are the model's instances that are up, not ejected, not cooling
  down after a `Retry-After`, and not already tried by this request;
* the balancer of the request's policy picks one;
* a failure before any response byte (`Retryable`) is retried on a different
  instance, up to `max_retries` times per request, within a budget of 10
  retries a second plus 20% of the requests (`RetryBudget`);
* every attempt holds a `Ticket`, so the instance's in-flight count rises at
  send and falls exactly once: here when the attempt fails, and in the
  `Response` (which takes the ticket over) when a whole answer arrives or a
  stream ends or is closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from ..errors import NoInstanceAvailable
from .balancers import Balancer, make
from .cache import InstanceCache
from .peer import Peer
from .request import Request
from .transport import Response, Retryable, Transport

__all__ = ["MAX_RETRY_WAIT", "Observer", "RetryBudget", "Router"]

log = logging.getLogger(__name__)

#: Longest `Retry-After` the client waits itself when no other instance is left.
MAX_RETRY_WAIT = 10.0


class RetryBudget:
    """In any `window` seconds, retries may number `floor` per second plus `ratio` of the requests sent.

    After Finagle's RetryBudget.  A budget in proportion to traffic keeps a
    client from multiplying load on a fleet that is failing as a whole; the
    floor lets one crash be absorbed whole: an instance killed with a deep
    queue fails every request in it at once, and each deserves its retry on
    a healthy instance.  A fixed reserve (10 retries, earlier) ran out
    there while healthy instances stood idle.  Counts are kept in one-second
    slots, so old traffic and old retries age out.
    """

    def __init__(self, ratio: float = 0.2, floor: float = 10.0, window: int = 10) -> None:
        self.ratio = ratio
        self.floor = floor
        self.window = window
        #: Per second slot: [second, requests, retries].
        self._slots: list[list[int]] = [[-1, 0, 0] for _ in range(window)]

    def _slot(self) -> list[int]:
        second = int(time.monotonic())
        slot = self._slots[second % self.window]
        if slot[0] != second:
            slot[:] = [second, 0, 0]
        return slot

    @property
    def balance(self) -> float:
        """Retries still allowed now."""
        oldest = int(time.monotonic()) - self.window
        live = [slot for slot in self._slots if slot[0] > oldest]
        earned = self.ratio * sum(slot[1] for slot in live)
        return self.floor * self.window + earned - sum(slot[2] for slot in live)

    def deposit(self) -> None:
        """A request was sent."""
        self._slot()[1] += 1

    def withdraw(self) -> bool:
        """Take one retry from the budget; False when none is left."""
        if self.balance >= 1.0:
            self._slot()[2] += 1
            return True
        return False


class Observer(Protocol):
    """What the router tells about a call as it goes (telemetry's `Call` is one)."""

    def instance(self, peer: Peer) -> None:
        """An attempt goes to `peer`."""

    def retry(self, attempt: int) -> None:
        """Attempt number `attempt` (1 for the first retry) is about to start."""


class Router:
    def __init__(
        self, cache: InstanceCache, transport: Transport, policy: str = "least_loaded", max_retries: int = 2
    ) -> None:
        self.cache = cache
        self.transport = transport
        self.policy = policy
        self.max_retries = max_retries
        self.budget = RetryBudget()
        self._balancers: dict[tuple[str, str], Balancer] = {}
        make(policy)  # reject an unknown default policy at construction

    def balancer(self, model: str, policy: str) -> Balancer:
        key = (model, policy)
        if key not in self._balancers:
            self._balancers[key] = make(policy)
        return self._balancers[key]

    def candidates(self, model: str, exclude: set[str]) -> list[Peer]:
        peers = self.cache.peers(model)
        now = time.monotonic()
        ready = [peer for peer in peers if peer.available(now) and peer.id not in exclude]
        if ready:
            return ready
        # never refuse a request because of ejection alone: the last ones stay eligible
        return [peer for peer in peers if peer.record.eligible and peer.id not in exclude]

    def choose(self, request: Request, exclude: set[str], balancer: Balancer) -> Peer:
        candidates = self.candidates(request.model, exclude)
        if not candidates:
            raise NoInstanceAvailable(request.model, self.cache.known_models())
        return balancer.pick(candidates, request)

    async def send(self, request: Request, observer: Observer | None = None) -> Response:
        """The first successful answer, from a chosen instance and, after retryable failures, from others."""
        # First, so that an unknown policy is the caller's error whatever the registry holds.
        balancer = self.balancer(request.model, request.policy or self.policy)
        tried: set[str] = set()
        last: Retryable | None = None
        self.budget.deposit()
        attempt = 0
        while True:
            try:
                peer = self.choose(request, tried, balancer)
            except NoInstanceAvailable:
                if last is not None:
                    raise last.error from None
                if not await self.cache.first_snapshot():
                    raise
                peer = self.choose(request, tried, balancer)
            if observer is not None:
                observer.instance(peer)
            ticket = peer.begin()
            try:
                response = await self.transport.send(peer, request)
            except BaseException as exc:
                ticket.end(ok=False)
                if not isinstance(exc, Retryable):
                    raise
                last = exc
            else:
                return response.hold(ticket)
            tried.add(peer.id)
            if last.retry_after:
                peer.cool(last.retry_after)
            if attempt >= self.max_retries or not self.budget.withdraw():
                raise last.error from None
            attempt += 1
            if observer is not None:
                observer.retry(attempt)
            log.info("retrying %s on another instance after %s: %s", request.model, peer.id, last.error.message)
            if not self.candidates(request.model, tried) and last.retry_after and last.retry_after <= MAX_RETRY_WAIT:
                await asyncio.sleep(last.retry_after)
                tried.clear()
