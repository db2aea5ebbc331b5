"""The client library: watched instance cache, client-side balancing, failover.

Callers embed this instead of calling a central gateway: `ModelClient` (async),
`SyncModelClient` (scripts) and `httpx_client()` (the official `openai` SDK,
unchanged).
"""

from .api import ModelClient
from .balancers import policies, register
from .calls import Stream
from .errors import APIConnectionError, APIError, APIStatusError, NoInstanceAvailable, StreamInterrupted
from .sync import SyncModelClient
from .telemetry import Telemetry
from .transport import httpx_client

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "ModelClient",
    "NoInstanceAvailable",
    "Stream",
    "StreamInterrupted",
    "SyncModelClient",
    "Telemetry",
    "httpx_client",
    "policies",
    "register",
]
