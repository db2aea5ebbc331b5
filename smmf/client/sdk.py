"""`httpx_client()`: the official `openai` SDK (and anything built on it) routed by smmf, unchanged.

    client = openai.AsyncOpenAI(base_url="http://smmf/v1", api_key="unused", http_client=smmf.client.httpx_client())

`RoutingTransport` reads the `model` field of each request and hands it to
the same router as `ModelClient` (same policies, retries, ejection and
in-flight accounting); the chosen instance's answer is passed back as it
arrives.  `GET /v1/models` is answered from the cache.  An `x-smmf-policy` or
`x-smmf-session` header chooses the policy or affinity key of one call.

openai 3.x is built on `httpx2`; older releases on `httpx`.  This module
uses whichever of the two the installed SDK brought.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

try:
    import httpx2 as httpx
except ImportError:  # an openai SDK before 3.x, built on httpx
    import httpx  # type: ignore[no-redef, unused-ignore]

from ..errors import APIConnectionError, SmmfError, StreamInterrupted
from ..registry import Registry
from ..wire.errors import error_body, routing_failure
from .api import ModelClient
from .request import Request
from .transport import Response

__all__ = ["ResponseBody", "RoutingTransport", "httpx_client"]


def httpx_client(
    registry: str | Registry | None = None, policy: str = "least_loaded", **options: Any
) -> httpx.AsyncClient:
    """An `httpx2.AsyncClient` (or `httpx.AsyncClient`) whose transport balances by model over the registry."""
    transport = RoutingTransport(ModelClient(registry, policy, **options))
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(600.0, connect=5.0))


def _error(status: int, message: str, code: str | None = None) -> httpx.Response:
    return httpx.Response(status, json=error_body(message, type="smmf_error", code=code))


class ResponseBody(httpx.AsyncByteStream):
    """An instance's streamed answer, passed through as it arrives; its slot is freed when it ends or is closed."""

    def __init__(self, response: Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._response.iter_bytes():
                yield piece
        except StreamInterrupted as exc:
            raise httpx.ReadError(exc.message) from None
        finally:
            self._response.close()

    async def aclose(self) -> None:
        self._response.close()


class RoutingTransport(httpx.AsyncBaseTransport):
    def __init__(self, client: ModelClient) -> None:
        self.client = client
        self._started = False
        self._lock = asyncio.Lock()

    async def _start(self) -> None:
        async with self._lock:
            if not self._started:
                await self.client.start()
                self._started = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self._start()
        path = request.url.path
        below_v1 = path[path.index("/v1/") + 3 :] if "/v1/" in path else path
        if request.method == "GET" and below_v1.rstrip("/") == "/models":
            return httpx.Response(200, json=self.client.openai_models())
        try:
            body = json.loads(await request.aread() or b"{}")
        except ValueError:
            return _error(400, "the request body is not JSON")
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str):
            return _error(400, "the request has no model field")
        call = Request(
            model,
            below_v1,
            body,
            stream=bool(body.get("stream")),
            policy=request.headers.get("x-smmf-policy"),
            session_key=request.headers.get("x-smmf-session"),
        )
        try:
            response = await self.client.router.send(call)
        except APIConnectionError as exc:
            raise httpx.ConnectError(exc.message) from None  # the SDK's own connection error, and its retries
        except SmmfError as exc:
            failure = routing_failure(exc)
            if failure is None:
                raise
            return httpx.Response(failure[0], json=failure[1])
        headers = {"content-type": response.headers["content-type"], "x-smmf-instance": response.instance_id}
        if response.streaming:
            return httpx.Response(response.status, headers=headers, stream=ResponseBody(response))
        return httpx.Response(response.status, headers=headers, content=response.content)

    async def aclose(self) -> None:
        if self._started:
            await self.client.close()
