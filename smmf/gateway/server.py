"""Running a gateway: bind, print the URL, serve until SIGTERM/SIGINT, then close open streams and the watch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from .app import Gateway
from .guard import is_loopback

__all__ = ["serve"]

log = logging.getLogger(__name__)

#: Seconds open requests (dashboard feeds, streams) get to finish at shutdown.
SHUTDOWN_TIMEOUT = 5.0


async def serve(gateway: Gateway, host: str, port: int, *, path: str = "") -> None:
    """Serve until a signal; the first line on stdout is the bound URL (with `path`, for `smmf dashboard`)."""
    runner = web.AppRunner(gateway.application(), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await site.start()
    bound = runner.addresses[0]
    shown_host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    print(f"http://{shown_host}:{bound[1]}{path}", flush=True)
    if not is_loopback(host) and gateway.guard.token_env is None:
        log.warning("no --admin-token-env: write endpoints refuse every caller on %s", host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await gateway.start()
        await stop.wait()
    finally:
        log.info("gateway stopping")
        await gateway.feed.close()  # first, so open dashboards' streams end instead of holding up the shutdown
        with contextlib.suppress(Exception):
            await runner.cleanup()
        await gateway.close()
