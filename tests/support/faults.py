"""Fault scenarios: three sim workers behind sidecars on etcd, a steady load through `ModelClient`, one fault each.

Shared by the fault tests (`tests/faults`, short runs that assert) and
`bench/faults.py` (the same scenarios, longer, tabulated), so the two can
never disagree on what a scenario is.  Each scenario returns an `Outcome`:
what the load saw (requests sent, answered, failed by kind) and what was
measured about the fault (how long a record took to go or come back).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aetcd

from smmf.admin import AdminAction
from smmf.client import ModelClient
from smmf.errors import StreamInterrupted
from smmf.instance import Instance, State
from smmf.management import control
from smmf.registry import Registry, open_registry
from smmf.registry.keys import instance_key
from smmf.template import HttpTemplate

from .etcd import EtcdCluster
from .fleet import Fleet, Member
from .upstream_app import Upstream

#: The fleet's lease TTL and probe interval (see `Fleet`).
TTL = 3.0
PROBE_INTERVAL = 0.5
MESSAGES = [{"role": "user", "content": "a request under fault"}]
#: The sim answers a token every 50 ms: one token is a shallow queue, 16 a deep one (about 13 per instance at 50/s).
#: Its tokens do not slow down with concurrency (`--slowdown 0`): with the default slowdown two instances
#: cannot carry the 50/s that three did, and a kill becomes an overload (see bench/README.md).
SIM_ARGS = ("--ttft-ms", "0", "--tpot-ms", "50", "--slowdown", "0")
SHALLOW, DEEP = 1, 16


@dataclass
class Outcome:
    scenario: str
    sent: int = 0
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    #: What was measured about the fault, in seconds or counts, by name.
    measured: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def row(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "sent": self.sent, "ok": self.ok, "failed": self.failed,
            "failures": dict(self.failures), **{k: round(v, 3) for k, v in self.measured.items()},
        }  # fmt: skip


@dataclass
class Rig:
    cluster: EtcdCluster
    fleet: Fleet
    client: ModelClient
    url: str

    def instance(self, member: Member) -> str:
        (record,) = [
            r for r in self.client.models()[self.fleet.model] if r.id.startswith(self.fleet.instance_of(member))
        ]
        return record.id

    def fleet_ids(self) -> set[str]:
        """The ids of the fleet's own instances (its sidecars' records)."""
        prefixes = tuple(self.fleet.instance_of(member) for member in self.fleet.members)
        return {r.id for r in self.client.models().get(self.fleet.model, []) if r.id.startswith(prefixes)}

    def state(self, instance_id: str) -> State | None:
        """The instance's state as this client last saw it; None when it has no record."""
        return next((r.state for r in self.client.models().get(self.fleet.model, []) if r.id == instance_id), None)


@asynccontextmanager
async def rig(cluster: EtcdCluster, log_dir: Path, prefix: str = "/faults") -> AsyncIterator[Rig]:
    """Three sim workers with sidecars on `cluster` and a client watching them; all stopped afterwards."""
    url = cluster.url(prefix)
    fleet = Fleet(url, "sim", [1, 1, 1], log_dir, SIM_ARGS)
    await asyncio.to_thread(fleet.start)
    try:
        async with ModelClient(url) as client:
            yield Rig(cluster, fleet, client, url)
    finally:
        await asyncio.to_thread(fleet.stop)


class SteadyLoad:
    """`rate` non-streaming requests a second through the rig's client, each as its own task, outcomes counted."""

    def __init__(self, rig: Rig, outcome: Outcome, rate: float = 50.0, max_tokens: int = SHALLOW) -> None:
        self.rig = rig
        self.outcome = outcome
        self.rate = rate
        self.max_tokens = max_tokens
        #: (start time, instance id) of every answered request.
        self.answers: list[tuple[float, str]] = []
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SteadyLoad:
        self._loop = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._loop is not None
        await self._loop
        await asyncio.gather(*self._tasks)

    async def _run(self) -> None:
        interval, due = 1.0 / self.rate, time.monotonic()
        while not self._stop.is_set():
            task = asyncio.create_task(self._one())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            due += interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def _one(self) -> None:
        self.outcome.sent += 1
        started = time.monotonic()
        try:
            reply = await self.rig.client.chat.completions.create(
                model=self.rig.fleet.model, messages=MESSAGES, max_tokens=self.max_tokens
            )
        except Exception as exc:  # noqa: BLE001 - every failure is counted, by kind
            self.outcome.failures[f"{exc.__class__.__name__}: {str(exc)[:100]}"] += 1
            return
        self.outcome.ok += 1
        self.answers.append((started, reply.instance_id or "?"))


