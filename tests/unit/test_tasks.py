"""A background task stops for certain, even when one cancellation is lost."""

from __future__ import annotations

import asyncio

from smmf.tasks import cancel_and_wait


async def test_a_task_that_swallows_one_cancellation_still_stops() -> None:
    """The task loses the first cancellation, as a loop inside 3.11's wait_for can, and must still end."""
    lost = asyncio.Event()
    rounds = 0

    async def stubborn() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if lost.is_set():
                    raise
                lost.set()  # carries on with its loop, as if its call had just returned

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), 30)
    assert task.cancelled() and lost.is_set() and rounds == 2


async def test_a_finished_task_is_left_as_it_was() -> None:
    async def done() -> int:
        return 1

    task = asyncio.create_task(done())
    await task
    await cancel_and_wait(task)
    assert task.result() == 1
