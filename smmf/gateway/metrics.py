"""What this gateway saw of each instance: Prometheus metrics for scrapers, and a recent window for the dashboard.

Both are this replica's own view (every replica has one); nothing here is
shared or written to the registry.  Ejections are the client's own count
(`Peer.times_ejected`), read when scraped rather than copied.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ..client.peer import Peer

__all__ = ["CONTENT_TYPE", "WINDOW", "GatewayMetrics", "InstanceStats", "RecentCalls"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Seconds of calls the dashboard's per-instance rate, percentiles and error rate are over.
WINDOW = 60.0
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass(frozen=True, slots=True)
class InstanceStats:
    """One instance's calls through this gateway over the last `WINDOW` seconds."""

    rate: float
    p50_ms: float | None
    p99_ms: float | None
    error_rate: float | None


class RecentCalls:
    """(when, seconds, ok) of one instance's recent calls; old ones fall out as new ones come or stats are read."""

    def __init__(self) -> None:
        self._calls: deque[tuple[float, float, bool]] = deque()

    def add(self, seconds: float, ok: bool) -> None:
        now = time.monotonic()
        self._calls.append((now, seconds, ok))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._calls and self._calls[0][0] < now - WINDOW:
            self._calls.popleft()

    def stats(self) -> InstanceStats:
        now = time.monotonic()
        self._trim(now)
        calls = list(self._calls)
        if not calls:
            return InstanceStats(0.0, None, None, None)
        latencies = sorted(seconds for _, seconds, ok in calls if ok)
        failed = sum(not ok for _, _, ok in calls)

        def percentile(q: float) -> float | None:
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1) if latencies else None

        return InstanceStats(len(calls) / WINDOW, percentile(0.5), percentile(0.99), failed / len(calls))


class _Ejections(Collector):
    def __init__(self, peers: Callable[[], list[Peer]]) -> None:
        self.peers = peers

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "smmf_gateway_ejections", "Times this gateway ejected an instance after failures",
            labels=["model", "instance"],
        )  # fmt: skip
        for peer in self.peers():
            family.add_metric([peer.record.model, peer.id], peer.times_ejected)
        yield family


class GatewayMetrics:
    def __init__(self, peers: Callable[[], list[Peer]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["model", "instance"]
        self.requests = Counter(
            "smmf_gateway_requests", "Calls answered, by model, instance, route and status",
            [*labels, "route", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "smmf_gateway_request_duration_seconds", "Time to the last byte of an answer", labels,
            buckets=_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.ttft = Histogram(
            "smmf_gateway_time_to_first_token_seconds", "Time to a stream's first piece", labels,
            buckets=_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.retries = Counter(
            "smmf_gateway_retries", "Attempts sent to another instance after a retryable failure", ["model"],
            registry=self.registry,
        )  # fmt: skip
        self.registry.register(_Ejections(peers))
        self._recent: dict[str, RecentCalls] = {}

    def observe(self, model: str, instance: str, route: str, status: int, seconds: float) -> None:
        """One call's outcome (`instance` is "-" when none answered)."""
        self.requests.labels(model, instance, route, str(status)).inc()
        if status < 400:
            self.latency.labels(model, instance).observe(seconds)
        if instance != "-":
            self._recent.setdefault(instance, RecentCalls()).add(seconds, status < 400)

    def recent(self, instance: str) -> InstanceStats:
        calls = self._recent.get(instance)
        return calls.stats() if calls is not None else InstanceStats(0.0, None, None, None)

    def forget(self, keep: set[str]) -> None:
        """Drop the windows of instances no longer known, so a churning fleet does not grow this forever."""
        for instance in set(self._recent) - keep:
            del self._recent[instance]

    def render(self) -> bytes:
        return generate_latest(self.registry)
