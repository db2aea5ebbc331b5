"""`httpx_client()`: the official `openai` SDK (and anything built on it) routed by smmf, unchanged.

    client = openai.AsyncOpenAI(base_url="http://smmf/v1", api_key="unused", http_client=smmf.client.httpx_client())

The transport reads the `model` field of each request, picks an instance with
the same router as `ModelClient` (same policies, retries, ejection and
in-flight accounting) and forwards the request there; streams are passed
through as they arrive.  `GET /v1/models` is answered from the cache.  An
`x-smmf-policy` or `x-smmf-session` header chooses the policy or affinity
key of one call.

openai 3.x is built on `httpx2`; older releases on `httpx`.  The client
returned is of whichever of the two the installed SDK uses.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import aiohttp

from ..instance import Protocol
from ..registry_drivers import Registry
from .api import ModelClient, affinity_key
from .calls import as_chunk, call_template_instance, post
from .endpoint import Endpoint, Ticket
from .errors import APIConnectionError, APIStatusError, NoInstanceAvailable


def _httpx() -> ModuleType:
    try:
        import httpx2 as httpx
    except ImportError:
        import httpx  # type: ignore[no-redef]
    return httpx


def _error(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "smmf_error", "param": None, "code": code}}


def httpx_client(registry: str | Registry | None = None, policy: str = "least_loaded", **options: Any) -> Any:
    """An `httpx2.AsyncClient` (or `httpx.AsyncClient`) whose transport balances by model over the registry."""
    httpx = _httpx()
    transport = make_transport(httpx, ModelClient(registry, policy, **options))
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(600.0, connect=5.0))


def make_transport(httpx: ModuleType, client: ModelClient) -> Any:
    class _Body(httpx.AsyncByteStream):  # type: ignore[misc, name-defined]
        """A worker's response body, passed through; the instance's slot is freed when it ends or is closed."""

        def __init__(self, response: aiohttp.ClientResponse, ticket: Ticket, ttfb: float) -> None:
            self._response = response
            self._ticket = ticket
            self._ttfb = ttfb

        async def __aiter__(self) -> AsyncIterator[bytes]:
            ok = False
            try:
                async for piece in self._response.content.iter_any():
                    yield piece
                ok = True
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise httpx.ReadError(f"stream from {self._ticket.endpoint.id} broke: {exc}") from None
            finally:
                self._ticket.end(ok=ok, latency=self._ttfb)
                self._response.release()

        async def aclose(self) -> None:
            self._ticket.end(ok=False)
            self._response.release()

    class RoutingTransport(httpx.AsyncBaseTransport):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self.client = client
            self._started = False
            self._lock = asyncio.Lock()

        async def _start(self) -> None:
            async with self._lock:
                if not self._started:
                    await self.client.start()
                    self._started = True

        def _models(self) -> Any:
            data = [
                {"id": model, "object": "model", "created": 0, "owned_by": "smmf", "instances": len(records)}
                for model, records in self.client.models().items()
            ]
            return httpx.Response(200, json={"object": "list", "data": data})

        async def handle_async_request(self, request: Any) -> Any:
            await self._start()
            path = request.url.path
            suffix = path[path.index("/v1/") + 3 :] if "/v1/" in path else path
            if request.method == "GET" and suffix.rstrip("/") == "/models":
                return self._models()
            try:
                body = json.loads(await request.aread() or b"{}")
            except ValueError:
                return httpx.Response(400, json=_error(400, "the request body is not JSON"))
            model = body.get("model") if isinstance(body, dict) else None
            if not isinstance(model, str):
                return httpx.Response(400, json=_error(400, "the request has no model field"))
            policy = request.headers.get("x-smmf-policy")
            key = request.headers.get("x-smmf-session") or (
                affinity_key(body, None) if (policy or self.client.router.policy) == "affinity" else None
            )
            stream = bool(body.get("stream"))

            async def send(endpoint: Endpoint, ticket: Ticket) -> Any:
                if endpoint.record.protocol is Protocol.TEMPLATE:
                    chat = suffix == "/chat/completions"
                    whole = await call_template_instance(self.client.session, endpoint, ticket, body, chat=chat)
                    if stream:
                        sse = f"data: {json.dumps(as_chunk(whole, chat))}\n\ndata: [DONE]\n\n".encode()
                        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse)
                    return httpx.Response(200, json=whole)
                response = await post(self.client.session, endpoint, suffix, body)
                headers = {"content-type": response.headers.get("Content-Type", "application/json")}
                headers["x-smmf-instance"] = endpoint.id
                if stream:
                    ttfb = time.monotonic() - ticket.started
                    return httpx.Response(response.status, headers=headers, stream=_Body(response, ticket, ttfb))
                try:
                    content = await response.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise httpx.ReadError(f"response from {endpoint.id} broke: {exc}") from None
                finally:
                    response.release()
                ticket.end(ok=True)
                return httpx.Response(response.status, headers=headers, content=content)

            try:
                return await self.client.router.run(model, send, policy=policy, key=key)
            except NoInstanceAvailable as exc:
                return httpx.Response(404, json=_error(404, exc.message, "model_not_found"))
            except APIStatusError as exc:
                body = exc.body if isinstance(exc.body, dict) else _error(exc.status or 502, exc.message)
                return httpx.Response(exc.status or 502, json=body)
            except APIConnectionError as exc:
                raise httpx.ConnectError(exc.message) from None

        async def aclose(self) -> None:
            if self._started:
                await self.client.close()

    return RoutingTransport()
