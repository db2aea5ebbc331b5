"""The seam where model engines plug into a worker.

A backend turns one validated request into generated text (`generate`, a
stream of `Delta`s whose last one carries the finish reason and usage) or
into vectors (`embed`).  The HTTP app owns everything else — validation,
admission, streaming, metrics, error shapes — so a new engine is one small
module.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import ClassVar

from ...instance import Kind
from ...wire.routes import Route
from ..error_responses import bad_request
from ..requests import ChatRequest, CompletionRequest, Delta, EmbeddingRequest

__all__ = ["Backend"]


class Backend:
    #: What the instance record's `backend` field says about this engine.
    name: ClassVar[str]
    #: Set on engines that do not run a real model, and shown in /v1/models.
    simulated: ClassVar[bool] = False

    kind: Kind = Kind.LLM
    #: The API routes this engine serves; the others answer 400.
    routes: frozenset[Route] = frozenset({"chat", "completions"})
    #: The model's context window in tokens, when the engine knows it: the default ceiling on `max_tokens`.
    context_length: int | None = None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add this backend's command-line options."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Backend:
        raise NotImplementedError

    async def start(self) -> None:
        """Load the model; the worker answers /health with 503 until this returns."""

    async def close(self) -> None:
        """Free the model and any connections."""

    def generate(self, request: ChatRequest | CompletionRequest) -> AsyncIterator[Delta]:
        raise bad_request(f"The {self.name} backend does not generate text.", code="unsupported_endpoint")

    def prefix_cache_counts(self) -> tuple[int, int] | None:
        """Prompt tokens looked up in the engine's prefix cache, and those found, since start; None without one."""
        return None

    async def embed(self, request: EmbeddingRequest) -> tuple[list[list[float]], int]:
        """Vectors for `request.texts`, and the number of prompt tokens they took."""
        raise bad_request(f"The {self.name} backend does not compute embeddings.", code="unsupported_endpoint")
