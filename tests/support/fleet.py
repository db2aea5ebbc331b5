"""A small fleet for client tests: sim workers behind real sidecars, registered in a real registry."""

from __future__ import annotations

import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from smmf.registry import open_registry

from .etcd import free_port
from .processes import SmmfProcess


@dataclass
class Member:
    sidecar: SmmfProcess
    port: int
    weight: float

    @property
    def worker_pid(self) -> int:
        (pid,) = self.sidecar.children()
        return pid


class Fleet:
    """`weights` sim workers of one model, each with a sidecar; `start()` waits until all are registered."""

    def __init__(
        self,
        url: str,
        model: str,
        weights: list[float],
        log_dir: Path,
        sim_args: tuple[str, ...] = (),
        member_args: list[tuple[str, ...]] | None = None,
        load_interval: float = 0.5,
    ):
        self.url = url
        self.model = model
        self.members: list[Member] = []
        for i, weight in enumerate(weights):
            own = member_args[i] if member_args else ()
            port = free_port()
            sidecar = SmmfProcess(
                ["sidecar", "--registry", url, "--model", model, "--upstream", f"http://127.0.0.1:{port}",
                 "--weight", str(weight), "--ttl", "3", "--probe-interval", "0.5",
                 "--load-interval", str(load_interval),
                 "--", sys.executable, "-m", "smmf.cli", "worker", "sim", "--model", model, "--port", str(port),
                 "--max-concurrency", "64", *sim_args, *own],
                log_dir,
            )  # fmt: skip
            self.members.append(Member(sidecar, port, weight))

    def start(self, timeout: float = 60.0) -> Fleet:
        """Start every member and wait until all are registered; on failure, stop them all before raising."""
        try:
            for member in self.members:
                member.sidecar.start(expect_url=False)
            # Its own loop on a helper thread: the caller may be inside a running event loop (an async test).
            with ThreadPoolExecutor(1) as helper:
                helper.submit(asyncio.run, self._wait(len(self.members), timeout)).result()
        except BaseException:
            self.stop()
            raise
        return self

    async def _wait(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with open_registry(self.url) as registry:
            while len((await registry.list(self.model)).records) < count:
                if time.monotonic() > deadline:
                    logs = "\n".join(m.sidecar.log()[-1500:] for m in self.members)
                    raise RuntimeError(f"fleet not registered after {timeout}s:\n{logs}")
                await asyncio.sleep(0.1)

    def instance_of(self, member: Member) -> str:
        return f"127.0.0.1:{member.port}-"

    def stop(self) -> None:
        for member in self.members:
            member.sidecar.stop()
