"""Stopping a background task for certain.

On Python 3.11, `asyncio.wait_for` returns its inner call's result instead
of raising when a cancellation arrives just as that call completes (fixed
in 3.12).  Client libraries use it inside their calls (nacos-sdk-python
does), so one `cancel()` of a task that is inside such a call can be lost:
the task goes on with its loop, and whoever awaits it waits forever.  A
`smmf chat` over Nacos hung on exit that way.
"""

from __future__ import annotations

import asyncio
import contextlib

#: Seconds between cancellations of a task that did not end.
RECANCEL = 0.5


async def cancel_and_wait(task: asyncio.Task[object]) -> None:
    """Cancel `task` and return once it has ended, cancelling again while it runs on."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
