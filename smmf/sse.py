"""Reading an OpenAI-style event stream: the JSON of each `data:` line, up to `data: [DONE]`.

The client reads workers' streams with it and the `proxy` backend reads a
third-party API's; they differ only in what an unfinished stream means
(a broken answer for the client, the end of one for the proxy).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

__all__ = ["Unfinished", "json_events"]


class Unfinished(ValueError):
    """The stream ended without `data: [DONE]`."""


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
