"""OpenAI's response and chunk bodies: built by workers and by the client (for template instances), read by both.

`Usage` is the one token count of the package.  `ResponseBuilder` holds
what every chunk of one response shares (its id and creation time) and
builds the whole answer, each streamed chunk and the closing usage chunk.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["PromptTokensDetails", "ResponseBuilder", "Usage", "embedding_response"]


class PromptTokensDetails(BaseModel):
    """How a response's prompt tokens were spent; only what smmf reads is typed, the rest is kept."""

    model_config = ConfigDict(extra="allow")

    #: Prompt tokens found in the engine's prefix cache (vLLM, OpenAI); None where the engine does not say.
    cached_tokens: int | None = None


class Usage(BaseModel):
    """Token counts of one response; fields OpenAI adds later are kept, not dropped."""

    model_config = ConfigDict(extra="allow")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None

    def body(self) -> dict[str, Any]:
        """The counts as sent: what the engine did not report is left out, not sent as null."""
        return self.model_dump(exclude_none=True)

    @classmethod
    def counted(cls, prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None) -> Usage:
        """Counts as an engine reports them; the total is their sum.

        `cached_tokens`, the prompt tokens found in the prefix cache, goes
        where OpenAI and vLLM put it (`prompt_tokens_details`), so a caller
        can tell per request whether its prefix was found.
        """
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            prompt_tokens_details=None if cached_tokens is None else PromptTokensDetails(cached_tokens=cached_tokens),
        )


@dataclass
class ResponseBuilder:
    """Bodies of one chat or text completion: the whole answer, or its chunks when streamed."""

    kind: Literal["chat", "completion"]
    model: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def response_id(self) -> str:
        return ("chatcmpl-" if self.kind == "chat" else "cmpl-") + self.id

    @property
    def _chunk_object(self) -> str:
        return "chat.completion.chunk" if self.kind == "chat" else "text_completion"

    def _base(self, obj: str) -> dict[str, Any]:
        return {"id": self.response_id, "object": obj, "created": self.created, "model": self.model}

    def whole(self, text: str, finish_reason: str | None, usage: Usage) -> dict[str, Any]:
        if self.kind == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
            return self._base("chat.completion") | {"choices": [choice], "usage": usage.body()}
        choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
        return self._base("text_completion") | {"choices": [choice], "usage": usage.body()}

    def chunk(
        self, text: str | None, finish_reason: str | None, *, first: bool = False, usage: Usage | None = None
    ) -> dict[str, Any]:
        """One streamed piece; the first chat chunk also names the role, and `usage` rides along when given."""
        if self.kind == "chat":
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}
        body = self._base(self._chunk_object) | {"choices": [choice]}
        if usage is not None:
            body["usage"] = usage.body()
        return body

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        """The chunk `stream_options.include_usage` asks for: no choices, only the counts."""
        return self._base(self._chunk_object) | {"choices": [], "usage": usage.body()}


def embedding_response(model: str, vectors: list[list[float]], prompt_tokens: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
