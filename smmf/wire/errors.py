"""OpenAI's error object: `{"error": {"message", "type", "param", "code"}}`, written and read.

Workers answer every failure with it, so the official SDK raises its own
class with the worker's message; the client and the `proxy` backend read the
message back out of whatever an instance or a third-party API sent.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import APIConnectionError, APIStatusError, NoInstanceAvailable, RegistryUnavailable, SmmfError, UsageError

__all__ = ["error_body", "read_error", "routing_failure"]


def error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, dict[str, str | None]]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def read_error(text: str) -> tuple[str | None, Any]:
    """The message of an error body (None when it has none we recognise), and the body parsed, else as text.

    Besides OpenAI's shape this accepts `{"error": "text"}` and a top-level
    `{"message": ...}`, which several OpenAI-compatible servers send.
    """
    try:
        body = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None, text
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"], body
    if isinstance(error, str):
        return error, body
    return None, body


def routing_failure(error: SmmfError) -> tuple[int, Any] | None:
    """The status and error body to answer with when a routed call failed with `error`; None for other errors.

    Shared by every front end that speaks HTTP for the router (the SDK's
    transport, the gateway), so a caller sees the same answer either way:
    an instance's own error body is passed on as it came.
    """
    if isinstance(error, NoInstanceAvailable):
        return 404, error_body(error.message, type="smmf_error", code="model_not_found")
    if isinstance(error, UsageError):
        return 400, error_body(str(error), type="smmf_error", code="invalid_request")
    if isinstance(error, RegistryUnavailable):
        return 503, error_body(str(error), type="smmf_error", code="registry_unavailable")
    if isinstance(error, APIStatusError):
        body = error.body if isinstance(error.body, dict) else error_body(error.message, type="smmf_error")
        return error.status or 502, body
    if isinstance(error, APIConnectionError):
        return 502, error_body(error.message, type="smmf_error", code="instance_unreachable")
    return None
