"""What a worker says when the HTTP API behind it fails (proxy and template backends).

The caller's own mistakes (400, 413, 422 from upstream) come back as the
same class of error, and upstream rate limits as 429 with their
`Retry-After`.  Everything else — bad credentials, a wrong upstream model
name, an upstream crash or an unreachable host — is this worker's
misconfiguration or its dependency's failure, so it is a 502 (504 for a
timeout) that a client may retry on another instance.
"""

from __future__ import annotations

from ...errors import ErrorResponse
from ...wire.errors import read_error
from ..error_responses import upstream_error

__all__ = ["upstream_failure"]


def _message(text: str) -> str:
    """The upstream's own error message when it sent one, else its text."""
    message, _ = read_error(text)
    return message if message is not None else text.strip()[:300] or "(empty body)"


def upstream_failure(
    status: int | None, text: str, retry_after: float | None = None, *, sent: str | None = None
) -> ErrorResponse:
    """The error to answer with; `status` None means the upstream could not be reached (`text` says why).

    `sent` is the key this worker sent upstream: an upstream that echoes what
    it got (many do, in a 401) must not hand it to every caller.
    """
    if sent:
        text = text.replace(sent, "[redacted]")
    if status is None:
        return upstream_error(502, f"The upstream could not be reached: {text}")
    message = _message(text)
    if status in (400, 422):
        return ErrorResponse(400, f"The upstream rejected the request: {message}", code="upstream_bad_request")
    if status == 413:
        return ErrorResponse(413, f"The upstream says the request is too large: {message}", code="request_too_large")
    if status == 429:
        return upstream_error(429, f"The upstream is rate limiting: {message}", retry_after=retry_after or 1.0)
    if status == 504:
        return upstream_error(504, f"The upstream timed out: {message}")
    if status in (401, 403):
        return upstream_error(502, f"The upstream refused this worker's credentials ({status}): {message}")
    return upstream_error(502, f"The upstream failed ({status}): {message}")
