"""The dashboard's own API: the fleet view, its live feed, and the operator's actions on one instance by id.

    GET    /api/fleet                      the view the dashboard shows, as JSON
    GET    /api/events                     that view pushed as server-sent events
    POST   /api/instances/{id}/{action}    offline, online, drain or restart; answers with the sidecar's ack
    DELETE /api/instances/{id}             deregister a persistent (template) record

An action waits, as `smmf drain` does, until the sidecar has written its
acknowledgement back (`?timeout=` seconds, default 60).  Deregistering an
instance a sidecar keeps alive is refused: the sidecar would register it
again at once, so `offline` is what takes it out of rotation.
"""

from __future__ import annotations

from aiohttp import web

from ..admin import AdminAction
from ..errors import SmmfError
from ..management import control, find, settled
from ..registry import Registry
from .feed import Feed
from .guard import AdminGuard
from .replies import failed, failure_of, succeeded

__all__ = ["ControlAPI"]

DEFAULT_TIMEOUT = 60.0


class ControlAPI:
    def __init__(self, registry: Registry, guard: AdminGuard, feed: Feed) -> None:
        self.registry = registry
        self.guard = guard
        self.feed = feed

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/fleet", self.fleet),
            web.get("/api/events", self.feed.stream),
            web.post("/api/instances/{id}/{action}", self.act),
            web.delete("/api/instances/{id}", self.deregister),
        ]

    async def fleet(self, request: web.Request) -> web.Response:
        return web.json_response(self.feed.view())

    async def act(self, request: web.Request) -> web.Response:
        if (refusal := self.guard.refusal(request)) is not None:
            return failed(*refusal)
        instance_id = request.match_info["id"]
        try:
            action = AdminAction(request.match_info["action"])
        except ValueError:
            return failed(404, f"no action {request.match_info['action']!r}: use offline, online, drain or restart")
        try:
            timeout = float(request.query.get("timeout", DEFAULT_TIMEOUT))
        except ValueError:
            return failed(400, "timeout must be a number of seconds")
        try:
            state = await control(self.registry, instance_id, action, timeout=timeout, requested_by="smmf-dashboard")
            record = await settled(self.registry, instance_id, state)
        except SmmfError as exc:
            return failure_of(exc)
        now = f"; now {record.state}" if record is not None else "; not running"
        return succeeded(
            f"{instance_id}: {action} done{now}",
            ack=state.model_dump(mode="json"),
            state=None if record is None else record.state.value,
        )

    async def deregister(self, request: web.Request) -> web.Response:
        if (refusal := self.guard.refusal(request)) is not None:
            return failed(*refusal)
        instance_id = request.match_info["id"]
        try:
            record = await find(self.registry, instance_id)
            if record is not None and record.alive_at is not None:
                return failed(
                    409, f"{instance_id} is kept alive by its sidecar, which would register it again: take it offline"
                )
            if not await self.registry.remove(instance_id):
                return failed(404, f"no instance {instance_id!r} in the registry")
        except SmmfError as exc:
            return failure_of(exc)
        return succeeded(f"{instance_id}: deregistered")
