"""OpenAI-style event streams: each event a `data:` line of JSON, the stream ending with `data: [DONE]`.

The worker writes them; the client reads workers' streams and the `proxy`
backend reads a third-party API's.  Readers differ only in what an
unfinished stream means (a broken answer for the client, the end of one for
the proxy), so the reader raises `Unfinished` and lets each decide.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

__all__ = ["DONE", "Unfinished", "event", "json_events"]

#: The last event of every stream.
DONE = b"data: [DONE]\n\n"


class Unfinished(ValueError):
    """The stream ended without `data: [DONE]`."""


def event(data: Any) -> bytes:
    """One event carrying `data` as compact JSON."""
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


async def json_events(lines: AsyncIterable[bytes]) -> AsyncIterator[Any]:
    """Each event's parsed JSON; `json.JSONDecodeError` for a malformed one, `Unfinished` if `[DONE]` never came."""
    async for line in lines:
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        yield json.loads(data)
    raise Unfinished("the stream ended before data: [DONE]")
