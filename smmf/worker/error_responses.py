"""The failures a worker answers with, as `ErrorResponse`s, and their HTTP form.

Every failure a worker reports goes through `ErrorResponse`: bad input is a
400 (`BadRequestError` in the SDK), an unknown model a 404, overload a 429
with `Retry-After`.  Nothing reaches a caller as a 500 with a traceback.
"""

from __future__ import annotations

import json

from aiohttp import web

from ..errors import ErrorResponse
from ..wire.errors import error_body
from ..wire.retry_after import format_retry_after

__all__ = [
    "bad_request",
    "body_of",
    "http_response",
    "model_not_found",
    "overloaded",
    "server_error",
    "upstream_error",
]


def body_of(error: ErrorResponse) -> dict[str, dict[str, str | None]]:
    """OpenAI's error object for `error`: the whole body of an error response, or one event of a broken stream."""
    return error_body(error.message, type=error.type, param=error.param, code=error.code)


def http_response(error: ErrorResponse) -> web.Response:
    headers = {} if error.retry_after is None else {"Retry-After": format_retry_after(error.retry_after)}
    return web.Response(
        status=error.status, text=json.dumps(body_of(error)), content_type="application/json", headers=headers
    )


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ErrorResponse:
    return ErrorResponse(400, message, param=param, code=code)


def model_not_found(model: str, served: str) -> ErrorResponse:
    return ErrorResponse(
        404,
        f"The model {model!r} does not exist on this worker; it serves {served!r}.",
        param="model",
        code="model_not_found",
    )


def overloaded(retry_after: float) -> ErrorResponse:
    return ErrorResponse(
        429, "The worker is at capacity; retry after the indicated delay.", type="rate_limit_error",
        code="worker_overloaded", retry_after=retry_after,
    )  # fmt: skip


def upstream_error(status: int, message: str, retry_after: float | None = None) -> ErrorResponse:
    return ErrorResponse(status, message, type="upstream_error", code="upstream_error", retry_after=retry_after)


def server_error(message: str, status: int = 500) -> ErrorResponse:
    return ErrorResponse(status, message, type="server_error", code="server_error")