async def until(check: Callable[[], Awaitable[bool] | bool], timeout: float, interval: float = 0.02) -> float:
    """Seconds until `check` holds; `timeout` (and no more waiting) when it never did."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        result = check()
        if await result if isinstance(result, Awaitable) else result:
            return time.monotonic() - started
        await asyncio.sleep(interval)
    return timeout


async def registered(registry: Registry, model: str, count: int) -> bool:
    try:
        records = (await registry.list(model)).records
    except Exception:  # noqa: BLE001 - a registry still coming back is "not yet"
        return False
    return sum(r.state is State.UP for r in records) == count


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")


# -- scenarios ----------------------------------------------------------------


async def kill_worker(rig: Rig, seconds: float, depth: int) -> Outcome:
    """kill -9 of one worker under load: its queue is retried elsewhere, and clients stop routing to it."""
    outcome = Outcome(f"kill -9 of a worker, {'deep' if depth == DEEP else 'shallow'} queue")
    member = rig.fleet.members[0]
    victim = rig.instance(member)
    async with SteadyLoad(rig, outcome, max_tokens=depth):
        await asyncio.sleep(seconds / 3)
        outcome.measured["in flight at kill"] = next(
            p.inflight for p in rig.client.cache.peers("sim") if p.id == victim
        )
        os.kill(member.worker_pid, signal.SIGKILL)
        outcome.measured["not routed after s"] = await until(lambda: rig.state(victim) is not State.UP, TTL + 5)
        await asyncio.sleep(seconds * 2 / 3)
    return outcome


async def kill_sidecar(rig: Rig, seconds: float) -> Outcome:
    """kill -9 of one sidecar: its worker goes with it (no orphan) and its record with its lease."""
    outcome = Outcome("kill -9 of a sidecar")
    member = rig.fleet.members[0]
    victim, worker = rig.instance(member), member.worker_pid
    async with SteadyLoad(rig, outcome), open_registry(rig.url) as registry:
        await asyncio.sleep(seconds / 3)
        os.kill(member.sidecar.pid, signal.SIGKILL)
        outcome.measured["record gone after s"] = await until(
            lambda: _absent(registry, rig.fleet.model, victim), TTL + 10
        )
        outcome.measured["worker gone after s"] = await until(lambda: not alive(worker), 10)
        await asyncio.sleep(seconds * 2 / 3)
    return outcome


async def _absent(registry: Registry, model: str, instance_id: str) -> bool:
    return await registry.get(model, instance_id) is None


async def freeze_etcd(rig: Rig, seconds: float) -> Outcome:
    """etcd SIGSTOPped for longer than the TTL, then resumed: every lease expires at once, at resume."""
    outcome = Outcome(f"etcd frozen {seconds:g}s, then resumed")
    (member,) = rig.cluster.members
    assert member.proc is not None
    async with SteadyLoad(rig, outcome), open_registry(rig.url) as registry:
        await asyncio.sleep(2)
        member.proc.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            member.proc.send_signal(signal.SIGCONT)
        outcome.measured["all up again after s"] = await until(lambda: registered(registry, "sim", 3), 30)
        await asyncio.sleep(5)
    return outcome


async def restart_etcd(rig: Rig, seconds: float, keep_data: bool) -> Outcome:
    """etcd killed and started again, with its data or empty: every sidecar registers again."""
    outcome = Outcome(f"etcd killed, restarted {'with its data' if keep_data else 'empty'}")
    (member,) = rig.cluster.members
    async with SteadyLoad(rig, outcome), open_registry(rig.url) as registry:
        await asyncio.sleep(2)
        member.stop(signal.SIGKILL)
        await asyncio.sleep(seconds)
        if not keep_data:
            shutil.rmtree(member.data_dir)
        await asyncio.to_thread(member.start)
        await asyncio.to_thread(member.wait_ready)
        outcome.measured["all back after s"] = await until(lambda: registered(registry, "sim", 3), 30)
        await asyncio.sleep(3)
    return outcome


async def lose_member(rig: Rig, seconds: float, hang: bool) -> Outcome:
    """One member of three killed or hung: an operator's offline through the others reaches the client."""
    outcome = Outcome(f"one member of 3 {'hung (SIGSTOP)' if hang else 'killed'}")
    lost = rig.cluster.members[0]
    others = "etcd://" + ",".join(m.endpoint for m in rig.cluster.members[1:]) + "/" + rig.url.rsplit("/", 1)[1]
    victim = rig.instance(rig.fleet.members[0])
    assert lost.proc is not None
    async with SteadyLoad(rig, outcome), open_registry(others) as operator:
        await asyncio.sleep(2)
        if hang:
            lost.proc.send_signal(signal.SIGSTOP)
        else:
            lost.stop(signal.SIGKILL)
        try:
            await asyncio.sleep(1)
            await operator.put_admin(victim, AdminAction.OFFLINE)
            outcome.measured["offline seen after s"] = await until(lambda: rig.state(victim) is State.OFFLINE, 30)
            await operator.put_admin(victim, AdminAction.ONLINE)
            outcome.measured["online seen after s"] = await until(lambda: rig.state(victim) is State.UP, 30)
            await asyncio.sleep(seconds)
        finally:
            if hang:
                lost.proc.send_signal(signal.SIGCONT)
    return outcome


