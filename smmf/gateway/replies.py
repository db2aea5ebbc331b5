"""The management API's answers: `{"success": true, "msg": ...}` or `{"success": false, "msg": ...}` with a status.

The shape follows the multi-model management API smmf implements, so tools
written for it read smmf's answers unchanged; extra keys ride alongside.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import NotConfirmed, RecordRejected, RegistryUnavailable, SmmfError, UnknownInstance, UsageError

__all__ = ["failed", "failure_of", "succeeded"]


def succeeded(msg: str, **extra: Any) -> web.Response:
    return web.json_response({"success": True, "msg": msg, **extra})


def failed(status: int, msg: str) -> web.Response:
    return web.json_response({"success": False, "msg": msg}, status=status)


def failure_of(error: SmmfError) -> web.Response:
    """An error from the registry or a management step, as the answer it should be; unknown kinds are 500."""
    if isinstance(error, UnknownInstance):
        return failed(404, str(error))
    if isinstance(error, UsageError | RecordRejected):
        return failed(400, str(error))
    if isinstance(error, NotConfirmed):
        return failed(504, str(error))
    if isinstance(error, RegistryUnavailable):
        return failed(503, str(error))
    return failed(500, str(error))
