"""OpenAI-shaped results as pydantic models; fields OpenAI adds later are kept, not dropped.

Every result also says which instance produced it (`instance_id`), which the
OpenAI shape has no place for.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..wire.responses import PromptTokensDetails, Usage

__all__ = [
    "Answer",
    "ChatChoice",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatMessage",
    "ChoiceDelta",
    "ChunkChoice",
    "Completion",
    "CompletionChoice",
    "CreateEmbeddingResponse",
    "Embedding",
    "PromptTokensDetails",
    "Usage",
]


class _Result(BaseModel):
    model_config = ConfigDict(extra="allow")


class Answer(_Result):
    """A top-level result: it also says which instance produced it.

    `instance_id` is a field left out of `model_dump()`, not a pydantic
    private attribute: private attributes run a post-init hook on every
    result, a measurable share of the client's per-request cost.  It lives
    on top-level results only, not on each nested choice.
    """

    instance_id: str | None = Field(default=None, exclude=True)


class ChatMessage(_Result):
    role: str = "assistant"
    content: str | None = None


class _Choice(_Result):
    index: int = 0
    finish_reason: str | None = None


class ChatChoice(_Choice):
    message: ChatMessage


class _Response(Answer):
    """What every generation result and chunk carries besides its choices."""

    id: str
    created: int = 0
    model: str
    usage: Usage | None = None


class ChatCompletion(_Response):
    object: str = "chat.completion"
    choices: list[ChatChoice]


class ChoiceDelta(_Result):
    role: str | None = None
    content: str | None = None


class ChunkChoice(_Choice):
    delta: ChoiceDelta


class ChatCompletionChunk(_Response):
    object: str = "chat.completion.chunk"
    choices: list[ChunkChoice]


class CompletionChoice(_Choice):
    text: str


class Completion(_Response):
    object: str = "text_completion"
    choices: list[CompletionChoice]


class Embedding(_Result):
    object: str = "embedding"
    index: int
    embedding: list[float]


class CreateEmbeddingResponse(Answer):
    object: str = "list"
    data: list[Embedding]
    model: str
    usage: Usage | None = None
