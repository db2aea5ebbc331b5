"""Sending one attempt to one instance, and telling a retryable failure from a final one.

A failure before any response byte (refused, reset, 429/502/503/504) is
`Retryable`: the router sends the request elsewhere.  After the first byte
nothing is retried: a broken stream raises `StreamInterrupted` naming the
instance.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

import aiohttp
from pydantic import BaseModel

from ..instance import Protocol
from ..sse import Unfinished, json_events
from ..templating import ExtractError, TemplateCallError, call_template, prompt_from_messages
from .endpoint import Endpoint, Ticket
from .errors import APIConnectionError, APIStatusError, StreamInterrupted
from .router import Retryable

R = TypeVar("R", bound=BaseModel)

RETRY_STATUSES = frozenset({429, 502, 503, 504})


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _message(text: str, status: int) -> tuple[str, object]:
    try:
        body = json.loads(text)
        return str(body["error"]["message"]), body
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}: {text[:200]}", text


def status_failure(endpoint: Endpoint, status: int, text: str, retry_after: str | None) -> Exception:
    """The exception for an error status: `Retryable` wrapping it when another instance may do better."""
    message, body = _message(text, status)
    error = APIStatusError(message, status=status, instance_id=endpoint.id, body=body)
    return Retryable(error, _retry_after(retry_after)) if status in RETRY_STATUSES else error


async def post(
    session: aiohttp.ClientSession, endpoint: Endpoint, path: str, body: dict[str, Any]
) -> aiohttp.ClientResponse:
    """POST and return the response once its status says it succeeded; failures raised as above."""
    url = endpoint.record.endpoint.rstrip("/") + path
    try:
        response = await session.post(url, json=body)
    except (aiohttp.ClientConnectionError, aiohttp.ClientOSError, TimeoutError) as exc:
        raise Retryable(
            APIConnectionError(f"{endpoint.id}: {exc.__class__.__name__}: {exc}", instance_id=endpoint.id)
        ) from None
    if response.status >= 400:
        text = await response.text()
        response.release()
        raise status_failure(endpoint, response.status, text, response.headers.get("Retry-After"))
    return response


async def fetch(
    session: aiohttp.ClientSession, endpoint: Endpoint, ticket: Ticket, path: str, body: dict[str, Any], parse: type[R]
) -> R:
    """A whole (non-streamed) response, parsed; ends the ticket."""
    response = await post(session, endpoint, path, body)
    try:
        raw = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        message = f"{endpoint.id}: response broke after it started: {exc}"
        raise APIConnectionError(message, instance_id=endpoint.id) from None
    finally:
        response.release()
    ticket.end(ok=True)
    try:
        result = parse.model_validate_json(raw)  # parsed and validated in one pass by pydantic-core
    except ValueError as exc:
        raise APIStatusError(f"{endpoint.id}: malformed response: {exc}", status=502, instance_id=endpoint.id) from None
    result.instance_id = endpoint.id
    return result


class Stream(Generic[R]):
    """An async iterator of parsed chunks; iterate it to the end or close it to free the instance's slot."""

    def __init__(self, chunks: AsyncIterator[R], instance_id: str) -> None:
        self._chunks = chunks
        self.instance_id = instance_id

    def __aiter__(self) -> AsyncIterator[R]:
        return self._chunks

    async def __anext__(self) -> R:
        return await anext(self._chunks)

    async def aclose(self) -> None:
        await self._chunks.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> Stream[R]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _sse(
    response: aiohttp.ClientResponse, endpoint: Endpoint, ticket: Ticket, parse: type[R], ttfb: float
) -> AsyncIterator[R]:
    ok = False
    try:
        async for payload in json_events(response.content):
            if "error" in payload:
                message = (
                    payload["error"].get("message", "error") if isinstance(payload["error"], dict) else payload["error"]
                )
                raise StreamInterrupted(
                    f"{endpoint.id}: stream failed: {message}", instance_id=endpoint.id, body=payload
                )
            chunk = parse.model_validate(payload)
            chunk.instance_id = endpoint.id
            yield chunk
        ok = True
    except Unfinished:
        raise StreamInterrupted(f"{endpoint.id}: stream ended before [DONE]", instance_id=endpoint.id) from None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise StreamInterrupted(
            f"{endpoint.id}: stream broke: {exc.__class__.__name__}", instance_id=endpoint.id
        ) from None
    finally:
        ticket.end(ok=ok, latency=ttfb)
        response.release()


async def open_stream(
    session: aiohttp.ClientSession, endpoint: Endpoint, ticket: Ticket, path: str, body: dict[str, Any], parse: type[R]
) -> Stream[R]:
    """Start a stream: failures before its first byte are retryable, later ones raise `StreamInterrupted`."""
    response = await post(session, endpoint, path, body)
    return Stream(_sse(response, endpoint, ticket, parse, time.monotonic() - ticket.started), endpoint.id)


# -- template instances: the third-party API is called directly -------------


async def call_template_instance(
    session: aiohttp.ClientSession, endpoint: Endpoint, ticket: Ticket, body: dict[str, Any], *, chat: bool
) -> dict[str, Any]:
    """Render and call a `protocol: template` record's API; the answer in OpenAI chat or completion shape."""
    record = endpoint.record
    assert record.protocol is Protocol.TEMPLATE and record.template is not None
    prompt = prompt_from_messages(body.get("messages", [])) if chat else str(body.get("prompt", ""))
    try:
        answer = await call_template(
            session, record.template, prompt, model=record.model, temperature=body.get("temperature")
        )
    except TemplateCallError as exc:
        raise status_failure(
            endpoint, exc.status or 502, exc.message, None if exc.retry_after is None else str(exc.retry_after)
        ) from None
    except ExtractError as exc:
        raise APIStatusError(str(exc), status=502, instance_id=endpoint.id) from None
    ticket.end(ok=True)
    usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(answer.split())}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    base = {"id": f"tpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": record.model, "usage": usage}
    if chat:
        return base | {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}]
        }
    return base | {"object": "text_completion", "choices": [{"index": 0, "text": answer, "finish_reason": "stop"}]}


def as_chunk(whole: dict[str, Any], chat: bool) -> dict[str, Any]:
    """A whole answer as the single chunk of a stream."""
    choice = whole["choices"][0]
    if chat:
        delta = {"role": "assistant", "content": choice["message"]["content"]}
        return whole | {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": "stop"}],
        }
    return whole


async def one_chunk(chunk: R) -> AsyncIterator[R]:
    yield chunk
