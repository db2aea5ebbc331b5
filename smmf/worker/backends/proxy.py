"""`proxy`: forwards to any OpenAI-compatible upstream, streaming passed through as it arrives.

Covers OpenAI, Azure OpenAI, DeepSeek, DashScope's compatible mode, Zhipu,
Ollama, vLLM, TGI and SGLang servers.  The API key is read from the
environment variable named by `--api-key-env`; it never appears on the
command line, in a record or in a log line.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from ...errors import ConfigurationError, ModelLoadError
from ...instance import Kind
from ...wire.responses import Usage
from ...wire.retry_after import parse_retry_after
from ...wire.sse import Unfinished, json_events
from ..error_responses import upstream_error
from ..requests import ChatRequest, CompletionRequest, Delta, EmbeddingRequest
from .base import Backend
from .upstream_errors import upstream_failure


class ProxyBackend(Backend):
    name = "proxy"
    routes = frozenset({"chat", "completions", "embeddings"})

    def __init__(
        self,
        upstream_url: str,
        api_key_env: str | None = None,
        upstream_model: str | None = None,
        timeout: float = 600.0,
        kind: Kind = Kind.LLM,
    ) -> None:
        if not upstream_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"--upstream-url must be an http(s) URL, got {upstream_url!r}")
        self.upstream_url = upstream_url.rstrip("/")
        self.api_key_env = api_key_env
        self._key: str | None = None
        self.upstream_model = upstream_model
        self.timeout = timeout
        self.kind = kind
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--upstream-url", required=True, help="base URL of the upstream API, e.g. .../v1")
        parser.add_argument("--api-key-env", metavar="VAR", help="environment variable that holds the upstream key")
        parser.add_argument("--upstream-model", help="model name to send upstream (default: the requested one)")
        parser.add_argument("--timeout", type=float, default=600.0, help="seconds per upstream request")
        parser.add_argument("--kind", choices=[k.value for k in Kind], default="llm")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ProxyBackend:
        return cls(args.upstream_url, args.api_key_env, args.upstream_model, args.timeout, Kind(args.kind))

    async def start(self) -> None:
        headers = {}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ModelLoadError(
                    f"--api-key-env names {self.api_key_env}, but that environment variable is not set"
                )
            headers["Authorization"] = f"Bearer {key}"
            self._key = key
        self._session = aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _payload(self, request: ChatRequest | CompletionRequest | EmbeddingRequest) -> dict[str, Any]:
        payload = request.model_dump(exclude_none=True)
        payload["model"] = self.upstream_model or request.model
        return payload

    async def _post(self, path: str, payload: dict[str, Any]) -> aiohttp.ClientResponse:
        assert self._session is not None
        try:
            reply = await self._session.post(f"{self.upstream_url}{path}", json=payload)
        except aiohttp.ClientError as exc:
            raise upstream_failure(None, f"{self.upstream_url}: {exc}") from None
        except TimeoutError:
            raise upstream_failure(504, f"no answer within {self.timeout:g}s") from None
        if reply.status >= 400:
            text = await reply.text()
            retry_after = parse_retry_after(reply.headers.get("Retry-After"))
            reply.release()
            raise upstream_failure(reply.status, text, retry_after, sent=self._key)
        return reply

    async def generate(self, request: ChatRequest | CompletionRequest) -> AsyncIterator[Delta]:
        chat = isinstance(request, ChatRequest)
        payload = self._payload(request) | {"stream": True, "stream_options": {"include_usage": True}}
        reply = await self._post("/chat/completions" if chat else "/completions", payload)
        finish: str | None = None
        usage = Usage.counted(0, 0)
        try:
            async for chunk in json_events(reply.content):
                if "error" in chunk:
                    raise upstream_error(502, f"The upstream failed mid-stream: {chunk['error']}")
                if counts := chunk.get("usage"):
                    details = counts.get("prompt_tokens_details")
                    cached = details.get("cached_tokens") if isinstance(details, dict) else None
                    usage = Usage.counted(
                        counts.get("prompt_tokens", 0),
                        counts.get("completion_tokens", 0),
                        cached if isinstance(cached, int) else None,  # an odd upstream's odd detail is dropped
                    )
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                    finish = choice.get("finish_reason") or finish
                    if text:
                        yield Delta(text)
        except Unfinished:
            pass  # an upstream that stops without [DONE] has still sent all it will: finish the answer
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            raise upstream_error(502, f"The upstream stream broke: {exc.__class__.__name__}") from None
        finally:
            reply.release()
        yield Delta("", finish or "stop", usage)

    async def embed(self, request: EmbeddingRequest) -> tuple[list[list[float]], int]:
        reply = await self._post("/embeddings", self._payload(request))
        try:
            body = await reply.json()
            vectors = [item["embedding"] for item in sorted(body["data"], key=lambda d: d["index"])]
            return vectors, int((body.get("usage") or {}).get("prompt_tokens", 0))
        except (aiohttp.ClientError, KeyError, TypeError, ValueError) as exc:
            raise upstream_error(502, f"The upstream's embeddings response was malformed: {exc!r}") from None
        finally:
            reply.release()