async def rolling_restart(rig: Rig) -> Outcome:
    """Drain and restart every instance in turn; no request may start on one between its drain and its restart.

    A restart brings the instance back by itself, and the client may see it
    up a moment before `control` returns, so the window checked ends when
    the restart is asked for.
    """
    outcome = Outcome("rolling drain and restart of every instance")
    out: dict[str, tuple[float, float]] = {}
    async with SteadyLoad(rig, outcome) as load, open_registry(rig.url) as registry:
        await asyncio.sleep(1)
        for member in rig.fleet.members:
            victim = rig.instance(member)
            await control(registry, victim, AdminAction.DRAIN)
            drained = time.monotonic()
            await asyncio.sleep(0.5)
            out[victim] = (drained, time.monotonic())
            await control(registry, victim, AdminAction.RESTART)
        await asyncio.sleep(1)
    outcome.measured["requests started on an instance that was out"] = sum(
        1 for started, instance in load.answers if instance in out and out[instance][0] < started < out[instance][1]
    )
    return outcome


async def delete_record(rig: Rig) -> Outcome:
    """A record deleted under its sidecar's live lease (`etcdctl del`): the sidecar writes it again."""
    outcome = Outcome("record deleted under a live lease")
    victim = rig.instance(rig.fleet.members[0])
    async with SteadyLoad(rig, outcome), open_registry(rig.url) as registry:
        await asyncio.sleep(1)
        await registry.store.delete(instance_key(rig.fleet.model, victim))
        outcome.measured["back after s"] = await until(
            lambda: _present(registry, rig.fleet.model, victim), PROBE_INTERVAL + 10
        )
        await asyncio.sleep(1)
    return outcome


async def _present(registry: Registry, model: str, instance_id: str) -> bool:
    return await registry.get(model, instance_id) is not None


async def hostile_records(rig: Rig, seconds: float) -> Outcome:
    """Records written straight into the registry to steal traffic or a secret: none is ever routed to.

    Under the model's own key space, each with weight 1000: a key whose record
    claims another id, a record carrying a live instance's id under another
    key, a `file:` endpoint, a template record asking for the caller's
    AWS_SECRET_ACCESS_KEY (at an API this scenario runs, to see whether it is
    ever called), and a 1 MB record.
    """
    outcome = Outcome("hostile records")
    bait = await Upstream().start()
    model = rig.fleet.model
    live = rig.instance(rig.fleet.members[0])
    template = HttpTemplate(url=f"{bait.url}/template", body="{USER_PROMPT}", api_key_env="AWS_SECRET_ACCESS_KEY")
    huge = {"x": "y" * 2**20}
    hostile: dict[str, dict[str, Any]] = {
        instance_key(model, "impostor"): {"id": "not-the-key", "model": model, "endpoint": f"{bait.url}/v1"},
        instance_key("elsewhere", live): {"id": live, "model": "elsewhere", "endpoint": f"{bait.url}/v1"},
        instance_key(model, "passwd"): {"id": "passwd", "model": model, "endpoint": "file:///etc/passwd"},
        instance_key(model, "steal"): {
            "id": "steal",
            "model": model,
            "endpoint": template.url,
            "protocol": "template",
            "template": template.model_dump(),
        },
        instance_key(model, "huge"): {"id": "huge", "model": model, "endpoint": f"{bait.url}/v1", "labels": huge},
    }
    saved = os.environ.get("AWS_SECRET_ACCESS_KEY")
    os.environ["AWS_SECRET_ACCESS_KEY"] = "fault-suite-bait-secret"
    try:
        async with SteadyLoad(rig, outcome) as load, open_registry(rig.url) as registry:
            await asyncio.sleep(1)
            for key, value in hostile.items():
                await registry.store.put(key, json.dumps(value | {"weight": 1000}).encode())
            await asyncio.sleep(seconds)
            for key in hostile:
                await registry.store.delete(key)
        fleet = rig.fleet_ids()
        outcome.measured["answered by a hostile record"] = sum(instance not in fleet for _, instance in load.answers)
        outcome.measured["calls at the bait"] = len(bait.seen)
    finally:
        await bait.stop()
        if saved is None:
            del os.environ["AWS_SECRET_ACCESS_KEY"]
        else:
            os.environ["AWS_SECRET_ACCESS_KEY"] = saved
    return outcome


