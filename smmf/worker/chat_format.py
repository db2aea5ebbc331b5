"""Turning chat messages into a prompt for models whose files carry no chat template.

The bundled Gemma 3 270M GGUF has none, so the Gemma turn format is applied
here, explicitly, the same way for llama.cpp and for vLLM.  Gemma has no
system role: system (and developer) text is put before the first user turn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import ConfigurationError
from .requests import ChatRequest, CompletionRequest, Message


def gemma(messages: Sequence[Message]) -> str:
    system = "\n\n".join(m.text for m in messages if m.role in ("system", "developer"))
    turns = []
    for message in messages:
        if message.role in ("system", "developer"):
            continue
        role = "model" if message.role == "assistant" else "user"
        text = message.text
        if system and role == "user":
            text, system = f"{system}\n\n{text}", ""
        turns.append(f"<start_of_turn>{role}\n{text}<end_of_turn>\n")
    return "".join(turns) + "<start_of_turn>model\n"


#: Format name → (render, stop sequences that end a turn).
FORMATS: dict[str, tuple[Callable[[Sequence[Message]], str], list[str]]] = {
    "gemma": (gemma, ["<end_of_turn>"]),
}

#: Defaults when a request sets no limit: OpenAI's for completions, a reply's worth for chat.
DEFAULT_COMPLETION_TOKENS = 16
DEFAULT_CHAT_TOKENS = 256


def check_format(name: str) -> str:
    if name not in FORMATS:
        raise ConfigurationError(f"--chat-format must be one of {', '.join(FORMATS)}")
    return name


def plain_prompt(request: ChatRequest | CompletionRequest, chat_format: str) -> tuple[str, list[str], int]:
    """What a raw-text engine is asked: the prompt, the stop sequences and the token limit."""
    if isinstance(request, ChatRequest):
        render, turn_stops = FORMATS[chat_format]
        return render(request.messages), request.stops + turn_stops, request.token_limit or DEFAULT_CHAT_TOKENS
    return request.text, request.stops, request.token_limit or DEFAULT_COMPLETION_TOKENS
