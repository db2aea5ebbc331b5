"""`Stream`: a streamed answer as parsed chunks, read from a `Response` as it arrives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from ..errors import StreamInterrupted
from ..wire.sse import Unfinished, json_events
from .transport import Response
from .types import Answer

__all__ = ["Stream", "parse_stream"]

R = TypeVar("R", bound=Answer)


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


def parse_stream(response: Response, chunk: type[R]) -> Stream[R]:
    """The chunks of an event-stream response, each validated as `chunk` and marked with its instance."""
    return Stream(_chunks(response, chunk), response.instance_id)


async def _chunks(response: Response, chunk: type[R]) -> AsyncIterator[R]:
    instance = response.instance_id
    finished = False
    try:
        async for payload in json_events(response.iter_lines()):
            if "error" in payload:
                error = payload["error"]
                message = error.get("message", "error") if isinstance(error, dict) else error
                raise StreamInterrupted(f"{instance}: stream failed: {message}", instance_id=instance, body=payload)
            piece = chunk.model_validate(payload)
            piece.instance_id = instance
            yield piece
        finished = True
    except Unfinished:
        raise StreamInterrupted(f"{instance}: stream ended before [DONE]", instance_id=instance) from None
    except ValueError as exc:  # a malformed event: bad JSON, or not the chunk's shape
        raise StreamInterrupted(f"{instance}: stream broke: {exc.__class__.__name__}", instance_id=instance) from None
    finally:
        response.close(ok=finished)
