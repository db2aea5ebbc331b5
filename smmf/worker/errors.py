"""Errors in OpenAI's JSON shape, so the official SDK raises the right class with our message.

Every failure a worker reports goes through `APIError`: bad input is a 400
(`BadRequestError` in the SDK), an unknown model a 404, overload a 429 with
`Retry-After`.  Nothing reaches a caller as a 500 with a traceback.
"""

from __future__ import annotations

import json

from aiohttp import web


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> web.Response:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(self.retry_after)))
        return web.Response(
            status=self.status, text=json.dumps(self.body()), content_type="application/json", headers=headers
        )


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def model_not_found(model: str, served: str) -> APIError:
    return APIError(
        404,
        f"The model {model!r} does not exist on this worker; it serves {served!r}.",
        param="model",
        code="model_not_found",
    )


def overloaded(retry_after: float) -> APIError:
    return APIError(
        429, "The worker is at capacity; retry after the indicated delay.", type="rate_limit_error",
        code="worker_overloaded", retry_after=retry_after,
    )  # fmt: skip


def upstream_error(status: int, message: str, retry_after: float | None = None) -> APIError:
    return APIError(status, message, type="upstream_error", code="upstream_error", retry_after=retry_after)


def server_error(message: str, status: int = 500) -> APIError:
    return APIError(status, message, type="server_error", code="server_error")
