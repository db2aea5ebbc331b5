"""Worker backends by name; each is imported only when chosen, so optional engines cost nothing."""

from __future__ import annotations

from importlib import import_module

from .base import Backend

#: CLI name → "module:Class", relative to this package.
BACKENDS: dict[str, str] = {
    "sim": "sim:SimBackend",
    "llama-cpp": "llama_cpp:LlamaCppBackend",
    "embedding": "embedding:EmbeddingBackend",
    "proxy": "proxy:ProxyBackend",
    "template": "template:TemplateBackend",
    "vllm": "vllm:VllmBackend",
}


def backend_class(name: str) -> type[Backend]:
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(import_module(f"{__name__}.{module}"), cls)


__all__ = ["BACKENDS", "Backend", "backend_class"]
