"""`ModelClient`: the OpenAI SDK's shape, balanced across the registry's instances from inside the caller.

    async with ModelClient("etcd://10.0.0.1:2379/smmf") as client:
        reply = await client.chat.completions.create(model="gemma", messages=[...])
        async for chunk in await client.chat.completions.create(model="gemma", messages=[...], stream=True):
            ...

The client watches the registry once and serves every request from that
cache: the request path makes no registry call.  Extra keyword arguments are
passed to the instance as request fields, as the OpenAI SDK's `extra_body`
would be.  Two keywords are smmf's own and are not sent: `policy` (this
call's balancing policy) and `session_key` (for the `affinity` policy).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel

from ..instance import Instance, Protocol
from ..registry_drivers import Registry, open_registry
from .cache import InstanceCache
from .calls import Stream, as_chunk, call_template_instance, fetch, one_chunk, open_stream
from .endpoint import Endpoint, Ticket
from .router import Router
from .telemetry import Call, Telemetry, generated_text
from .types import ChatCompletion, ChatCompletionChunk, Completion, CreateEmbeddingResponse

R = TypeVar("R", bound=BaseModel)

#: How much of a prompt the `affinity` policy hashes when no session key is given.
AFFINITY_PREFIX = 512


def affinity_key(body: dict[str, Any], session_key: str | None) -> str | None:
    if session_key is not None:
        return session_key
    if "messages" in body:
        text = "".join(str(m.get("content", "")) for m in body["messages"] if isinstance(m, dict))
    else:
        text = str(body.get("prompt", body.get("input", "")))
    return text[:AFFINITY_PREFIX] or None


class ModelClient:
    def __init__(
        self,
        registry: str | Registry | None = None,
        policy: str = "least_loaded",
        *,
        max_retries: int = 2,
        timeout: float = 600.0,
        connect_timeout: float = 5.0,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._registry = registry if isinstance(registry, Registry) else open_registry(registry)
        self._owns_registry = not isinstance(registry, Registry)
        self.cache = InstanceCache(self._registry)
        self.router = Router(self.cache, policy, max_retries)
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None
        self.telemetry = telemetry or Telemetry()
        self.chat = _Chat(self)
        self.completions = _Completions(self)
        self.embeddings = _Embeddings(self)

    async def __aenter__(self) -> ModelClient:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        )
        await self.cache.start()

    async def close(self) -> None:
        await self.cache.close()
        if self._session is not None:
            await self._session.close()
        if self._owns_registry:
            await self._registry.close()

    def feedback(self, response_id: str, score: float, comment: str | None = None) -> bool:
        """Attach a user's rating to the call that produced `response_id` (needs the otel extra)."""
        return self.telemetry.feedback(response_id, score, comment)

    def models(self) -> dict[str, list[Instance]]:
        """The models and instances currently known, from the cache."""
        return {model: [ep.record for ep in self.cache.endpoints(model)] for model in self.cache.known_models()}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the client as `async with ModelClient(...) as client` (or await client.start())")
        return self._session

    async def request(
        self,
        path: str,
        body: dict[str, Any],
        parse: type[R],
        chunk: type[BaseModel] | None = None,
        *,
        policy: str | None = None,
        session_key: str | None = None,
    ) -> R | Stream[Any]:
        """One call through the router: `parse` for a whole answer, `chunk` for each piece of a stream."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ValueError("model is required")
        stream = bool(body.get("stream")) and chunk is not None
        chat = path == "/chat/completions"
        chosen = policy or self.router.policy
        key = affinity_key(body, session_key) if chosen == "affinity" else None
        call = self.telemetry.call(OPERATIONS[path], body, chosen)

        async def template(endpoint: Endpoint, ticket: Ticket) -> Any:
            whole = await call_template_instance(self.session, endpoint, ticket, body, chat=chat)
            result = chunk.model_validate(as_chunk(whole, chat)) if stream and chunk else parse.model_validate(whole)
            result.instance_id = endpoint.id
            return Stream(one_chunk(result), endpoint.id) if stream else result

        def send(endpoint: Endpoint, ticket: Ticket) -> Awaitable[Any]:
            # A plain function handing back the coroutine: one coroutine frame fewer on every resume of the call.
            call.instance(endpoint)
            if endpoint.record.protocol is Protocol.TEMPLATE:
                return template(endpoint, ticket)
            if stream:
                return open_stream(self.session, endpoint, ticket, path, body, chunk)  # type: ignore[arg-type]
            return fetch(self.session, endpoint, ticket, path, body, parse)

        try:
            result = await self.router.run(model, send, policy=policy, key=key, on_retry=call.retry)
        except BaseException as exc:
            call.finish(error=exc)
            raise
        if isinstance(result, Stream):
            # Telemetry off: the stream as it is, without a generator in the way of every chunk.
            return Stream(_observed(result, call), result.instance_id) if call.recording else result
        call.finish(result)
        return result


OPERATIONS = {"/chat/completions": "chat", "/completions": "text_completion", "/embeddings": "embeddings"}


async def _observed(stream: Stream[Any], call: Call) -> AsyncIterator[Any]:
    """Pass a stream through, timing its first chunk and closing the call's span when it ends."""
    last, parts = None, []
    try:
        async with aclosing(stream) as chunks:
            async for chunk in chunks:
                call.first_token()
                if call.capturing:
                    parts.append(generated_text(chunk) or "")
                last = chunk
                yield chunk
    except GeneratorExit:
        call.finish(last, text="".join(parts))
        raise
    except BaseException as exc:
        call.finish(last, error=exc, text="".join(parts))
        raise
    call.finish(last, text="".join(parts))


def _body(kwargs: dict[str, Any]) -> tuple[dict[str, Any], str | None, str | None]:
    policy = kwargs.pop("policy", None)
    session_key = kwargs.pop("session_key", None)
    extra = kwargs.pop("extra_body", None) or {}
    return {k: v for k, v in kwargs.items() if v is not None} | extra, policy, session_key


class _ChatCompletions:
    def __init__(self, client: ModelClient) -> None:
        self._client = client

    def create(self, **kwargs: Any) -> Awaitable[ChatCompletion | Stream[ChatCompletionChunk]]:
        body, policy, key = _body(kwargs)
        return self._client.request(
            "/chat/completions", body, ChatCompletion, ChatCompletionChunk, policy=policy, session_key=key
        )


class _Chat:
    def __init__(self, client: ModelClient) -> None:
        self.completions = _ChatCompletions(client)


class _Completions:
    def __init__(self, client: ModelClient) -> None:
        self._client = client

    def create(self, **kwargs: Any) -> Awaitable[Completion | Stream[Completion]]:
        body, policy, key = _body(kwargs)
        return self._client.request("/completions", body, Completion, Completion, policy=policy, session_key=key)


class _Embeddings:
    def __init__(self, client: ModelClient) -> None:
        self._client = client

    def create(self, **kwargs: Any) -> Awaitable[CreateEmbeddingResponse]:
        body, policy, key = _body(kwargs)
        return self._client.request(  # type: ignore[return-value]
            "/embeddings", body, CreateEmbeddingResponse, policy=policy, session_key=key
        )
