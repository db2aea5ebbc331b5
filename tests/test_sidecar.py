"""The sidecar against real processes: a `smmf worker sim` child, the embedded file registry and real etcd."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from smmf.instance import Instance, State
from smmf.registry import AdminAction, Put, Registry, open_registry
from tests.support.etcd import EtcdCluster, free_port
from tests.support.helpers import eventually
from tests.support.processes import SmmfProcess

TTL = 2.0
PROBE = 0.5
StartEtcd = Callable[..., EtcdCluster]


class Deployment:
    """One sidecar supervising one sim worker on a known port, and a registry client to look at them."""

    def __init__(self, process: SmmfProcess, registry: Registry, model: str, port: int) -> None:
        self.process = process
        self.registry = registry
        self.model = model
        self.port = port

    async def records(self) -> list[Instance]:
        return (await self.registry.list(self.model)).records

    async def record(self) -> Instance | None:
        found = await self.records()
        return found[0] if found else None

    async def wait_registered(self, timeout: float = 30.0) -> Instance:
        return await eventually(self.record, timeout)

    async def wait_gone(self, timeout: float) -> float:
        started = time.monotonic()
        await eventually(self._absent, timeout)
        return time.monotonic() - started

    async def _absent(self) -> bool:
        return not await self.records()

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture
def deploy(tmp_path: Path, start_smmf: Callable[..., SmmfProcess]) -> Iterator[Callable[..., Deployment]]:
    opened: list[Registry] = []

    def start(registry_url: str, *sidecar_args: str, sim_args: tuple[str, ...] = ()) -> Deployment:
        model = f"sim-{uuid.uuid4().hex[:6]}"
        port = free_port()
        process = start_smmf(
            "sidecar", "--registry", registry_url, "--model", model, "--upstream", f"http://127.0.0.1:{port}",
            "--ttl", str(TTL), "--probe-interval", str(PROBE), *sidecar_args,
            "--", sys.executable, "-m", "smmf.cli", "worker", "sim", "--model", model, "--port", str(port), *sim_args,
            healthy=False, expect_url=False,
        )  # fmt: skip
        registry = open_registry(registry_url)
        opened.append(registry)
        return Deployment(process, registry, model, port)

    try:
        yield start
    finally:
        for registry in opened:
            with contextlib.suppress(Exception):
                asyncio.get_event_loop().run_until_complete(registry.close())


async def test_record_appears_with_the_right_fields(deploy: Callable[..., Deployment], url: str) -> None:
    d = deploy(url, "--weight", "2.5", "--label", "zone=a", "--label", "gpu=none")
    rec = await d.wait_registered()
    assert rec.model == d.model and rec.endpoint == f"http://127.0.0.1:{d.port}/v1"
    assert rec.id.startswith(f"127.0.0.1:{d.port}-")
    assert (rec.backend, rec.kind.value, rec.state, rec.weight) == ("sim", "llm", State.UP, 2.5)
    assert rec.labels == {"zone": "a", "gpu": "none"}
    reply = d.sdk().chat.completions.create(model=d.model, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert reply.choices[0].message.content


async def test_kill_9_of_the_sidecar(deploy: Callable[..., Deployment], url: str) -> None:
    d = deploy(url)
    await d.wait_registered()
    (child,) = d.process.children()
    d.process.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    gone_after = await d.wait_gone(TTL + 1)
    print(f"kill -9 sidecar ({url.split(':')[0]}): record gone after {gone_after:.2f}s (ttl {TTL}s)")
    await eventually(lambda: _dead(child), 10)  # the worker does not outlive its sidecar


async def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


async def test_kill_9_of_the_child(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    d = deploy(f"file://{tmp_path}/r.db")
    first = await d.wait_registered()
    (child,) = d.process.children()
    os.kill(child, signal.SIGKILL)
    started = time.monotonic()
    await eventually(lambda: _state(d, State.UNHEALTHY), 10)
    withdrawn_after = time.monotonic() - started
    back = await eventually(lambda: _state(d, State.UP), 20)
    (restarted,) = d.process.children()
    assert restarted != child and back and (await d.wait_registered()).id == first.id
    print(f"kill -9 child: unhealthy after {withdrawn_after:.2f}s (probe {PROBE}s), back with child {restarted}")
    assert "child restarted" in d.process.log()


async def test_sigterm_during_a_stream_drains_first(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    d = deploy(f"file://{tmp_path}/r.db", sim_args=("--ttft-ms", "0", "--tpot-ms", "50"))
    await d.wait_registered()
    pieces: list[str] = []
    stream = d.sdk().chat.completions.create(
        model=d.model, messages=[{"role": "user", "content": "long"}], max_tokens=40, stream=True
    )
    first = next(iter(stream))
    reader = threading.Thread(target=lambda: pieces.extend(c.choices[0].delta.content or "" for c in stream))
    reader.start()

    d.process.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    draining = await eventually(lambda: _state(d, State.DRAINING), 2)
    assert draining, "clients see the instance draining while the stream still runs"
    assert reader.is_alive()

    await asyncio.to_thread(reader.join, 30)
    assert len(pieces) + 1 >= 40 and first.choices[0].delta.role == "assistant", "the stream completed"
    await d.wait_gone(5)
    assert await asyncio.to_thread(d.process.proc.wait, 30) == 0  # type: ignore[union-attr]


async def _state(d: Deployment, state: State) -> bool:
    rec = await d.record()
    return rec is not None and rec.state is state


async def test_registry_restarted_without_its_data(deploy: Callable[..., Deployment], start_etcd: StartEtcd) -> None:
    cluster = start_etcd()
    d = deploy(cluster.url("/outage"))
    await d.wait_registered()
    member = cluster.members[0]
    member.stop()
    await asyncio.sleep(5)
    shutil.rmtree(member.data_dir)  # the lease dies with the data: the sidecar must register again
    started = time.monotonic()
    member.start()
    member.wait_ready()
    answered = time.monotonic()
    async with open_registry(cluster.url("/outage")) as fresh:
        await eventually(lambda: _listed(fresh, d.model), 2)
        back = time.monotonic()
    print(
        f"etcd down 5s, restarted empty: ready {answered - started:.2f}s after start;"
        f" record listed {back - answered:.2f}s after ready, {back - started:.2f}s after start"
    )
    assert d.process.proc.poll() is None and "registered" in d.process.log()  # type: ignore[union-attr]


async def _listed(registry: Registry, model: str) -> bool:
    return bool((await registry.list(model)).records)


async def test_etcd_stopped_for_five_seconds(deploy: Callable[..., Deployment], start_etcd: StartEtcd) -> None:
    cluster = start_etcd()
    d = deploy(cluster.url("/pause"))
    rec = await d.wait_registered()
    cluster.members[0].stop()
    await asyncio.sleep(5)
    cluster.members[0].start()
    cluster.members[0].wait_ready()
    answered = time.monotonic()
    async with open_registry(cluster.url("/pause")) as fresh:
        await eventually(lambda: _listed(fresh, d.model), 2)
        print(f"etcd down 5s (data kept): record listed {time.monotonic() - answered:.2f}s after etcd answered")
        await asyncio.sleep(TTL * 1.5)
        assert [r.id for r in (await fresh.list(d.model)).records] == [rec.id], "kept alive, not just not yet expired"


async def test_admin_keys(deploy: Callable[..., Deployment], url: str) -> None:
    d = deploy(url)
    rec = await d.wait_registered()

    async def acked(action: AdminAction) -> bool:
        state = await d.registry.get_admin(rec.id)
        return state is not None and state.action is action and state.acked_at is not None

    await d.registry.put_admin(rec.id, AdminAction.OFFLINE)
    await eventually(lambda: _state(d, State.OFFLINE), 5)
    await eventually(lambda: acked(AdminAction.OFFLINE), 5)
    await asyncio.sleep(3 * PROBE)
    assert await _state(d, State.OFFLINE), "offline stays offline while the worker is healthy"

    await d.registry.put_admin(rec.id, AdminAction.ONLINE)
    await eventually(lambda: _state(d, State.UP), 5)
    assert (await d.wait_registered()).id == rec.id
    await eventually(lambda: acked(AdminAction.ONLINE), 5)

    await d.registry.put_admin(rec.id, AdminAction.DRAIN)
    await eventually(lambda: acked(AdminAction.DRAIN), 10)
    await eventually(lambda: _state(d, State.OFFLINE), 5)  # reads can lag the acknowledgement (Nacos)
    await d.registry.put_admin(rec.id, AdminAction.ONLINE)
    await eventually(lambda: _state(d, State.UP), 5)

    (child,) = d.process.children()
    await d.registry.put_admin(rec.id, AdminAction.RESTART)
    await eventually(lambda: acked(AdminAction.RESTART), 30)
    # Restart is confirmed once the worker serves again; reads can lag the acknowledgement (Nacos).
    await eventually(lambda: _state(d, State.UP), 5)
    (new_child,) = d.process.children()
    assert new_child != child, "restart restarts the worker"


async def test_published_load_follows_real_load(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    d = deploy(f"file://{tmp_path}/r.db", sim_args=("--ttft-ms", "0", "--tpot-ms", "20", "--max-concurrency", "8"))
    rec = await d.wait_registered()
    puts: list[Instance] = []

    async def count() -> None:
        async for event in d.registry.watch(d.model):
            if isinstance(event, Put) and event.id == rec.id:
                puts.append(event.value)

    watcher = asyncio.create_task(count())
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{d.port}/v1", api_key="unused", max_retries=0)
    stop = time.monotonic() + 10

    async def load(seed: int) -> None:
        pause = random.Random(seed)
        while time.monotonic() < stop:  # busy, then idle for a moment: the in-flight count keeps changing
            await client.chat.completions.create(
                model=d.model, messages=[{"role": "user", "content": "x"}], max_tokens=20
            )
            await asyncio.sleep(pause.uniform(0, 0.6))

    await asyncio.gather(*(load(seed) for seed in range(4)))
    load_writes = [p for p in puts if p.load.updated_at != rec.load.updated_at]
    writes_under_load = len({p.load.updated_at for p in load_writes})  # heartbeats rewrite the same figure
    seen = sorted({p.load.inflight for p in load_writes})
    await eventually(lambda: _idle(d), 5)
    watcher.cancel()
    print(f"load publishing: {writes_under_load} registry writes in 10s of changing load, inflight values {seen}")
    assert writes_under_load >= 3 and max(seen) >= 2, "the published in-flight count follows the real load"
    assert writes_under_load <= 12, "at most about one write per second"


async def _idle(d: Deployment) -> bool:
    rec = await d.record()
    return rec is not None and rec.load.inflight == 0


async def test_the_prefix_cache_hit_rate_is_published(deploy: Callable[..., Deployment], tmp_path: Path) -> None:
    sim = ("--prefix-cache-blocks", "64", "--block-tokens", "4", "--ttft-ms", "0", "--tpot-ms", "0")
    d = deploy(f"file://{tmp_path}/r.db", sim_args=sim)
    rec = await d.wait_registered()
    assert rec.load.prefix_cache_hit_rate is None  # nothing looked up yet
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{d.port}/v1", api_key="unused", max_retries=0)
    prompt = " ".join(f"w{i}" for i in range(40))
    for _ in range(4):  # 160 tokens looked up, the last three times all 40 found: 0.75
        await client.completions.create(model=d.model, prompt=prompt, max_tokens=1)

    async def published() -> bool:
        """The rate over the last load interval with lookups: 0.75 if all four fell in one, 1.0 if split."""
        record = await d.record()
        return record is not None and record.load.prefix_cache_hit_rate in (0.75, 1.0)

    await eventually(published, 10)


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_the_status_server_answers_probes_and_drains_for_a_pre_stop_hook(
    deploy: Callable[..., Deployment], tmp_path: Path
) -> None:
    status = free_port()
    d = deploy(
        f"file://{tmp_path}/r.db", "--status-address", f"127.0.0.1:{status}",
        sim_args=("--ttft-ms", "0", "--tpot-ms", "50"),
    )  # fmt: skip
    base = f"http://127.0.0.1:{status}"
    await d.wait_registered()
    ready = await eventually(lambda: asyncio.to_thread(lambda: _get(f"{base}/ready")[0] == 200), 30)
    assert ready
    assert (await asyncio.to_thread(_get, f"{base}/live"))[0] == 200

    pieces: list[str] = []
    stream = d.sdk().chat.completions.create(
        model=d.model, messages=[{"role": "user", "content": "long"}], max_tokens=30, stream=True
    )
    next(iter(stream))
    reader = threading.Thread(target=lambda: pieces.extend(c.choices[0].delta.content or "" for c in stream))
    reader.start()
    code, answer = await asyncio.to_thread(_get, f"{base}/drain")
    assert code == 200 and answer["drained"] is True and answer["state"] == "draining"
    assert len(pieces) + 1 >= 30, "/drain answered only after the stream in flight had finished"
    await asyncio.to_thread(reader.join, 30)

    assert (await d.record()).state is State.DRAINING, "a retired instance takes no new requests"  # type: ignore[union-attr]
    code, answer = await asyncio.to_thread(_get, f"{base}/ready")
    assert code == 503 and answer["state"] == "draining"
    assert (await asyncio.to_thread(_get, f"{base}/drain"))[0] == 200, "a second /drain (the worker's hook) answers too"
    d.process.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    await d.wait_gone(10)
    assert await asyncio.to_thread(d.process.proc.wait, 30) == 0  # type: ignore[union-attr]
