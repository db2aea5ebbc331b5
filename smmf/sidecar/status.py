"""What an orchestrator asks a sidecar: is the instance ready, is the sidecar alive, and drain before I stop you.

    GET /ready          200 while the instance is registered and up, else 503 (a Kubernetes readiness probe)
    GET /live           200 while the sidecar runs
    GET or POST /drain  take the instance out of rotation for good and answer once its work is done

`/drain` is for a `preStop` hook.  Kubernetes sends SIGTERM to every
container of a pod at once after their hooks, so the worker's container
calls it too: both wait until in-flight work has finished, and only then
does the worker get its signal.  The answers hold only the instance's id
and state; the status server is plain HTTP and asks no token.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .agent import Sidecar

__all__ = ["StatusServer"]

#: Seconds beyond the drain timeout a /drain waits before answering anyway.
DRAIN_MARGIN = 5.0


class StatusServer:
    def __init__(self, sidecar: Sidecar, host: str, port: int) -> None:
        self.sidecar = sidecar
        self.host = host
        self.port = port
        app = web.Application()
        app.add_routes(
            [
                web.get("/ready", self.ready),
                web.get("/live", self.live),
                web.get("/drain", self.drain),
                web.post("/drain", self.drain),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)

    def _state(self) -> dict[str, object]:
        sidecar = self.sidecar
        return {"id": sidecar.instance_id, "state": sidecar.state.value, "registered": sidecar.lease is not None}

    async def start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def close(self) -> None:
        await self._runner.cleanup()

    async def ready(self, request: web.Request) -> web.Response:
        return web.json_response(self._state(), status=200 if self.sidecar.ready else 503)

    async def live(self, request: web.Request) -> web.Response:
        return web.json_response(self._state())

    async def drain(self, request: web.Request) -> web.Response:
        self.sidecar.retire()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.sidecar.retired.wait(), self.sidecar.config.drain_timeout + DRAIN_MARGIN)
        return web.json_response(self._state() | {"drained": self.sidecar.retired.is_set()})
