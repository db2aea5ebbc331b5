"""OpenAI's error object: `{"error": {"message", "type", "param", "code"}}`, written and read.

Workers answer every failure with it, so the official SDK raises its own
class with the worker's message; the client and the `proxy` backend read the
message back out of whatever an instance or a third-party API sent.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["error_body", "read_error"]


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
