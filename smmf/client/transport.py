"""The transport: the seam where one request reaches one instance, and what came back.

A `Transport` sends a `Request` to a `Peer` and returns a `Response` once the
instance has answered with a success status; anything else is raised.  The
router above it decides where and whether to try again, and never looks at
how an instance is reached.  `ProtocolTransport`, the default, reaches each
instance the way its record's `protocol` says: an OpenAI-compatible server
over HTTP (`HttpTransport`), or a third-party API through its template
(`TemplateTransport`), whose answer is put in OpenAI's shape here, once, for
both front ends.

A failure before any byte of the answer (refused, reset, 429, 502, 503, 504)
is `Retryable`: another instance may do better.  After the first byte
nothing is retried: a broken stream raises `StreamInterrupted`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Protocol as TypingProtocol

import aiohttp

from ..errors import APIConnectionError, APIError, APIStatusError, StreamInterrupted
from ..instance import Protocol
from ..template import (
    ExtractError,
    TemplateCallError,
    TemplateInputError,
    call_template,
    prompt_from_messages,
    word_usage,
)
from ..wire import sse
from ..wire.errors import read_error
from ..wire.load_report import LOAD_REPORT, parse_load_report
from ..wire.responses import ResponseBuilder
from ..wire.retry_after import parse_retry_after
from .peer import Peer, Ticket
from .request import Request
from .trust import Trust

__all__ = [
    "RETRY_STATUSES",
    "HttpTransport",
    "ProtocolTransport",
    "Response",
    "Retryable",
    "TemplateTransport",
    "Transport",
    "status_failure",
]

RETRY_STATUSES = frozenset({429, 502, 503, 504})
_BROKEN = (aiohttp.ClientError, TimeoutError)


class Retryable(Exception):
    """A failure before any byte of the answer: safe to send elsewhere.  Never leaves the router."""

    def __init__(self, error: APIError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


def status_failure(instance_id: str, status: int, text: str, retry_after: float | None) -> Exception:
    """The exception for an error status: `Retryable` wrapping it when another instance may do better."""
    message, body = read_error(text)
    error = APIStatusError(message or f"HTTP {status}: {text[:200]}", status=status, instance_id=instance_id, body=body)
    return Retryable(error, retry_after) if status in RETRY_STATUSES else error


class Response:
    """An instance's successful answer: its headers, and its body either whole or still arriving.

    From `hold()` on it owns the attempt's `Ticket`: a whole answer ends it at
    once, a stream when it has been read to the end or closed.  Close every
    streamed response (reading it to the end does), or the instance keeps
    counting it as in flight.
    """

    __slots__ = ("_content", "_latency", "_raw", "_ticket", "complete", "headers", "instance_id", "status")

    def __init__(
        self,
        instance_id: str,
        status: int,
        headers: Mapping[str, str],
        *,
        content: bytes | None = None,
        raw: aiohttp.ClientResponse | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.status = status
        self.headers = headers
        self._content = content
        self._raw = raw
        self._ticket: Ticket | None = None
        self._latency: float | None = None
        #: Whether the whole body has been received.
        self.complete = raw is None

    @property
    def streaming(self) -> bool:
        """Whether the body is still arriving (read it with `iter_lines` or `iter_bytes`)."""
        return self._raw is not None

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise RuntimeError("a streamed response has no content: iterate it")
        return self._content

    def hold(self, ticket: Ticket) -> Response:
        """Take over the attempt's ticket; a stream's latency is its time to the first byte."""
        if self._raw is None:
            ticket.end(ok=True)
        else:
            self._ticket = ticket
            self._latency = time.monotonic() - ticket.started
        return self

    async def iter_lines(self) -> AsyncIterator[bytes]:
        """The body line by line, as it arrives; `StreamInterrupted` if the connection breaks."""
        if self._raw is None:
            for line in self.content.splitlines(keepends=True):
                yield line
            return
        try:
            async for line in self._raw.content:
                yield line
        except _BROKEN as exc:
            raise self._broken(exc) from None
        self.complete = True

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body in whatever pieces arrive; `StreamInterrupted` if the connection breaks."""
        if self._raw is None:
            yield self.content
            return
        try:
            async for piece in self._raw.content.iter_any():
                yield piece
        except _BROKEN as exc:
            raise self._broken(exc) from None
        self.complete = True

    def _broken(self, exc: BaseException) -> StreamInterrupted:
        return StreamInterrupted(
            f"{self.instance_id}: stream broke: {exc.__class__.__name__}", instance_id=self.instance_id
        )

    def close(self, ok: bool | None = None) -> None:
        """Free the connection and end the ticket; `ok` overrides "the body arrived whole" as the verdict."""
        if self._ticket is not None:
            self._ticket.end(ok=self.complete if ok is None else ok, latency=self._latency)
        if self._raw is not None:
            self._raw.release()


