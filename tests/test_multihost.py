"""smmf across hosts: etcd, two workers and a caller on four test hosts made of network namespaces.

Each worker host runs a sim worker behind a real sidecar that advertises the
host's own address; the caller host runs `ModelClient` under steady load
(`tests.support.netns_caller`); the test process watches the registry from
the bridge.  Links are cut with `ip link set ... down`, and a partition is
a pair of blackhole routes.  Every namespace, link and address is the
test's own and is removed afterwards.  Skipped, saying why, where
namespaces cannot be made (not root).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from smmf.registry import open_registry
from smmf.sidecar.child import dying_with_parent
from tests.support.etcd import EtcdCluster
from tests.support.netns import Host, Network, available
from tests.support.processes import ROOT, SmmfProcess, stop_process

REASON = available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"multi-host tests need network namespaces: {REASON}")

TTL = 3.0
PORT = 8080
#: A deadline for things that take seconds on a loaded 2-core machine, not a speed claim.
DEADLINE = 60.0


@dataclass
class Rig:
    network: Network
    registry_host: Host
    workers: list[Host]
    caller_host: Host
    url: str
    model: str
    log: Path
    sidecars: list[SmmfProcess] = field(default_factory=list)

    def instance(self, host: Host) -> str:
        return f"{host.address}:{PORT}-"

    def answers(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def answered_by(self, host: Host, after: float = 0.0) -> list[float]:
        prefix = self.instance(host)
        return [a["t"] for a in self.answers() if a["t"] >= after and (a.get("instance") or "").startswith(prefix)]

    def timeline(self, since: float) -> str:
        """Answers per second since `since`, by host, for a failure message."""
        rows: dict[int, dict[str, int]] = {}
        for a in self.answers():
            second = int(a["t"] - since)
            who = "error" if "error" in a else a["instance"].split(":")[0]
            rows.setdefault(second, {}).setdefault(who, 0)
            rows[second][who] += 1
        return "; ".join(f"{s}s {counts}" for s, counts in sorted(rows.items()) if s >= -2)

    def errors(self) -> list[dict[str, Any]]:
        return [a for a in self.answers() if "error" in a]

    async def registered(self) -> set[str]:
        async with open_registry(self.url) as registry:
            return {r.id for r in (await registry.list(self.model)).records if r.state.value == "up"}

    async def host_registered(self, host: Host) -> bool:
        return any(i.startswith(self.instance(host)) for i in await self.registered())


async def until(check: Any, what: str, timeout: float = DEADLINE) -> float:
    """Poll `check` (sync or async) until truthy; the time it came true."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.time()
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g}s"
        await asyncio.sleep(0.1)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    network = Network()
    cluster: EtcdCluster | None = None
    caller: subprocess.Popen[bytes] | None = None
    rig: Rig | None = None
    try:
        registry_host = network.add("etcd")
        workers = [network.add("w1"), network.add("w2")]
        caller_host = network.add("caller")
        cluster = EtcdCluster(tmp_path / "etcd", host=registry_host.address, prefix=tuple(registry_host.run)).start()
        model = f"m-{uuid.uuid4().hex[:6]}"
        url = cluster.url("/multihost")
        rig = Rig(network, registry_host, workers, caller_host, url, model, tmp_path / "calls.jsonl")
        for host in workers:
            sidecar = SmmfProcess(
                ["sidecar", "--registry", rig.url, "--model", model, "--upstream", f"http://127.0.0.1:{PORT}",
                 "--advertise", f"http://{host.address}:{PORT}", "--ttl", str(TTL), "--probe-interval", "0.5",
                 "--load-interval", "0.5", "--", sys.executable, "-m", "smmf.cli", "worker", "sim", "--model", model,
                 "--host", "0.0.0.0", "--port", str(PORT), "--ttft-ms", "0", "--tpot-ms", "1"],
                tmp_path, prefix=host.run,
            )  # fmt: skip
            rig.sidecars.append(sidecar.start(expect_url=False))
        # On a helper thread with its own loop: the test's loop may be running already.
        with ThreadPoolExecutor(1) as helper:
            helper.submit(asyncio.run, until(lambda: _count(rig.registered(), 2), "both sidecars registering")).result()
        with open(tmp_path / "caller.log", "wb") as log:
            caller = subprocess.Popen(
                dying_with_parent(
                    [*caller_host.run, sys.executable, "-m", "tests.support.netns_caller", rig.url, model, str(rig.log)]
                ),
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            )  # fmt: skip
        yield rig
    finally:
        if caller is not None:
            stop_process(caller)
        for sidecar in rig.sidecars if rig is not None else []:
            sidecar.stop()
        if cluster is not None:
            cluster.stop()
        network.close()


async def both_serve(rig: Rig) -> float:
    """Wait until the caller has been answered by both hosts, by their advertised addresses."""
    return await until(lambda: all(rig.answered_by(h) for h in rig.workers), "answers from both worker hosts")


async def test_a_worker_host_cut_off_costs_no_request_and_comes_back(rig: Rig) -> None:
    await both_serve(rig)
    lost, kept = rig.workers
    rig.network.cut(lost)
    gone = await until(lambda: _not(rig.host_registered(lost)), "the cut host's record expiring")
    await until(lambda: rig.answered_by(kept, after=gone + 2), "answers after the record expired")
    assert not rig.answered_by(lost, after=gone + 1), "the caller stopped using the cut host"

    rig.network.restore(lost)
    back = await until(lambda: rig.host_registered(lost), "the host registering again")
    await until(lambda: rig.answered_by(lost, after=back), "answers from the host after its link came back")
    assert rig.errors() == [], "no non-streaming request failed"


async def test_the_registry_host_cut_off_for_30_s_costs_no_request(rig: Rig) -> None:
    await both_serve(rig)
    cut = time.time()
    rig.network.cut(rig.registry_host)
    await asyncio.sleep(30)
    rig.network.restore(rig.registry_host)
    restored = time.time()
    # least_loaded sends most of a light load to the faster instance, so "kept serving" is about answers,
    # not about both hosts.
    during = [a for a in rig.answers() if cut + 5 <= a["t"] < restored and "instance" in a]
    assert len(during) > 100, f"clients kept serving from their cache: {rig.timeline(cut)}"
    await until(lambda: _count(rig.registered(), 2), "both sidecars registered again")
    await until(lambda: any(rig.answered_by(h, after=restored + 1) for h in rig.workers), "answers after")
    assert rig.errors() == [], "no non-streaming request failed"


async def test_a_worker_host_cut_off_from_the_registry_only_is_withdrawn(rig: Rig) -> None:
    await both_serve(rig)
    lonely, kept = rig.workers
    parted = time.time()
    rig.network.partition(lonely, rig.registry_host)
    await until(lambda: _not(rig.host_registered(lonely)), "the partitioned host's record expiring")
    await until(lambda: rig.answered_by(kept, after=parted + TTL + 3), "answers after the withdrawal")
    last = max(rig.answered_by(lonely), default=0.0)
    assert last <= parted + TTL + 1, f"the caller still used the host {last - parted:.1f}s after the partition"
    assert rig.errors() == []
    rig.network.heal(lonely, rig.registry_host)
    await until(lambda: rig.host_registered(lonely), "the host registering again after the partition healed")


async def _not(check: Any) -> bool:
    return not await check


async def _count(check: Any, expected: int) -> bool:
    return len(await check) >= expected
