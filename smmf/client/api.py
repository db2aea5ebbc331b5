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

Records come from whoever can write the registry, so what the client sends
where is its own decision (`smmf.client.trust`): `credentials` binds an
environment variable to the one host its key may go to, and `allow` limits
the hosts and networks requests may reach at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from contextlib import aclosing
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, cast, overload

import aiohttp

from ..errors import APIStatusError, UsageError
from ..instance import Instance
from ..registry import Registry, open_registry
from ..wire.routes import PATHS, Route
from .cache import InstanceCache
from .request import Request
from .router import Router
from .stream import Stream, parse_stream
from .telemetry import Call, Telemetry, generated_text
from .transport import ProtocolTransport, Response, Transport
from .trust import Trust
from .types import Answer, ChatCompletion, ChatCompletionChunk, Completion, CreateEmbeddingResponse

__all__ = ["ModelClient"]

A = TypeVar("A", bound=Answer)
C = TypeVar("C", bound=Answer)

#: The GenAI semantic conventions' operation name of each route.
OPERATIONS: dict[Route, str] = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}


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
        transport: Transport | None = None,
        credentials: Mapping[str, str] | None = None,
        allow: Iterable[str] | None = None,
    ) -> None:
        self._registry = registry if isinstance(registry, Registry) else open_registry(registry)
        self._owns_registry = not isinstance(registry, Registry)
        self.trust = Trust(credentials, allow)
        self.cache = InstanceCache(self._registry, self.trust)
        self.transport = transport or ProtocolTransport(
            aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout), self.trust
        )
        self.router = Router(self.cache, self.transport, policy, max_retries)
        self.telemetry = telemetry or Telemetry()
        self.chat = Chat(self)
        self.completions = Generations(self, "completions", Completion, Completion)
        self.embeddings = Embeddings(self)

    async def __aenter__(self) -> ModelClient:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Begin watching the registry; returns once the first snapshot arrived (or after a short wait)."""
        await self.cache.start()

    async def close(self) -> None:
        await self.cache.close()
        await self.transport.aclose()
        if self._owns_registry:
            await self._registry.close()

    def feedback(self, response_id: str, score: float, comment: str | None = None) -> bool:
        """Attach a user's rating to the call that produced `response_id` (needs the otel extra)."""
        return self.telemetry.feedback(response_id, score, comment)

    def models(self) -> dict[str, list[Instance]]:
        """The models and instances currently known, from the cache."""
        return {model: [peer.record for peer in self.cache.peers(model)] for model in self.cache.known_models()}

    def openai_models(self) -> dict[str, Any]:
        """`GET /v1/models`' answer from the cache: each model once, with how many instances it has."""
        data = [
            {"id": model, "object": "model", "created": 0, "owned_by": "smmf", "instances": len(records)}
            for model, records in self.models().items()
        ]
        return {"object": "list", "data": data}

    async def request(
        self,
        route: Route,
        body: dict[str, Any],
        answer: type[A],
        chunk: type[C] | None = None,
        *,
        policy: str | None = None,
        session_key: str | None = None,
    ) -> A | Stream[C]:
        """One call through the router: `answer` parses a whole answer, `chunk` each piece of a stream."""
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise UsageError("model is required")
        stream = chunk is not None and bool(body.get("stream"))
        request = Request(model, PATHS[route], body, stream, policy, session_key)
        call = self.telemetry.call(OPERATIONS[route], body, policy or self.router.policy)
        try:
            response = await self.router.send(request, call)
            if chunk is not None and stream:
                chunks = parse_stream(response, chunk)
            else:
                result = _parse_whole(response, answer)
        except BaseException as exc:
            call.finish(error=exc)
            raise
        if stream:
            # Telemetry off: the stream as it is, without a generator in the way of every chunk.
            return Stream(_observed(chunks, call), chunks.instance_id) if call.recording else chunks
        call.finish(result)
        return result


def _parse_whole(response: Response, answer: type[A]) -> A:
    try:
        result = answer.model_validate_json(response.content)  # parsed and validated in one pass by pydantic-core
    except ValueError as exc:
        message = f"{response.instance_id}: malformed response: {exc}"
        raise APIStatusError(message, status=502, instance_id=response.instance_id) from None
    result.instance_id = response.instance_id
    return result


async def _observed(stream: Stream[C], call: Call) -> AsyncIterator[C]:
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


class Generations(Generic[A, C]):
    """`create()` on a generation route: the whole answer, or with `stream=True` a `Stream` of chunks."""

    def __init__(self, client: ModelClient, route: Route, answer: type[A], chunk: type[C]) -> None:
        self._client = client
        self._route = route
        self._answer = answer
        self._chunk = chunk

    @overload
    def create(self, *, stream: Literal[True], **kwargs: Any) -> Awaitable[Stream[C]]: ...

    @overload
    def create(self, *, stream: Literal[False] = False, **kwargs: Any) -> Awaitable[A]: ...

    @overload
    def create(self, *, stream: bool, **kwargs: Any) -> Awaitable[A | Stream[C]]: ...

    def create(self, **kwargs: Any) -> Awaitable[Any]:
        # A plain function handing back the coroutine: one coroutine frame fewer on every resume of the call.
        body, policy, key = _body(kwargs)
        return self._client.request(self._route, body, self._answer, self._chunk, policy=policy, session_key=key)


class Chat:
    def __init__(self, client: ModelClient) -> None:
        self.completions = Generations(client, "chat", ChatCompletion, ChatCompletionChunk)


class Embeddings:
    def __init__(self, client: ModelClient) -> None:
        self._client = client

    def create(self, **kwargs: Any) -> Awaitable[CreateEmbeddingResponse]:
        body, policy, key = _body(kwargs)
        # No chunk type: the answer is never a stream.
        return cast(
            "Awaitable[CreateEmbeddingResponse]",
            self._client.request("embeddings", body, CreateEmbeddingResponse, policy=policy, session_key=key),
        )