class Transport(TypingProtocol):
    def send(self, peer: Peer, request: Request) -> Awaitable[Response]:
        """Send `request` to `peer`; the answer once its status says it succeeded.  Raises `Retryable` or `APIError`."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class HttpTransport:
    """`protocol: openai` instances: the body POSTed as it is to the instance's URL."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def send(self, peer: Peer, request: Request) -> Response:
        try:
            raw = await self.session.post(peer.record.endpoint.rstrip("/") + request.path, json=request.body)
        except _BROKEN as exc:
            raise Retryable(
                APIConnectionError(f"{peer.id}: {exc.__class__.__name__}: {exc}", instance_id=peer.id)
            ) from None
        report = parse_load_report(raw.headers.get(LOAD_REPORT))
        if report is not None:
            peer.report(*report)
        if raw.status >= 400:
            text = await raw.text()
            raw.release()
            raise status_failure(peer.id, raw.status, text, parse_retry_after(raw.headers.get("Retry-After")))
        headers = {"content-type": raw.headers.get("Content-Type", "application/json")}
        if request.stream:
            return Response(peer.id, raw.status, headers, raw=raw)
        try:
            content = await raw.read()
        except _BROKEN as exc:
            message = f"{peer.id}: response broke after it started: {exc}"
            raise APIConnectionError(message, instance_id=peer.id) from None
        finally:
            raw.release()
        return Response(peer.id, raw.status, headers, content=content)


class TemplateTransport:
    """`protocol: template` records: the third-party API called directly, its answer in OpenAI's shape.

    Such an API answers whole, so a stream is one chunk (with usage) and
    `[DONE]`.  Token counts are estimated as words, as the `template` worker
    backend does.
    """

    def __init__(self, session: aiohttp.ClientSession, trust: Trust) -> None:
        self.session = session
        self.trust = trust

    async def send(self, peer: Peer, request: Request) -> Response:
        record = peer.record
        assert record.template is not None  # the record's validator guarantees it
        route = request.route
        if route not in ("chat", "completions"):
            message = f"{peer.id} is a template instance: it serves chat and completions, not {request.path}"
            raise APIStatusError(message, status=400, instance_id=peer.id)
        chat = route == "chat"
        body = request.body
        prompt = prompt_from_messages(body.get("messages", [])) if chat else str(body.get("prompt", ""))
        try:
            api_key = self.trust.api_key(record)
        except KeyError as exc:
            raise APIStatusError(str(exc.args[0]), status=500, instance_id=peer.id) from None
        try:
            answer = await call_template(
                self.session, record.template, prompt,
                model=record.model, temperature=body.get("temperature"), api_key=api_key,
            )  # fmt: skip
        except TemplateInputError as exc:
            raise APIStatusError(str(exc), status=400, instance_id=peer.id) from None
        except TemplateCallError as exc:
            raise status_failure(peer.id, exc.status or 502, exc.message, exc.retry_after) from None
        except ExtractError as exc:
            raise APIStatusError(str(exc), status=502, instance_id=peer.id) from None
        shape = ResponseBuilder("chat" if chat else "completion", record.model)
        usage = word_usage(prompt, answer)
        if request.stream:
            content = sse.event(shape.chunk(answer, "stop", first=True, usage=usage)) + sse.DONE
            return Response(peer.id, 200, {"content-type": "text/event-stream"}, content=content)
        content = json.dumps(shape.whole(answer, "stop", usage)).encode()
        return Response(peer.id, 200, {"content-type": "application/json"}, content=content)


class ProtocolTransport:
    """The default transport: each instance reached as its record's protocol says, over one connection pool."""

    def __init__(self, timeout: aiohttp.ClientTimeout, trust: Trust | None = None) -> None:
        self.timeout = timeout
        self.trust = trust or Trust()
        self._session: aiohttp.ClientSession | None = None
        self._by_protocol: dict[Protocol, HttpTransport | TemplateTransport] = {}

    def _open(self) -> None:
        # Made on first use, inside the running loop, as aiohttp requires.
        session = aiohttp.ClientSession(
            timeout=self.timeout, connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=10)
        )
        self._session = session
        self._by_protocol = {
            Protocol.OPENAI: HttpTransport(session),
            Protocol.TEMPLATE: TemplateTransport(session, self.trust),
        }

    def send(self, peer: Peer, request: Request) -> Awaitable[Response]:
        # A plain function handing back the chosen transport's coroutine: no frame of its own on the request path.
        if self._session is None:
            self._open()
        return self._by_protocol[peer.record.protocol].send(peer, request)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
