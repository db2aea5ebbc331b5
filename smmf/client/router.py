"""The request path's decisions: which instance, and whether to try another after a failure.

`Router.run` takes a `send(endpoint, ticket)` coroutine from a front end (the
OpenAI-style API or the httpx transport) and owns the rest:

* candidates are the model's instances that are up, not ejected, not cooling
  down after a `Retry-After`, and not already tried by this request;
* a failure before any response byte (`Retryable`) is retried on a different
  instance, up to `max_retries` times and within a budget of about 20% extra
  load;
* every attempt holds a `Ticket`, so the instance's in-flight count rises at
  send and falls exactly once when the response ends, fails or is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .balancers import Balancer, make
from .cache import InstanceCache
from .endpoint import Endpoint, Ticket
from .errors import APIError, NoInstanceAvailable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Longest `Retry-After` the client waits itself when no other instance is left.
MAX_RETRY_WAIT = 10.0


class Retryable(Exception):
    """A failure before any byte of the response: safe to send elsewhere."""

    def __init__(self, error: APIError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


class RetryBudget:
    """Retries may add about `ratio` extra load: each request earns `ratio` of a retry, each retry spends one.

    A small reserve lets a quiet client still retry its first failures.
    """

    def __init__(self, ratio: float = 0.2, reserve: float = 10.0) -> None:
        self.ratio = ratio
        self.cap = reserve
        self.balance = reserve

    def deposit(self) -> None:
        self.balance = min(self.cap, self.balance + self.ratio)

    def withdraw(self) -> bool:
        if self.balance >= 1.0:
            self.balance -= 1.0
            return True
        return False


class Router:
    def __init__(self, cache: InstanceCache, policy: str = "least_loaded", max_retries: int = 2) -> None:
        self.cache = cache
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

    def candidates(self, model: str, exclude: set[str]) -> list[Endpoint]:
        endpoints = self.cache.endpoints(model)
        now = time.monotonic()
        ready = [ep for ep in endpoints if ep.available(now) and ep.id not in exclude]
        if ready:
            return ready
        # never refuse a request because of ejection alone: the last ones stay eligible
        return [ep for ep in endpoints if ep.record.eligible and ep.id not in exclude]

    def choose(self, model: str, policy: str | None, key: str | None, exclude: set[str]) -> Endpoint:
        candidates = self.candidates(model, exclude)
        if not candidates:
            raise NoInstanceAvailable(model, self.cache.known_models())
        return self.balancer(model, policy or self.policy).pick(candidates, key)

    async def run(
        self,
        model: str,
        send: Callable[[Endpoint, Ticket], Awaitable[T]],
        *,
        policy: str | None = None,
        key: str | None = None,
        on_retry: Callable[[int], None] | None = None,
    ) -> T:
        """Send to a chosen instance, retrying elsewhere on `Retryable`; `send` ends the ticket on success."""
        tried: set[str] = set()
        last: Retryable | None = None
        self.budget.deposit()
        attempt = 0
        while True:
            try:
                endpoint = self.choose(model, policy, key, tried)
            except NoInstanceAvailable:
                if last is None:
                    raise
                raise last.error from None
            ticket = endpoint.begin()
            try:
                return await send(endpoint, ticket)
            except Retryable as failure:
                ticket.end(ok=False)
                last = failure
                tried.add(endpoint.id)
                if failure.retry_after:
                    endpoint.cool(failure.retry_after)
                if attempt >= self.max_retries or not self.budget.withdraw():
                    raise failure.error from None
                attempt += 1
                if on_retry is not None:
                    on_retry(attempt)
                log.info("retrying %s on another instance after %s: %s", model, endpoint.id, failure.error.message)
                if not self.candidates(model, tried) and failure.retry_after and failure.retry_after <= MAX_RETRY_WAIT:
                    await asyncio.sleep(failure.retry_after)
                    tried.clear()
            except BaseException:
                ticket.end(ok=False)
                raise
