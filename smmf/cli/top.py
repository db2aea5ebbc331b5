"""`smmf top`: every instance's state and load, live from the registry's watch, for operators without a browser."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter

from ..instance import Instance, State
from ..registry import Delete, Put, Registry, Snapshot, open_registry
from .options import Commands, add_registry_option
from .tables import instance_table

#: On a terminal each view replaces the last: cursor home, clear the screen.
CLEAR = "\x1b[H\x1b[2J"
#: Seconds the first frame waits for the first listing before it says it is waiting.
FIRST_LISTING = 10.0


def _view(url: str, records: dict[str, Instance] | None) -> str:
    stamp = time.strftime("%H:%M:%S")
    if records is None:
        return f"smmf top  {url}  {stamp}  waiting for the registry ...\n"
    states = Counter(r.state for r in records.values())
    summary = ", ".join(f"{states[s]} {s}" for s in State)
    return (
        f"smmf top  {url}  {stamp}  {len(records)} instances: {summary}\n\n{instance_table(list(records.values()))}\n"
    )


async def _follow(registry: Registry, model: str | None, records: dict[str, Instance], changed: asyncio.Event) -> None:
    async for event in registry.watch(model):
        if isinstance(event, Snapshot):
            records.clear()
            records.update(event.items)
        elif isinstance(event, Put):
            records[event.key] = event.value
        elif isinstance(event, Delete):
            records.pop(event.key, None)
        changed.set()


async def _first(changed: asyncio.Event, stop: asyncio.Event) -> None:
    """Until the first listing arrived or the user stopped."""
    waits = [asyncio.ensure_future(changed.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def _top(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tty = sys.stdout.isatty()
    async with open_registry(args.registry) as registry:
        records: dict[str, Instance] = {}
        changed = asyncio.Event()
        follower = asyncio.create_task(_follow(registry, args.model, records, changed))
        shown = 0
        try:
            # The first frame waits a little for the first listing: connecting can take longer than a frame.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(changed, stop), FIRST_LISTING)
            while not stop.is_set() and (args.iterations == 0 or shown < args.iterations):
                view = _view(registry.url, records if changed.is_set() or records else None)
                sys.stdout.write((CLEAR if tty else "") + view + ("" if tty else "\n"))
                sys.stdout.flush()
                shown += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.interval)
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
    return 0


def add_commands(commands: Commands) -> None:
    top = commands.add_parser("top", help="a live view of every instance's state and load (Ctrl-C ends it)")
    add_registry_option(top)
    top.add_argument("--model", help="only this model's instances")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between views")
    top.add_argument("-n", "--iterations", type=int, default=0, help="views to show before exiting (0: until Ctrl-C)")
    top.set_defaults(run=lambda args: asyncio.run(_top(args)))