async def compaction_under_churn(rig: Rig, seconds: float) -> Outcome:
    """Records of another model registered and removed as fast as etcd takes them, history compacted every 0.5 s.

    The client's watch may fall behind a compaction at any moment; whatever
    happens, its set of instances must end equal to the registry's.
    """
    outcome = Outcome("watch compacted under churn")
    (member,) = rig.cluster.members
    stop = asyncio.Event()
    compactions = 0

    async def churn(registry: Registry) -> None:
        n = 0
        while not stop.is_set():
            record = Instance(id=f"churn-{n % 20}", model="churn", endpoint=f"http://127.0.0.1:{2000 + n % 20}/v1")
            await (registry.register(record, ttl=None) if n % 40 < 20 else registry.remove(record.id))
            n += 1

    async def compact() -> None:
        nonlocal compactions
        async with aetcd.Client(host="127.0.0.1", port=member.client_port) as raw:
            while not stop.is_set():
                await asyncio.sleep(0.5)
                revision = (await raw.put(b"/compaction-marker", b"")).header.revision
                await raw.compact(revision)
                compactions += 1

    async with SteadyLoad(rig, outcome), open_registry(rig.url) as registry:
        tasks = [asyncio.create_task(churn(registry)), asyncio.create_task(compact())]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)
        outcome.measured["compactions"] = compactions
        outcome.measured["client equals registry after s"] = await until(lambda: _same(rig, registry), 10)
    return outcome


async def _same(rig: Rig, registry: Registry) -> bool:
    held = {(model, r.id) for model, records in rig.client.models().items() for r in records}
    return held == {(r.model, r.id) for r in (await registry.list()).records}


async def streams_during_kill(rig: Rig, streams: int = 6) -> Outcome:
    """Streams in flight on a worker killed with kill -9: each ends or raises `StreamInterrupted`; none hangs."""
    outcome = Outcome("streams during a kill -9")
    member = rig.fleet.members[0]
    victim = rig.instance(member)

    async def one() -> None:
        outcome.sent += 1
        try:
            stream = await rig.client.chat.completions.create(
                model=rig.fleet.model, messages=MESSAGES, max_tokens=200, stream=True, policy="round_robin"
            )
            async for _ in stream:
                pass
            outcome.ok += 1
        except StreamInterrupted as exc:
            outcome.failures["StreamInterrupted"] += 1
            outcome.measured["interrupted on the killed instance"] = outcome.measured.get(
                "interrupted on the killed instance", 0
            ) + (exc.instance_id == victim)
        except Exception as exc:  # noqa: BLE001 - anything else is counted as itself
            outcome.failures[exc.__class__.__name__] += 1

    tasks = [asyncio.create_task(one()) for _ in range(streams)]
    await asyncio.sleep(2)
    os.kill(member.worker_pid, signal.SIGKILL)
    _, hung = await asyncio.wait(tasks, timeout=60)
    for task in hung:
        task.cancel()
    outcome.measured["hung"] = len(hung)
    return outcome


_WRITER = """
import asyncio, sys
from smmf.instance import Instance
from smmf.registry import open_registry

async def main():
    async with open_registry(sys.argv[1]) as registry:
        for i in range(100000):
            record = Instance(id=f"w-{i}", model="m", endpoint=f"http://127.0.0.1:{1000 + i % 60000}/v1",
                              labels={"pad": "x" * 2000})
            await registry.register(record, ttl=None)
            print(record.id, flush=True)

asyncio.run(main())
"""


async def kill_file_writer(directory: Path, after: int = 200) -> Outcome:
    """A process registering records in a file registry, killed with kill -9 mid-write: nothing is lost."""
    outcome = Outcome("file registry: writer killed mid-write")
    url = f"file://{directory}/registry.db"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, url], stdout=subprocess.PIPE, text=True)
    written: list[str] = []
    try:
        assert writer.stdout is not None
        while len(written) < after:
            line = await asyncio.to_thread(writer.stdout.readline)
            if not line:
                break
            written.append(line.strip())
    finally:
        writer.kill()
        writer.wait()
    async with open_registry(url) as registry:
        present = {r.id for r in (await registry.list("m")).records}
    outcome.sent, outcome.ok = len(written), len(set(written) & present)
    if outcome.ok < outcome.sent:
        outcome.failures["lost"] = outcome.sent - outcome.ok
    outcome.measured["records after the kill"] = len(present)
    return outcome
