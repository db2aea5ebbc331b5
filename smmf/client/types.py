"""OpenAI-shaped results as pydantic models; fields OpenAI adds later are kept, not dropped.

Every result also says which instance produced it (`instance_id`), which the
OpenAI shape has no place for.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, PrivateAttr


class _Result(BaseModel):
    model_config = ConfigDict(extra="allow")
    _instance_id: str | None = PrivateAttr(default=None)

    @property
    def instance_id(self) -> str | None:
        return self._instance_id


class Usage(_Result):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatMessage(_Result):
    role: str = "assistant"
    content: str | None = None


class ChatChoice(_Result):
    index: int = 0
    message: ChatMessage
    finish_reason: str | None = None


class ChatCompletion(_Result):
    id: str
    object: str = "chat.completion"
    created: int = 0
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class ChoiceDelta(_Result):
    role: str | None = None
    content: str | None = None


class ChunkChoice(_Result):
    index: int = 0
    delta: ChoiceDelta
    finish_reason: str | None = None


class ChatCompletionChunk(_Result):
    id: str
    object: str = "chat.completion.chunk"
    created: int = 0
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionChoice(_Result):
    index: int = 0
    text: str
    finish_reason: str | None = None


class Completion(_Result):
    id: str
    object: str = "text_completion"
    created: int = 0
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class Embedding(_Result):
    object: str = "embedding"
    index: int
    embedding: list[float]


class CreateEmbeddingResponse(_Result):
    object: str = "list"
    data: list[Embedding]
    model: str
    usage: Usage | None = None
