"""`Request`: one call as the router sees it, built by either front end (`ModelClient` or the SDK transport).

It carries what a balancer may need (the body, a session key) so a policy
derives its own inputs, and what a transport needs to send it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..wire.routes import Route, route_of

__all__ = ["Request"]


@dataclass(slots=True)
class Request:
    """An OpenAI API call for `model`: POST `body` to `path` (below `/v1`) of one of its instances."""

    model: str
    path: str
    body: dict[str, Any]
    stream: bool = False
    #: This call's balancing policy; None means the client's.
    policy: str | None = None
    #: What the `affinity` policy keeps on one instance; None means the prompt's start.
    session_key: str | None = None

    @property
    def route(self) -> Route | None:
        """Which of the API's generation routes this is (None for a path smmf only passes through)."""
        return route_of(self.path)
