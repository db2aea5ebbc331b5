"""The client library: watched instance cache, client-side balancing, failover.

Callers embed this instead of calling a central gateway: `ModelClient` (async),
`SyncModelClient` (scripts) and `httpx_client()` (the official `openai` SDK,
unchanged).  Each layer is a module:

    api.py / sdk.py / sync.py   front ends: the OpenAI shape, the SDK's transport, scripts
    request.py                  one call, as the router sees it
    router.py                   which instance, and whether to retry elsewhere
    balancers.py                the policies that pick (discovery is not theirs)
    cache.py, peer.py           what exists (the watch), and what this client learned of each instance
    transport.py                the seam that reaches one instance, and its `Response`
    stream.py, types.py         answers as pydantic models
    telemetry.py                OpenTelemetry spans and metrics
"""

from typing import TYPE_CHECKING, Any

from ..errors import APIConnectionError, APIError, APIStatusError, NoInstanceAvailable, StreamInterrupted
from .api import ModelClient
from .balancers import policies, register_policy
from .request import Request
from .stream import Stream
from .sync import SyncModelClient
from .telemetry import Telemetry
from .transport import Response, Transport

if TYPE_CHECKING:
    from .sdk import httpx_client

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "ModelClient",
    "NoInstanceAvailable",
    "Request",
    "Response",
    "Stream",
    "StreamInterrupted",
    "SyncModelClient",
    "Telemetry",
    "Transport",
    "httpx_client",
    "policies",
    "register_policy",
]


def __getattr__(name: str) -> Any:
    # The SDK's transport imports httpx2 (or httpx), which only callers of httpx_client() need.
    if name == "httpx_client":
        from .sdk import httpx_client

        return httpx_client
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
