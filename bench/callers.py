"""Many independent callers for the balancing benchmarks: K processes, each with its own `ModelClient`.

Replicas of an application each balance for themselves and see only their
own requests and what the registry and the workers' responses tell them.
`Callers` starts K such processes (`python -m <module> --caller-of URL
MODEL`, where the module hands its sender to `serve`), deals one run's
arrivals out between them in turn, all starting at one wall-clock time,
pools what they measured, and stops them by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from smmf.client import ModelClient
from smmf.sidecar.child import dying_with_parent

__all__ = ["WARMUP", "Callers", "arrivals", "idle", "latency_row", "pct", "run_main", "serve"]

#: Seconds before measuring starts in each run.
WARMUP = 2.0

#: One run in a caller process: (its client, the model, the run as the parent sent it) -> what it measured.
Sender = Callable[[ModelClient, str, dict[str, Any]], Awaitable[dict[str, Any]]]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def arrivals(rate: float, seconds: float, seed: int, warmup: float = WARMUP) -> list[float]:
    """Poisson arrival offsets over `warmup` plus `seconds`; they depend only on `seed`."""
    rng = random.Random(seed)
    offsets, at = [], 0.0
    while at < warmup + seconds:
        offsets.append(at)
        at += rng.expovariate(rate)
    return offsets


def latency_row(
    callers: int,
    policy: str,
    runs: list[dict[str, Any]],
    series: str,
    label: str = "",
    quantiles: tuple[int, ...] = (50, 99),
) -> dict[str, Any]:
    """What every table of these benchmarks starts with: who, how many, errors, and `series`'s `quantiles` in ms.

    The rounds are pooled: a p99 from a few thousand samples, not a few hundred.
    """
    values = [x for run in runs for x in run[series]]
    return {
        "callers": callers,
        "policy": policy,
        "requests": len(values),
        "errors": sum(run["errors"] for run in runs),
        **{f"{label}p{q}_ms": round(pct(values, q) * 1000, 1) if values else None for q in quantiles},
    }


async def serve(url: str, model: str, send: Sender, setup: Callable[[], None] = lambda: None) -> None:
    """A caller process's life: its own client; runs what the parent sends, one JSON line per run, until EOF."""
    setup()
    async with ModelClient(url) as client:  # returns once the first snapshot arrived
        print("ready", flush=True)
        while line := await asyncio.to_thread(sys.stdin.readline):
            print(json.dumps(await send(client, model, json.loads(line))), flush=True)


async def idle(client: ModelClient, model: str, timeout: float = 30.0) -> None:
    """Wait until every instance has published an idle load, so one policy's backlog does not hurt the next."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(r.load.inflight + r.load.queued == 0 for r in client.models().get(model, [])):
            return
        await asyncio.sleep(0.2)


def run_main(
    arguments: argparse.Namespace,
    send: Sender,
    setup: Callable[[], None],
    main: Callable[[], Coroutine[Any, Any, None]],
) -> None:
    """A benchmark's entry point: a caller process when started with `--caller-of`, else the benchmark itself."""
    if arguments.caller_of:
        url, model = arguments.caller_of
        asyncio.run(serve(url, model, send, setup=setup))
    else:
        asyncio.run(main())


def _pooled(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Lists joined and numbers summed, key by key."""
    pooled: dict[str, Any] = {}
    for result in results:
        for key, value in result.items():
            pooled[key] = pooled.get(key, [] if isinstance(value, list) else 0) + value
    return pooled


class Callers:
    """K caller processes of `module`, started once for every run with that K, and stopped by PID."""

    def __init__(self, module: str, url: str, model: str, count: int) -> None:
        self.module, self.url, self.model, self.count = module, url, model, count
        self.procs: list[asyncio.subprocess.Process] = []

    async def __aenter__(self) -> Callers:
        # Dying with this process: a benchmark stopped by a signal does not leave its callers running.
        command = dying_with_parent([sys.executable, "-m", self.module, "--caller-of", self.url, self.model])
        try:
            for _ in range(self.count):
                self.procs.append(
                    await asyncio.create_subprocess_exec(
                        *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 24
                    )
                )
            for proc in self.procs:
                assert proc.stdout is not None
                if (await asyncio.wait_for(proc.stdout.readline(), 120)).strip() != b"ready":
                    raise RuntimeError("a caller process did not start")
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self, policy: str, arrivals: list[Any], **extra: Any) -> dict[str, Any]:
        """`arrivals` dealt out in turn to the callers, all starting at one wall-clock time; results pooled."""
        begin = time.time() + 1.0
        for i, proc in enumerate(self.procs):
            assert proc.stdin is not None
            run = {"policy": policy, "arrivals": arrivals[i :: self.count], "begin": begin, **extra}
            proc.stdin.write(json.dumps(run).encode() + b"\n")
            await proc.stdin.drain()
        results = []
        for proc in self.procs:
            assert proc.stdout is not None
            results.append(json.loads(await proc.stdout.readline()))
        return _pooled(results)

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                if proc.stdin is not None:
                    proc.stdin.close()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.send_signal(signal.SIGKILL)
                    await proc.wait()
        self.procs = []
