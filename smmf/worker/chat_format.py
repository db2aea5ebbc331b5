"""Turning chat messages into a prompt for models whose files carry no chat template.

The bundled Gemma 3 270M GGUF has none, so the Gemma turn format is applied
here, explicitly, the same way for llama.cpp and for vLLM.  Gemma has no
system role: system (and developer) text is put before the first user turn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .protocol import Message


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
