"""Running blocking engines (llama.cpp, sentence-transformers) without blocking the event loop.

Each engine gets one thread of its own: the engines are not safe to call
from two threads at once, and one thread also keeps their work in order.
A cancelled consumer (a client that disconnected) sets a flag the engine's
loop checks between tokens, and the consumer waits for the thread to stop,
so a freed slot really is free.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_END = object()


class EngineThread:
    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def iterate(self, produce: Callable[[threading.Event], Iterator[T]]) -> AsyncIterator[T]:
        """Items of `produce(cancelled)` as the engine thread makes them; stops the thread when abandoned."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[object, BaseException | None]] = asyncio.Queue()
        cancelled = threading.Event()

        def send(item: object, error: BaseException | None = None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (item, error))
            except RuntimeError:  # the loop is gone: nobody is listening
                cancelled.set()

        def run() -> None:
            try:
                for item in produce(cancelled):
                    if cancelled.is_set():
                        break
                    send(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
                send(_END, exc)
            else:
                send(_END)

        done = loop.run_in_executor(self._executor, run)
        try:
            while True:
                item, error = await queue.get()
                if item is _END:
                    if error is not None:
                        raise error
                    return
                yield item  # type: ignore[misc]
        finally:
            cancelled.set()
            await asyncio.shield(done)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
