"""Running a worker: bind, print the URL, serve until SIGTERM/SIGINT, shut down cleanly.

The bound URL is the first line on stdout (useful with `--port 0`), so a
script or a sidecar can start a worker on a free port and read where it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from aiohttp import web

from .app import Worker

log = logging.getLogger(__name__)


async def serve(worker: Worker, host: str = "127.0.0.1", port: int = 0) -> None:
    # aiohttp has one timer for idle connections and for headers that never finish (its keepalive
    # timeout), so slowloris sockets are closed with idle ones.
    runner = web.AppRunner(
        worker.application(), handler_cancellation=True, access_log=None, keepalive_timeout=worker.header_timeout
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    shown_host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    print(f"http://{shown_host}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        loading = asyncio.create_task(worker.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if loading.done():
            loading.result()  # a model that failed to load ends the worker with its error
            await stopping
        else:
            loading.cancel()
    finally:
        log.info("worker stopping")
        with contextlib.suppress(Exception):
            await runner.cleanup()
        await worker.close()


def run(worker: Worker, host: str, port: int) -> int:
    try:
        asyncio.run(serve(worker, host, port))
    except OSError as exc:
        print(f"smmf worker: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
