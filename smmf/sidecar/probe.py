"""Probing the server a sidecar fronts (its upstream): is it healthy, how loaded is it, what does it serve.

Load comes from each server's own Prometheus metrics, so the sidecar needs
no code inside the server: an smmf worker, a plain `vllm serve` or a
`llama-server` are read the same way.  A generic OpenAI-compatible server
publishes no load; its record keeps zeros.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ..instance import Kind

__all__ = ["BACKEND", "HealthCheck", "LoadSample", "Probe", "UpstreamType", "parse_load"]


class UpstreamType(StrEnum):
    SMMF = "smmf"
    VLLM = "vllm"
    LLAMA_SERVER = "llama-server"
    OPENAI = "openai"


@dataclass(frozen=True)
class HealthCheck:
    """One probe's verdict, and in a few words why (logged when it changes)."""

    ok: bool
    detail: str


@dataclass(frozen=True)
class LoadSample:
    inflight: int
    queued: int
    kv_cache_usage: float | None = None
    #: The server's running counts of prompt tokens looked up in its prefix cache and found there.
    prefix_queries: float | None = None
    prefix_hits: float | None = None

    def hit_rate_since(self, earlier: LoadSample) -> float | None:
        """The share of prompt tokens found in the prefix cache between `earlier` and this; None if none were asked.

        An `earlier` without counts (the sidecar's first sample) counts from
        zero: the rate since the server started.
        """
        if self.prefix_queries is None or self.prefix_hits is None:
            return None
        queries = self.prefix_queries - (earlier.prefix_queries or 0.0)
        hits = self.prefix_hits - (earlier.prefix_hits or 0.0)
        if queries <= 0 or hits < 0:  # nothing asked, or the server restarted and its counters began again
            return None
        return min(1.0, hits / queries)


@dataclass(frozen=True)
class MetricNames:
    inflight: tuple[str, ...]
    queued: tuple[str, ...]
    kv_cache: tuple[str, ...] = ()
    prefix_queries: tuple[str, ...] = ()
    prefix_hits: tuple[str, ...] = ()


#: Per server type: the first name found of each tuple is used, summed over label sets.
METRICS: dict[UpstreamType, MetricNames] = {
    UpstreamType.SMMF: MetricNames(
        ("smmf_requests_inflight",),
        ("smmf_requests_queued",),
        prefix_queries=("smmf_prefix_cache_queries",),
        prefix_hits=("smmf_prefix_cache_hits",),
    ),
    UpstreamType.VLLM: MetricNames(
        ("vllm:num_requests_running",),
        ("vllm:num_requests_waiting",),
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),  # the second names are older vLLM's
        ("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries"),
        ("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits"),
    ),
    UpstreamType.LLAMA_SERVER: MetricNames(
        ("llamacpp:requests_processing",), ("llamacpp:requests_deferred",), ("llamacpp:kv_cache_usage_ratio",)
    ),
}

HEALTH_PATH = {
    UpstreamType.SMMF: "/health",
    UpstreamType.VLLM: "/health",
    UpstreamType.LLAMA_SERVER: "/health",
    UpstreamType.OPENAI: "/v1/models",
}

BACKEND = {
    UpstreamType.SMMF: "smmf",
    UpstreamType.VLLM: "vllm",
    UpstreamType.LLAMA_SERVER: "llama_cpp",
    UpstreamType.OPENAI: "external",
}


def _values(text: str) -> dict[str, float]:
    """Gauge and counter samples summed by name over their label sets (counters without `_total`).

    A counter's `_total` samples are not always filed under its family (the
    text parser makes them a family of their own), so the suffix is taken
    off the sample's name.
    """
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (family.name, family.name + "_total"):
                name = sample.name.removesuffix("_total")
                totals[name] = totals.get(name, 0.0) + sample.value
    return totals


def _first(values: dict[str, float], names: Iterable[str]) -> float | None:
    return next((values[n] for n in names if n in values), None)


def parse_load(text: str, kind: UpstreamType) -> LoadSample | None:
    """The load in a server's metrics text; None when the text has none of the expected metrics."""
    names = METRICS.get(kind)
    if names is None:
        return None
    values = _values(text)
    inflight = _first(values, names.inflight)
    queued = _first(values, names.queued)
    if inflight is None and queued is None:
        return None
    kv = _first(values, names.kv_cache)
    return LoadSample(
        int(inflight or 0),
        int(queued or 0),
        None if kv is None else min(1.0, max(0.0, kv)),
        _first(values, names.prefix_queries),
        _first(values, names.prefix_hits),
    )


class Probe:
    """HTTP access to the fronted server: health, load and (for smmf workers) what it serves."""

    def __init__(self, url: str, kind: UpstreamType, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.kind = kind
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def health(self) -> HealthCheck:
        url = self.url + HEALTH_PATH[self.kind]
        try:
            async with self._client().get(url) as reply:
                return HealthCheck(reply.status == 200, f"{url} answers {reply.status}")
        except TimeoutError:
            return HealthCheck(False, f"{url} timed out")
        except aiohttp.ClientConnectorError as exc:
            return HealthCheck(False, f"{url}: {exc.os_error.strerror or exc.os_error}")
        except aiohttp.ClientError as exc:
            return HealthCheck(False, f"{url}: {exc.__class__.__name__}")

    @property
    def publishes_load(self) -> bool:
        """Whether this kind of server has metrics to read load from."""
        return self.kind in METRICS

    async def load(self) -> LoadSample | None:
        if self.kind not in METRICS:
            return None
        try:
            async with self._client().get(self.url + "/metrics") as reply:
                if reply.status != 200:
                    return None
                return parse_load(await reply.text(), self.kind)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def describe(self) -> tuple[str, Kind | None]:
        """The backend name (and, for smmf workers, the kind) the server reports about itself."""
        backend = BACKEND[self.kind]
        if self.kind is not UpstreamType.SMMF:
            return backend, None
        try:
            async with self._client().get(self.url + "/v1/models") as reply:
                card = (await reply.json())["data"][0]["smmf"]
                return str(card["backend"]), Kind(card["kind"])
        except (aiohttp.ClientError, TimeoutError, KeyError, IndexError, TypeError, ValueError):
            return backend, None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
