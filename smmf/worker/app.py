"""The worker's HTTP surface: the OpenAI API shape over any backend, plus /health and /metrics.

Order of checks on a generation request: body size (413), JSON (400), schema
(400), model name (404), route support (400), admission (429).  Only then
does the backend run, and a stream's HTTP status is sent only after the
backend produced its first piece, so an upstream or engine failure before
that is still a proper error status a client can retry elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from aiohttp import web

from ..errors import ErrorResponse
from ..wire import sse
from ..wire.load_report import LOAD_REPORT, format_load_report
from ..wire.responses import ResponseBuilder, Usage, embedding_response
from ..wire.routes import Route
from .admission import Admission
from .backends import Backend
from .error_responses import bad_request, body_of, http_response, model_not_found, server_error
from .metrics import CONTENT_TYPE, WorkerMetrics
from .openapi import document
from .requests import ChatRequest, CompletionRequest, Delta, EmbeddingRequest, parse, parse_json

__all__ = ["BODY_TIMEOUT", "DEFAULT_MAX_BODY", "DEFAULT_MAX_TOKENS", "HEADER_TIMEOUT", "Worker"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 8 * 1024 * 1024
#: Ceiling on `max_tokens` when neither the operator nor the engine gives one.
DEFAULT_MAX_TOKENS = 32768
#: Seconds a request body may take to arrive whole: a half-sent body must not hold a connection forever.
BODY_TIMEOUT = 30.0
#: Seconds a connection may sit idle, or half-way through its headers, before it is closed.  Clients
#: should drop idle connections sooner (smmf's own client does after 10 s), or they may reuse one that
#: the worker is closing.
HEADER_TIMEOUT = 20.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
R = TypeVar("R", ChatRequest, CompletionRequest, EmbeddingRequest)
#: Set on a request while it holds a generation slot, so its own load report leaves it out.
_IN_SLOT = "smmf.in_slot"


class Worker:
    """One model served over HTTP; knows nothing of registries."""

    def __init__(
        self,
        backend: Backend,
        model: str,
        *,
        max_concurrency: int = 4,
        max_queue: int = 64,
        max_body_bytes: int = DEFAULT_MAX_BODY,
        max_tokens: int | None = None,
        body_timeout: float = BODY_TIMEOUT,
        header_timeout: float = HEADER_TIMEOUT,
    ) -> None:
        self.backend = backend
        self.model = model
        self.max_body_bytes = max_body_bytes
        self._max_tokens = max_tokens
        self.body_timeout = body_timeout
        self.header_timeout = header_timeout
        self.admission = Admission(max_concurrency, max_queue)
        self.metrics = WorkerMetrics(model, backend.name, self.admission, backend.prefix_cache_counts)
        self.ready = False
        self.started_at = int(time.time())

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[self._errors])
        app.on_response_prepare.append(self._report_load)
        app.add_routes(
            [
                web.post("/v1/chat/completions", self.chat),
                web.post("/v1/completions", self.completions),
                web.post("/v1/embeddings", self.embeddings),
                web.get("/v1/models", self.models),
                web.get("/health", self.health),
                web.get("/metrics", self.prometheus),
                web.get("/openapi.json", self.openapi),
            ]
        )
        return app

    async def start(self) -> None:
        """Load the model; until then /health says 503 "loading" and requests get 503."""
        await self.backend.start()
        self.ready = True
        log.info("worker ready: model %s on backend %s", self.model, self.backend.name)

    async def close(self) -> None:
        self.ready = False
        await self.backend.close()

    async def _report_load(self, request: web.Request, response: web.StreamResponse) -> None:
        """Every response says how busy the worker is as it answers, not counting this request (see wire.load_report).

        A whole answer is sent after its slot was given back; a stream starts
        while it holds one, which is left out here.
        """
        inflight = self.admission.inflight - (1 if request.get(_IN_SLOT) else 0)
        response.headers[LOAD_REPORT] = format_load_report(max(0, inflight), self.admission.queued)

    @asynccontextmanager
    async def _slot(self, request: web.Request) -> AsyncIterator[None]:
        async with self.admission.slot():
            request[_IN_SLOT] = True
            try:
                yield
            finally:
                request[_IN_SLOT] = False

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ErrorResponse as exc:
            self.metrics.requests.labels(request.path, str(exc.status)).inc()
            return http_response(exc)
        except web.HTTPRequestEntityTooLarge:
            message = f"The request body is larger than this worker's limit of {self.max_body_bytes} bytes."
            return http_response(ErrorResponse(413, message, code="request_too_large"))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return http_response(ErrorResponse(exc.status, exc.reason, code=exc.reason.lower().replace(" ", "_")))
        except Exception:
            log.exception("unexpected error serving %s", request.path)
            return http_response(server_error("The worker failed while serving this request; see its log."))

    # -- plain routes ------------------------------------------------------

    async def models(self, _request: web.Request) -> web.Response:
        card = {
            "id": self.model,
            "object": "model",
            "created": self.started_at,
            "owned_by": "smmf-simulator (not a real model)" if self.backend.simulated else "smmf",
            "smmf": {
                "backend": self.backend.name,
                "kind": self.backend.kind.value,
                "simulated": self.backend.simulated,
            },
        }
        return web.json_response({"object": "list", "data": [card]})

    async def health(self, _request: web.Request) -> web.Response:
        if not self.ready:
            return web.json_response({"status": "loading"}, status=503)
        return web.json_response({"status": "ok", "model": self.model})

    async def openapi(self, _request: web.Request) -> web.Response:
        return web.json_response(document(self.model, self.backend.routes))

    async def prometheus(self, _request: web.Request) -> web.Response:
        response = web.Response(body=self.metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    @property
    def max_tokens(self) -> int:
        """The largest `max_tokens` a request may ask for: one request must not hold a slot for ever."""
        return self._max_tokens or self.backend.context_length or DEFAULT_MAX_TOKENS

    # -- requests ----------------------------------------------------------

    async def _read(self, request: web.Request) -> bytes:
        """The whole body; one that is late or cannot be decoded is a 4xx, and its connection is closed.

        What is left of such a body on the connection is unknown, so it is not
        read on (aiohttp would, and log the decoding error a second time).
        """
        try:
            return await asyncio.wait_for(request.read(), self.body_timeout)
        except TimeoutError:
            self._abandon(request)
            message = f"The request body did not arrive within {self.body_timeout:g}s."
            raise ErrorResponse(408, message, code="timeout") from None
        except web.RequestPayloadError as exc:  # a body aiohttp cannot decode (a broken deflate stream, say)
            self._abandon(request)
            raise bad_request(f"The request body could not be read: {exc}.") from None

    @staticmethod
    def _abandon(request: web.Request) -> None:
        """Stop reading this body, and close the connection once the answer is sent."""
        request.content.feed_eof()
        request.protocol.close()

    async def _body(self, request: web.Request, model: type[R], route: Route) -> R:
        parsed = parse(model, parse_json(await self._read(request)))
        limit = getattr(parsed, "token_limit", None)
        if limit is not None and limit > self.max_tokens:
            message = f"max_tokens is {limit}; this worker allows at most {self.max_tokens}."
            raise bad_request(message, param="max_tokens")
        if parsed.model != self.model:
            raise model_not_found(parsed.model, self.model)
        if route not in self.backend.routes:
            raise bad_request(f"The model {self.model!r} does not support /v1/{route}.", code="unsupported_endpoint")
        if not self.ready:
            raise ErrorResponse(503, "The model is still loading.", type="server_error", code="loading", retry_after=5)
        return parsed

    async def embeddings(self, request: web.Request) -> web.Response:
        req = await self._body(request, EmbeddingRequest, "embeddings")
        started = time.perf_counter()
        async with self._slot(request):
            vectors, tokens = await self.backend.embed(req)
        if req.dimensions is not None:
            vectors = [v[: req.dimensions] for v in vectors]
        self.metrics.prompt_tokens.inc(tokens)
        self.metrics.latency.labels("embeddings").observe(time.perf_counter() - started)
        self.metrics.requests.labels(request.path, "200").inc()
        return web.json_response(embedding_response(self.model, vectors, tokens))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        req = await self._body(request, ChatRequest, "chat")
        return await self._generate(request, req, ResponseBuilder("chat", self.model), "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        req = await self._body(request, CompletionRequest, "completions")
        return await self._generate(request, req, ResponseBuilder("completion", self.model), "completions")

    async def _generate(
        self, request: web.Request, req: ChatRequest | CompletionRequest, ids: ResponseBuilder, route: Route
    ) -> web.StreamResponse:
        started = time.perf_counter()
        async with self._slot(request):
            pieces = self.backend.generate(req)
            try:
                first = await anext(pieces, Delta(finish_reason="stop", usage=Usage.counted(0, 0)))
                self.metrics.ttft.labels(route).observe(time.perf_counter() - started)
                if req.stream:
                    response = await self._stream(request, req, ids, first, pieces)
                else:
                    response = await self._collect(req, ids, first, pieces)
            finally:
                await pieces.aclose()  # type: ignore[attr-defined]
        self.metrics.latency.labels(route).observe(time.perf_counter() - started)
        self.metrics.requests.labels(request.path, "200").inc()
        return response

    def _count(self, usage: Usage | None) -> Usage:
        usage = usage or Usage.counted(0, 0)
        self.metrics.prompt_tokens.inc(usage.prompt_tokens)
        self.metrics.completion_tokens.inc(usage.completion_tokens)
        return usage

    async def _collect(
        self, req: ChatRequest | CompletionRequest, ids: ResponseBuilder, first: Delta, rest: AsyncIterator[Delta]
    ) -> web.Response:
        parts, last = [first.text], first
        async for delta in rest:
            parts.append(delta.text)
            last = delta
        usage = self._count(last.usage)
        return web.json_response(ids.whole("".join(parts), last.finish_reason or "stop", usage))

    async def _stream(
        self,
        request: web.Request,
        req: ChatRequest | CompletionRequest,
        ids: ResponseBuilder,
        first: Delta,
        rest: AsyncIterator[Delta],
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        last = first
        await response.write(sse.event(ids.chunk(first.text, first.finish_reason, first=True)))
        try:
            async for delta in rest:
                last = delta
                await response.write(sse.event(ids.chunk(delta.text, delta.finish_reason)))
        except ErrorResponse as exc:
            log.warning("stream of %s failed after it started: %s", ids.response_id, exc.message)
            await response.write(sse.event(body_of(exc)))
            return response
        usage = self._count(last.usage)
        if req.include_usage:
            await response.write(sse.event(ids.usage_chunk(usage)))
        await response.write(sse.DONE)
        return response
