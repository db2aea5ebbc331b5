"""Prometheus metrics of one worker, in their own registry so several workers can share a process.

The sidecar reads `smmf_requests_inflight` and `smmf_requests_queued` to
publish load, and the prefix-cache counters (named after vLLM's
`vllm:prefix_cache_queries` and `vllm:prefix_cache_hits`, in tokens) to
publish a hit rate; the rest is for dashboards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .admission import Admission

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

CONTENT_TYPE = CONTENT_TYPE_LATEST


PREFIX_CACHE_QUERIES = "smmf_prefix_cache_queries"
PREFIX_CACHE_HITS = "smmf_prefix_cache_hits"


class _PrefixCacheCounters(Collector):
    """The engine's own running counts, exposed as counters when it has a prefix cache."""

    def __init__(self, counts: Callable[[], tuple[int, int] | None]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self.counts()
        if counts is None:
            return
        queries, hits = counts
        yield CounterMetricFamily(PREFIX_CACHE_QUERIES, "Prompt tokens looked up in the prefix cache", value=queries)
        yield CounterMetricFamily(PREFIX_CACHE_HITS, "Prompt tokens found in the prefix cache", value=hits)


class WorkerMetrics:
    def __init__(
        self,
        model: str,
        backend: str,
        admission: Admission,
        prefix_cache: Callable[[], tuple[int, int] | None] = lambda: None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"model": model, "backend": backend}
        inflight = Gauge("smmf_requests_inflight", "Generations running now", list(labels), registry=self.registry)
        inflight.labels(**labels).set_function(lambda: admission.inflight)
        queued = Gauge("smmf_requests_queued", "Requests waiting for a slot", list(labels), registry=self.registry)
        queued.labels(**labels).set_function(lambda: admission.queued)
        capacity = Gauge("smmf_max_concurrency", "Generation slots", list(labels), registry=self.registry)
        capacity.labels(**labels).set(admission.max_concurrency)
        self.requests = Counter(
            "smmf_requests", "Requests answered, by endpoint and status", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "smmf_request_duration_seconds", "Time to the last byte", ["endpoint"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.ttft = Histogram(
            "smmf_time_to_first_token_seconds", "Time to the first generated token", ["endpoint"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.registry.register(_PrefixCacheCounters(prefix_cache))
        self.prompt_tokens = Counter("smmf_prompt_tokens", "Prompt tokens processed", registry=self.registry)
        self.completion_tokens = Counter(
            "smmf_completion_tokens", "Completion tokens generated", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
