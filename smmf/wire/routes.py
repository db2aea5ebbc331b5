"""The routes of the OpenAI API that smmf serves and balances, by one short name each."""

from __future__ import annotations

from typing import Literal

__all__ = ["PATHS", "Route", "route_of"]

Route = Literal["chat", "completions", "embeddings"]

#: Each route's path below the API's `/v1`.
PATHS: dict[Route, str] = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}

_BY_PATH: dict[str, Route] = {path: route for route, path in PATHS.items()}


def route_of(path: str) -> Route | None:
    """The route of a path below `/v1` (`/chat/completions` → `chat`); None for any other path."""
    return _BY_PATH.get(path.rstrip("/"))
