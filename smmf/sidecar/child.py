"""Supervising the worker process a sidecar starts: restart with backoff, stop on request.

The child runs in its own process group, so a Ctrl-C meant for the sidecar
does not kill it before the sidecar has drained it.  On Linux it also gets
SIGTERM if the sidecar dies (even by SIGKILL), so no worker outlives its
sidecar unregistered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable

from ..backoff import Backoff
from .procfs import descendants, listeners

__all__ = ["Child", "dying_with_parent"]

log = logging.getLogger(__name__)

#: A child that stayed up this long resets the restart backoff.
STABLE_AFTER = 30.0
_PR_SET_PDEATHSIG = 1


# Runs as the child's first program, then becomes the command: asks Linux to SIGTERM it when the sidecar dies.
# A `preexec_fn` would do this inside the forked child instead, which crashes when the sidecar has gRPC threads
# (etcd driver): Python code after fork() in a multi-threaded process is not safe.
_EXEC_DYING_WITH_PARENT = (
    "import ctypes, os, sys\n"
    "try:\n"
    f"    ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, {int(signal.SIGTERM)})\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def dying_with_parent(command: list[str]) -> list[str]:
    """`command`, started so that Linux sends it SIGTERM when this process dies, even by SIGKILL.

    The signal follows the thread that started the child: start it from a
    thread that lives as long as the process (the event loop's).
    """
    if sys.platform != "linux":
        return command
    return [sys.executable, "-c", _EXEC_DYING_WITH_PARENT, str(os.getpid()), *command]


class Child:
    """The server a sidecar starts: restarted with backoff when it exits, until `stop()`.

    `on_exit(code, uptime)` is told of every exit that was not asked for.
    """

    def __init__(self, command: list[str], on_exit: Callable[[int, float], Awaitable[None]]) -> None:
        self.command = command
        self._on_exit = on_exit
        self._proc: asyncio.subprocess.Process | None = None
        self._backoff = Backoff(base=1.0, cap=30.0)
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def _spawn(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(*dying_with_parent(self.command), start_new_session=True)
        log.info("child started: pid %d: %s", self._proc.pid, " ".join(self.command))

    async def start(self) -> None:
        await self._spawn()
        self._task = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        while not self._stopping:
            assert self._proc is not None
            started = time.monotonic()
            code = await self._proc.wait()
            if self._stopping:
                return
            if time.monotonic() - started > STABLE_AFTER:
                self._backoff.reset()
            delay = self._backoff.next_delay()
            uptime = time.monotonic() - started
            log.warning(
                "child pid %d exited with %d after %.1fs; restarting in %.1fs", self._proc.pid, code, uptime, delay
            )
            await self._on_exit(code, uptime)
            await asyncio.sleep(delay)
            if self._stopping:
                return
            await self._spawn()
            self.restarts += 1
            log.info("child restarted (%d restarts)", self.restarts)

    async def restart(self, timeout: float = 20.0) -> None:
        """Stop the child and start it again now (an operator's restart, not a crash)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
        await self._terminate(timeout)
        self._stopping = False
        await self._spawn()
        self.restarts += 1
        log.info("child restarted on request (%d restarts)", self.restarts)
        self._task = asyncio.create_task(self._supervise())

    async def stop(self, timeout: float = 20.0) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
        await self._terminate(timeout)

    async def _terminate(self, timeout: float) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            log.warning("child pid %d ignored SIGTERM for %.0fs; killing it", proc.pid, timeout)
            proc.kill()
            await proc.wait()

    def serves(self, port: int) -> bool | None:
        """Whether the process listening on `port` here is this child or one of its descendants.

        None when that cannot be told: nothing local listens on the port (the
        server is elsewhere), or /proc does not say (not Linux, or another
        user's process that this one may not inspect).
        """
        pids = listeners(port)
        if not pids or self._proc is None:
            return None
        return bool(pids & ({self._proc.pid} | descendants(self._proc.pid)))

    def kill_now(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
