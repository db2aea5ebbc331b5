"""`vllm`: vLLM's async engine in the worker process (`AsyncLLM`, or `AsyncLLMEngine` on older vLLM).

Importable only with the `vllm` extra.  Runs on CPU with vLLM's CPU build
(see the README for the recipe).  Chat prompts use the tokenizer's own chat
template when the model has one, else `--chat-format` (the bundled Gemma
has none).  A client that disconnects aborts its request in the engine.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ...errors import ModelLoadError
from ...wire.responses import Usage
from ..chat_format import DEFAULT_CHAT_TOKENS, FORMATS, check_format, plain_prompt
from ..requests import ChatRequest, CompletionRequest, Delta
from .base import Backend


class VllmBackend(Backend):
    name = "vllm"

    def __init__(
        self,
        model_path: str | None = None,
        max_model_len: int = 1024,
        dtype: str = "bfloat16",
        chat_format: str = "gemma",
        kv_cache_gb: int | None = None,
    ) -> None:
        self.model_path = model_path
        self.max_model_len = max_model_len
        self.dtype = dtype
        self.chat_format = check_format(chat_format)
        self.kv_cache_gb = kv_cache_gb
        self._engine: Any = None
        self._has_template = False

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--model-path", help="Hugging Face model dir (default: the bundled Gemma, converted once)")
        parser.add_argument("--max-model-len", type=int, default=1024)
        parser.add_argument("--dtype", default="bfloat16")
        parser.add_argument("--chat-format", default="gemma", choices=sorted(FORMATS), help="when no chat template")
        parser.add_argument("--kv-cache-gb", type=int, default=None, help="CPU KV cache (sets VLLM_CPU_KVCACHE_SPACE)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> VllmBackend:
        return cls(args.model_path, args.max_model_len, args.dtype, args.chat_format, args.kv_cache_gb)

    async def start(self) -> None:
        from ..bundled import gemma_hf_dir

        if self.kv_cache_gb is not None:
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(self.kv_cache_gb)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from vllm import AsyncEngineArgs
        except ImportError:
            raise ModelLoadError("the vllm backend needs vLLM installed (the vllm extra; see the README)") from None
        try:
            from vllm.v1.engine.async_llm import AsyncLLM as Engine
        except ImportError:  # older vLLM
            from vllm import AsyncLLMEngine as Engine
        path = Path(self.model_path) if self.model_path else gemma_hf_dir()
        args = AsyncEngineArgs(model=str(path), dtype=self.dtype, max_model_len=self.max_model_len)
        self._engine = Engine.from_engine_args(args)
        tokenizer = self._engine.get_tokenizer()
        if hasattr(tokenizer, "__await__"):
            tokenizer = await tokenizer
        self._tokenizer = tokenizer
        self._has_template = bool(getattr(tokenizer, "chat_template", None))

    async def close(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    def _prompt(self, request: ChatRequest | CompletionRequest) -> tuple[str, list[str], int]:
        if isinstance(request, ChatRequest) and self._has_template:
            messages = [{"role": m.role, "content": m.text} for m in request.messages]
            prompt = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return prompt, request.stops, request.token_limit or DEFAULT_CHAT_TOKENS
        return plain_prompt(request, self.chat_format)

    async def generate(self, request: ChatRequest | CompletionRequest) -> AsyncIterator[Delta]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        prompt, stops, limit = self._prompt(request)
        params = SamplingParams(
            max_tokens=limit,
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            stop=stops or None,
            seed=request.seed,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
            output_kind=RequestOutputKind.DELTA,
        )
        generated = 0
        async for output in self._engine.generate({"prompt": prompt}, params, uuid.uuid4().hex):
            piece = output.outputs[0]
            generated += len(piece.token_ids)
            if output.finished:
                usage = Usage.counted(len(output.prompt_token_ids or []), generated, output.num_cached_tokens)
                yield Delta(piece.text, piece.finish_reason or "stop", usage)
            elif piece.text:
                yield Delta(piece.text)
