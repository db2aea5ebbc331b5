"""`SyncModelClient`: the same client for scripts, run on an event loop in a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from types import TracebackType
from typing import Any, TypeVar

from ..instance import Instance
from ..registry import Registry
from .api import ModelClient
from .stream import Stream

T = TypeVar("T")


class SyncModelClient:
    def __init__(self, registry: str | Registry | None = None, policy: str = "least_loaded", **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="smmf-client", daemon=True)
        self._thread.start()
        self._client = ModelClient(registry, policy, **options)
        self._call(self._client.start())
        self.chat = _Namespace(completions=_Resource(self, self._client.chat.completions))
        self.completions = _Resource(self, self._client.completions)
        self.embeddings = _Resource(self, self._client.embeddings)

    def _call(self, awaitable: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(awaitable, self._loop).result()  # type: ignore[arg-type]

    def _iterate(self, stream: Stream[Any]) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self._call(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._call(stream.aclose())

    def models(self) -> dict[str, list[Instance]]:
        return self._client.models()

    def close(self) -> None:
        if self._loop.is_running():
            self._call(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def __enter__(self) -> SyncModelClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Namespace:
    def __init__(self, **members: Any) -> None:
        self.__dict__.update(members)


class _Resource:
    def __init__(self, owner: SyncModelClient, resource: Any) -> None:
        self._owner = owner
        self._resource = resource

    def create(self, **kwargs: Any) -> Any:
        result = self._owner._call(self._resource.create(**kwargs))
        return self._owner._iterate(result) if isinstance(result, Stream) else result
