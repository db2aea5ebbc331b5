"""`/v1/...`: the OpenAI API, each call routed by the embedded client's router, answers passed through as they come.

The same router as `ModelClient` and the SDK transport (policies, retries,
ejection, in-flight accounting), so a caller that cannot embed the client
gets the same balancing one hop later.  A stream goes out piece by piece as
the instance sends it.  `x-smmf-policy` and `x-smmf-session` choose one
call's policy and affinity key, as with the SDK transport; `x-smmf-instance`
on every answer names the instance that gave it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from ..client import ModelClient
from ..client.peer import Peer
from ..client.request import Request
from ..client.transport import Response
from ..errors import SmmfError, StreamInterrupted
from ..wire.errors import error_body, routing_failure
from ..wire.routes import PATHS
from .metrics import GatewayMetrics

__all__ = ["CallRecord", "OpenAIAPI", "read_json"]

#: The header naming the instance that answered.
INSTANCE = "x-smmf-instance"


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; ValueError with a message for the caller when it is not JSON."""
    try:
        return json.loads(await request.read() or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("the request body is not JSON") from None


class CallRecord:
    """Follows one routed call for the gateway's metrics: where each attempt went, and retries."""

    __slots__ = ("instance_id", "metrics", "model", "route", "started")

    def __init__(self, metrics: GatewayMetrics, model: str, route: str) -> None:
        self.metrics = metrics
        self.model = model
        self.route = route
        #: The instance of the last attempt, "-" before the first.
        self.instance_id = "-"
        self.started = time.monotonic()

    def instance(self, peer: Peer) -> None:
        self.instance_id = peer.id

    def retry(self, attempt: int) -> None:
        self.metrics.retries.labels(self.model).inc()

    def first_piece(self) -> None:
        self.metrics.ttft.labels(self.model, self.instance_id).observe(time.monotonic() - self.started)

    def finish(self, status: int) -> None:
        self.metrics.observe(self.model, self.instance_id, self.route, status, time.monotonic() - self.started)


class OpenAIAPI:
    def __init__(self, client: ModelClient, metrics: GatewayMetrics) -> None:
        self.client = client
        self.metrics = metrics

    def routes(self) -> list[web.RouteDef]:
        generation = [web.post(f"/v1{path}", self.generate) for path in PATHS.values()]
        return [*generation, web.get("/v1/models", self.models)]

    async def send(self, call: Request) -> tuple[Response, CallRecord]:
        """Route one call, counted in the metrics; a whole answer is counted at once, a stream when it ends."""
        record = CallRecord(self.metrics, call.model, call.route or call.path)
        try:
            response = await self.client.router.send(call, record)
        except SmmfError as exc:
            failure = routing_failure(exc)
            record.finish(500 if failure is None else failure[0])
            raise
        if not response.streaming:
            record.finish(response.status)
        return response, record

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(self.client.openai_models())

    async def generate(self, request: web.Request) -> web.StreamResponse:
        path = request.path[len("/v1") :]
        try:
            body = await read_json(request)
        except ValueError as exc:
            return _error(400, str(exc))
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            return _error(400, "the request has no model field", "model")
        call = Request(
            model, path, body, stream=bool(body.get("stream")),
            policy=request.headers.get("x-smmf-policy"), session_key=request.headers.get("x-smmf-session"),
        )  # fmt: skip
        try:
            response, record = await self.send(call)
        except SmmfError as exc:
            failure = routing_failure(exc)
            if failure is None:
                raise
            return web.json_response(failure[1], status=failure[0], headers=_named(getattr(exc, "instance_id", None)))
        headers = {"Content-Type": response.headers["content-type"], **_named(response.instance_id)}
        if not response.streaming:
            return web.Response(status=response.status, body=response.content, headers=headers)
        return await _pass_stream(request, response, headers, record)


def _named(instance: str | None) -> dict[str, str]:
    return {INSTANCE: instance} if instance else {}


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    return web.json_response(error_body(message, param=param), status=status)


async def _pass_stream(
    request: web.Request, response: Response, headers: dict[str, str], record: CallRecord
) -> web.StreamResponse:
    """An instance's stream, piece by piece; a caller that leaves early is not held against the instance."""
    out = web.StreamResponse(status=response.status, headers=headers)
    status, ok = response.status, None
    try:
        await out.prepare(request)
        first = True
        async for piece in response.iter_bytes():
            if first:
                record.first_piece()
                first = False
            await out.write(piece)
        await out.write_eof()
    except StreamInterrupted:
        status = 502  # the instance broke off; the caller's stream ends without [DONE], as it would have direct
    except ConnectionResetError:
        ok = True  # the caller left
    finally:
        response.close(ok)
        record.finish(status)
    return out
