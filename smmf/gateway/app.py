"""`Gateway`: the OpenAI API, the management API and the dashboard over one embedded `ModelClient`.

It keeps no state of its own: what it knows comes from its one watch of the
registry, and what it changes goes to the registry, so any number of
replicas can run behind any load balancer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from aiohttp import web

from ..client import ModelClient
from ..client.peer import Peer
from ..registry import Registry
from .control_api import ControlAPI
from .feed import Feed
from .guard import AdminGuard
from .management_api import ManagementAPI
from .metrics import CONTENT_TYPE, GatewayMetrics
from .openai_api import OpenAIAPI

__all__ = ["STATIC", "Gateway"]

log = logging.getLogger(__name__)

#: The dashboard's page, stylesheet and script, served as they are (no build step, nothing from a CDN).
STATIC = Path(__file__).parent / "static"


class Gateway:
    def __init__(
        self,
        registry: str | Registry | None = None,
        *,
        host: str = "127.0.0.1",
        admin_token_env: str | None = None,
        policy: str = "least_loaded",
        credentials: Mapping[str, str] | None = None,
        allow: Iterable[str] | None = None,
    ) -> None:
        self.guard = AdminGuard(admin_token_env, host)
        self.client = ModelClient(registry, policy, credentials=credentials, allow=allow)
        self.registry = self.client.cache.registry
        self.metrics = GatewayMetrics(self._peers)
        self.feed = Feed(self.client, self.metrics, self.guard.mode)

    def _peers(self) -> list[Peer]:
        cache = self.client.cache
        return [peer for model in cache.known_models() for peer in cache.peers(model)]

    async def start(self) -> None:
        await self.client.start()
        self.feed.start()
        log.info("gateway over %s; writes: %s", self.registry.url, self.guard.mode)

    async def close(self) -> None:
        await self.feed.close()
        await self.client.close()

    def application(self) -> web.Application:
        app = web.Application()
        openai = OpenAIAPI(self.client, self.metrics)
        app.add_routes(openai.routes())
        app.add_routes(ManagementAPI(openai, self.registry, self.guard).routes())
        app.add_routes(ControlAPI(self.registry, self.guard, self.feed).routes())
        app.add_routes(
            [
                web.get("/health", self.health),
                web.get("/metrics", self.render_metrics),
                web.get("/", self.index),
                web.static("/static", STATIC),
            ]
        )
        return app

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def health(self, request: web.Request) -> web.Response:
        """200 once the registry's first snapshot is in (until then the gateway knows no instance), else 503."""
        cache = self.client.cache
        body = {
            "status": "ok" if cache.ready else "starting",
            "registry": {"url": self.registry.url, "connected": cache.connection.connected},
            "models": len(cache.known_models()),
        }
        return web.json_response(body, status=200 if cache.ready else 503)

    async def render_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})
