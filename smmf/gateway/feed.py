"""The dashboard's live feed: the fleet as this gateway sees it, pushed to every open page as it changes.

One watch feeds everything: the client's instance cache, which the request
path reads too.  A change in the cache (a record registered, rewritten with
new load, or gone) is pushed within `COALESCE` seconds; with nothing
changing, a fresh view still goes out every `TICK` seconds so ages, rates
and the registry's connection state stay current.  Each page holds one
server-sent-event stream and is sent only the latest view: a slow page
skips views, it never queues them, and no page ever makes the gateway call
the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from aiohttp import web

from ..client import ModelClient
from ..client.peer import Peer
from ..instance import Instance
from ..tasks import cancel_and_wait
from .metrics import GatewayMetrics

__all__ = ["COALESCE", "TICK", "Feed"]

#: Seconds changes are gathered before one view goes out.
COALESCE = 0.1
#: Seconds between views when nothing changes.
TICK = 1.0


def _age(when: float | None, now: float) -> float | None:
    return None if when is None else round(max(0.0, now - when), 1)


def _record_fields(record: Instance, now: float) -> dict[str, Any]:
    load = record.load
    reported = load.reported
    return {
        "id": record.id,
        "model": record.model,
        "endpoint": record.endpoint,
        "backend": record.backend,
        "kind": record.kind.value,
        "protocol": record.protocol.value,
        "state": record.state.value,
        "weight": record.weight,
        "owner": record.labels.get("owner"),
        "persistent": record.alive_at is None,
        "inflight": load.inflight if reported else None,
        "queued": load.queued if reported else None,
        "kv_cache_usage": load.kv_cache_usage,
        "prefix_cache_hit_rate": load.prefix_cache_hit_rate,
        "load_age": _age(load.updated_at, now) if reported else None,
        "seen_age": _age(record.alive_at, now),
    }


class Feed:
    def __init__(self, client: ModelClient, metrics: GatewayMetrics, writes: str) -> None:
        self.client = client
        self.metrics = metrics
        self.writes = writes
        self._pages: set[asyncio.Queue[bytes]] = set()
        self._task: asyncio.Task[None] | None = None

    def _peer_fields(self, peer: Peer, now: float, monotonic: float) -> dict[str, Any]:
        stats = self.metrics.recent(peer.id)
        return _record_fields(peer.record, now) | {
            "refused": None,
            "ejected": monotonic < peer.ejected_until,
            "here": {
                "inflight": peer.inflight,
                "rate": round(stats.rate, 3),
                "p50_ms": stats.p50_ms,
                "p99_ms": stats.p99_ms,
                "error_rate": stats.error_rate,
            },
        }

    def view(self) -> dict[str, Any]:
        """What the dashboard shows: the registry's state, and every model with its instances."""
        cache = self.client.cache
        now, monotonic = time.time(), time.monotonic()
        models: dict[str, list[dict[str, Any]]] = {}
        for model in cache.known_models():
            models[model] = [self._peer_fields(peer, now, monotonic) for peer in cache.peers(model)]
        for record, reason in cache.refused.values():
            models.setdefault(record.model, []).append(_record_fields(record, now) | {"refused": reason})
        self.metrics.forget({i["id"] for instances in models.values() for i in instances})
        connection = cache.connection
        return {
            "registry": {
                "url": cache.registry.url,
                "connected": connection.connected,
                "error": connection.error,
                "since_age": _age(connection.since, now) if connection.since else None,
                "ready": cache.ready,
            },
            "gateway": {"policy": self.client.router.policy, "writes": self.writes},
            "models": [
                {"model": model, "instances": sorted(instances, key=lambda i: i["id"])}
                for model, instances in sorted(models.items())
            ],
            "at": now,
        }

    def _message(self) -> bytes:
        return b"event: fleet\ndata: " + json.dumps(self.view(), separators=(",", ":")).encode() + b"\n\n"

    def _publish(self) -> None:
        message = self._message()
        for page in self._pages:
            if page.full():
                page.get_nowait()  # the page has not taken the last view yet: it gets this one instead
            page.put_nowait(message)

    async def _run(self) -> None:
        cache = self.client.cache
        version = cache.version
        while True:
            with contextlib.suppress(TimeoutError):
                version = await asyncio.wait_for(cache.changed(version), TICK)
                await asyncio.sleep(COALESCE)
                version = cache.version
            if self._pages:
                self._publish()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop pushing, and end every open page's stream (a page's EventSource reconnects elsewhere)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
        for page in self._pages:
            if page.full():
                page.get_nowait()
            page.put_nowait(b"")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """`GET /api/events`: the current view at once, then each new one, as server-sent events."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        page: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        self._pages.add(page)
        try:
            await response.write(b"retry: 1000\n\n" + self._message())
            while message := await page.get():
                await response.write(message)
        except ConnectionResetError:
            pass  # the page was closed
        finally:
            self._pages.discard(page)
        return response
