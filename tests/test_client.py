"""The client library against real processes: sim workers behind sidecars, on the file registry and real etcd."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from smmf.client import (
    APIStatusError,
    ModelClient,
    NoInstanceAvailable,
    StreamInterrupted,
    SyncModelClient,
    httpx_client,
)
from smmf.instance import Instance, State
from smmf.registry import AdminAction, Registry, open_registry
from smmf.template import HttpTemplate
from tests.support.consul import ConsulEmulator
from tests.support.etcd import EtcdCluster
from tests.support.fleet import Fleet
from tests.support.helpers import eventually
from tests.support.upstream_app import Upstream

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def fleets(tmp_path: Path) -> Iterator[Callable[..., Fleet]]:
    started: list[Fleet] = []

    def start(
        url: str,
        weights: list[float],
        *sim_args: str,
        model: str | None = None,
        member_args: list[tuple[str, ...]] | None = None,
    ) -> Fleet:
        fleet = Fleet(url, model or f"m-{uuid.uuid4().hex[:6]}", weights, tmp_path, sim_args, member_args)
        started.append(fleet)
        return fleet.start()

    try:
        yield start
    finally:
        for fleet in started:
            fleet.stop()


def shares(counts: Counter[str], fleet: Fleet) -> list[float]:
    total = sum(counts.values())
    return [sum(n for i, n in counts.items() if i.startswith(fleet.instance_of(m))) / total for m in fleet.members]


async def test_policies_follow_the_weights(fleets: Callable[..., Fleet], url: str) -> None:
    # No per-request slowdown: with it, the busier (heavier) instance answers slower and peak_ewma, which
    # balances latency rather than weight, rightly sends it less than its weight share.
    fleet = fleets(url, [1, 2, 3], "--ttft-ms", "30", "--tpot-ms", "5", "--slowdown", "0")
    expected = [1 / 6, 2 / 6, 3 / 6]
    async with ModelClient(url) as client:
        for policy, concurrency, requests, tolerance in [
            ("round_robin", 1, 120, 0.0001),  # smooth weighted round robin is exact over whole cycles
            # Random shares over n requests have a standard deviation of at most sqrt(0.25 / n): 0.013 at
            # n = 1500, so 0.05 is about 4 sigma and a correct policy fails this check about once in 10^4 runs.
            ("weighted_random", 4, 1500, 0.05),
            ("affinity", 4, 1500, 0.05),  # distinct session keys spread by weight
            # Load-based policies follow the weights under steady concurrent load (in-flight / weight evens out),
            # but only roughly. least_loaded was seen at most 0.066 off.
            ("least_loaded", 12, 900, 0.12),
            # peak_ewma balances latency, not weight: when the whole suite loads the 2 cores, the busiest sim
            # really is slower and gets less than its weight share (seen up to 0.134 off in a full CI run).
            ("peak_ewma", 12, 900, 0.2),
        ]:
            counts: Counter[str] = Counter()
            numbers = iter(range(requests))

            async def loop(
                policy: str = policy, counts: Counter[str] = counts, numbers: Iterator[int] = numbers
            ) -> None:
                for i in numbers:
                    reply = await client.chat.completions.create(
                        model=fleet.model, messages=MESSAGES, max_tokens=4, policy=policy, session_key=f"user-{i}"
                    )
                    counts[reply.instance_id] += 1

            await asyncio.gather(*(loop() for _ in range(concurrency)))
            got = shares(counts, fleet)
            print(f"{policy}: shares {[round(s, 3) for s in got]} (expected {[round(e, 3) for e in expected]})")
            assert all(abs(g - e) <= tolerance for g, e in zip(got, expected, strict=True)), (policy, got)


async def test_least_loaded_moves_traffic_away_from_a_busy_instance(
    fleets: Callable[..., Fleet], tmp_path: Path
) -> None:
    url = f"file://{tmp_path}/r.db"
    fleet = fleets(url, [1, 1], "--ttft-ms", "0", "--tpot-ms", "50")
    busy = fleet.members[0]
    direct = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{busy.port}/v1", api_key="unused", max_retries=0)
    streams = [
        await direct.chat.completions.create(model=fleet.model, messages=MESSAGES, max_tokens=200, stream=True)
        for _ in range(6)
    ]
    async with ModelClient(url, policy="least_loaded") as client:
        await eventually(lambda: _published_busy(client, fleet), 5)
        counts: Counter[str] = Counter()
        for _ in range(60):
            reply = await client.completions.create(model=fleet.model, prompt="x", max_tokens=1)
            counts[reply.instance_id] += 1
    for stream in streams:
        await stream.close()
    busy_share = shares(counts, fleet)[0]
    print(f"least_loaded: the busy instance got {busy_share:.0%} of 60 requests")
    assert busy_share <= 0.1


async def test_least_loaded_breaks_ties_away_from_a_slow_instance(fleets: Callable[..., Fleet], tmp_path: Path) -> None:
    """One request at a time, so every choice is a tie on load; the instance seen answering 10x slower loses them."""
    url = f"file://{tmp_path}/r.db"
    fleet = fleets(url, [1, 1], "--ttft-ms", "10", "--tpot-ms", "0", "--slowdown", "0",
                   member_args=[(), ("--ttft-ms", "100")])  # fmt: skip
    slow = fleet.instance_of(fleet.members[1])
    async with ModelClient(url, policy="least_loaded") as client:
        counts: Counter[str] = Counter()
        for _ in range(40):
            reply = await client.completions.create(model=fleet.model, prompt="x", max_tokens=1)
            counts[reply.instance_id] += 1
    slow_count = sum(n for i, n in counts.items() if i.startswith(slow))
    print(f"least_loaded: the slow instance got {slow_count} of 40 sequential requests")
    assert slow_count <= 4  # one to learn its speed; random ties would give it about 20


async def test_the_load_a_worker_reports_on_a_response_reaches_the_instance_s_view(
    fleets: Callable[..., Fleet], tmp_path: Path
) -> None:
    url = f"file://{tmp_path}/r.db"
    fleet = fleets(url, [1], "--ttft-ms", "0", "--tpot-ms", "50")
    direct = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{fleet.members[0].port}/v1", api_key="unused")
    streams = [
        await direct.chat.completions.create(model=fleet.model, messages=MESSAGES, max_tokens=200, stream=True)
        for _ in range(3)
    ]
    try:
        async with ModelClient(url) as client:
            await client.completions.create(model=fleet.model, prompt="x", max_tokens=1)
            (peer,) = client.cache.peers(fleet.model)
            assert peer.reported is not None and peer.reported[0] == 3, "another client's three streams, not ours"
    finally:
        for stream in streams:
            await stream.close()


async def _published_busy(client: ModelClient, fleet: Fleet) -> bool:
    loads = {r.id: r.load.inflight for r in client.models().get(fleet.model, [])}
    return any(k.startswith(fleet.instance_of(fleet.members[0])) and v >= 5 for k, v in loads.items())


async def test_kill_9_of_a_worker_under_load_fails_no_request(fleets: Callable[..., Fleet], url: str) -> None:
    fleet = fleets(url, [1, 1, 1], "--ttft-ms", "0", "--tpot-ms", "20")
    failures: list[BaseException] = []
    done = 0
    stop = asyncio.Event()
    async with ModelClient(url) as client:

        async def loop() -> None:
            nonlocal done
            while not stop.is_set():
                try:
                    await client.chat.completions.create(model=fleet.model, messages=MESSAGES, max_tokens=10)
                    done += 1
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    failures.append(exc)

        loops = [asyncio.create_task(loop()) for _ in range(8)]
        await asyncio.sleep(1.5)
        os.kill(fleet.members[0].worker_pid, signal.SIGKILL)
        await asyncio.sleep(3)
        stop.set()
        await asyncio.gather(*loops)
    print(f"kill -9 under load: {done} requests succeeded, {len(failures)} failed")
    assert not failures, failures[:3]
    assert done > 50


async def test_an_interrupted_stream_raises_stream_interrupted(fleets: Callable[..., Fleet], tmp_path: Path) -> None:
    url = f"file://{tmp_path}/r.db"
    fleet = fleets(url, [1], "--ttft-ms", "0", "--tpot-ms", "100")
    async with ModelClient(url) as client:
        stream = await client.chat.completions.create(model=fleet.model, messages=MESSAGES, max_tokens=100, stream=True)
        first = await anext(stream)
        assert first.choices[0].delta.role == "assistant"
        os.kill(fleet.members[0].worker_pid, signal.SIGKILL)
        with pytest.raises(StreamInterrupted) as broken:
            async for _ in stream:
                pass
        assert broken.value.instance_id == first.instance_id
        endpoint = client.cache.peers(fleet.model)
        assert all(ep.inflight == 0 for ep in endpoint), "the slot is released when a stream breaks"


async def test_requests_keep_succeeding_while_etcd_is_down(
    fleets: Callable[..., Fleet], start_etcd: Callable[..., EtcdCluster]
) -> None:
    cluster = start_etcd()
    url = cluster.url("/outage")
    fleet = fleets(url, [1, 1], "--ttft-ms", "0", "--tpot-ms", "1")
    async with ModelClient(url) as client:
        cluster.members[0].stop()
        ok = 0
        for _ in range(100):
            reply = await client.chat.completions.create(model=fleet.model, messages=MESSAGES, max_tokens=2)
            ok += bool(reply.choices)
            await asyncio.sleep(0.02)
        assert ok == 100 and len(client.models()[fleet.model]) == 2, "served from the last-known instances"
        cluster.members[0].start()
        cluster.members[0].wait_ready()


async def test_requests_keep_succeeding_while_consul_is_away_and_sidecars_register_again(
    fleets: Callable[..., Fleet], start_consul: Callable[..., ConsulEmulator]
) -> None:
    emulator = start_consul()
    url = emulator.url("/outage")
    fleet = fleets(url, [1, 1], "--ttft-ms", "0", "--tpot-ms", "1")
    async with ModelClient(url) as client:
        await eventually(lambda: _count(client, fleet.model, 2), 10)
        emulator.stop()
        ok, stopped = 0, asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - stopped < 5:
            reply = await client.chat.completions.create(model=fleet.model, messages=MESSAGES, max_tokens=2)
            ok += bool(reply.choices)
            await asyncio.sleep(0.02)
        assert ok > 0 and len(client.models()[fleet.model]) == 2, "served from the last-known instances"
        emulator.start()  # empty, as an agent restarted without its data: each sidecar registers again
        async with open_registry(url) as fresh:
            await eventually(lambda: _listed(fresh, fleet.model, 2), 20)
        reply = await client.chat.completions.create(model=fleet.model, messages=MESSAGES, max_tokens=2)
        assert reply.choices and len(client.models()[fleet.model]) == 2


async def _listed(registry: Registry, model: str, count: int) -> bool:
    return len((await registry.list(model)).records) == count


async def test_a_draining_instance_gets_no_new_requests(fleets: Callable[..., Fleet], tmp_path: Path) -> None:
    url = f"file://{tmp_path}/r.db"
    fleet = fleets(url, [1, 1], "--ttft-ms", "0", "--tpot-ms", "100")
    draining = fleet.members[0]
    async with ModelClient(url, policy="round_robin") as client:
        (target,) = [r for r in client.models()[fleet.model] if r.id.startswith(fleet.instance_of(draining))]
        held = await client.chat.completions.create(
            model=fleet.model, messages=MESSAGES, max_tokens=50, stream=True, policy="affinity", session_key="x"
        )
        async with open_registry(url) as registry:
            await registry.put_admin(target.id, AdminAction.DRAIN)
        await eventually(lambda: _state_is(client, target.id, State.DRAINING), 5)
        counts: Counter[str] = Counter()
        for _ in range(20):
            reply = await client.completions.create(model=fleet.model, prompt="x", max_tokens=1)
            counts[reply.instance_id] += 1
        await held.aclose()
    assert target.id not in counts and sum(counts.values()) == 20


async def _state_is(client: ModelClient, instance_id: str, state: State) -> bool:
    return any(r.id == instance_id and r.state is state for records in client.models().values() for r in records)


async def test_ejection_never_removes_the_last_instance(fleets: Callable[..., Fleet], tmp_path: Path) -> None:
    url = f"file://{tmp_path}/r.db"
    failing = fleets(url, [1], "--fail-rate", "1")
    good = fleets(url, [1], model=failing.model)
    good_prefix = good.instance_of(good.members[0])
    async with ModelClient(url, policy="round_robin") as client:
        await eventually(lambda: _count(client, failing.model, 2), 5)
        for _ in range(30):
            reply = await client.completions.create(model=failing.model, prompt="x", max_tokens=1)
            assert reply.instance_id.startswith(good_prefix), "failures are retried on the other instance"
        (bad,) = [ep for ep in client.cache.peers(failing.model) if not ep.id.startswith(good_prefix)]
        assert bad.ejections >= 1, "the failing instance was ejected"

        alone = fleets(url, [1], "--fail-rate", "1")
        await eventually(lambda: _count(client, alone.model, 1), 5)
        for _ in range(8):
            with pytest.raises(APIStatusError) as failed:
                await client.completions.create(model=alone.model, prompt="x", max_tokens=1)
            assert failed.value.status == 503, "the only instance is still tried, never ejected away"
        (only,) = client.cache.peers(alone.model)
        assert only.ejections == 0


async def _count(client: ModelClient, model: str, n: int) -> bool:
    return len(client.models().get(model, [])) == n


async def test_no_instances_names_the_model_and_the_known_ones(fleets: Callable[..., Fleet], tmp_path: Path) -> None:
    url = f"file://{tmp_path}/r.db"
    fleet = fleets(url, [1])
    async with ModelClient(url) as client:
        with pytest.raises(NoInstanceAvailable) as missing:
            await client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    assert "gpt-9" in str(missing.value) and fleet.model in str(missing.value)


async def test_the_official_sdk_through_httpx_client(fleets: Callable[..., Fleet], url: str) -> None:
    fleet = fleets(url, [1, 1], "--ttft-ms", "0", "--tpot-ms", "1")
    http = httpx_client(url, policy="round_robin")
    sdk = openai.AsyncOpenAI(base_url="http://smmf/v1", api_key="unused", http_client=http, max_retries=0)
    reply = await sdk.chat.completions.create(model=fleet.model, messages=MESSAGES, max_tokens=4)
    assert reply.choices[0].message.content and reply.usage is not None and reply.usage.completion_tokens == 4

    stream = await sdk.chat.completions.create(model=fleet.model, messages=MESSAGES, max_tokens=5, stream=True)
    pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) == 5

    instances = set()
    for _ in range(4):
        raw = await sdk.completions.with_raw_response.create(model=fleet.model, prompt="x", max_tokens=1)
        instances.add(raw.headers["x-smmf-instance"])
    assert len(instances) == 2, "round robin across both instances"

    listed = await sdk.models.list()
    assert fleet.model in [m.id for m in listed.data]
    with pytest.raises(openai.NotFoundError, match="gpt-9"):
        await sdk.chat.completions.create(model="gpt-9", messages=MESSAGES)
    await sdk.close()


async def test_template_instances_are_called_directly(tmp_path: Path) -> None:
    upstream = await Upstream().start()
    try:
        url = f"file://{tmp_path}/r.db"
        template = HttpTemplate(
            url=f"{upstream.url}/template",
            body={"query": {"text": "{USER_PROMPT}", "temperature": "{MODEL_TEMPERATURE}"}},
            response_extract="data.items[].attributes.answer",
        )
        record = Instance(
            id="tpl-1", model="third-party", endpoint=template.url, protocol="template", template=template
        )
        async with open_registry(url) as registry:
            await registry.register(record, ttl=None)
        async with ModelClient(url) as client:
            reply = await client.chat.completions.create(model="third-party", messages=MESSAGES, temperature=0.2)
            assert reply.choices[0].message.content == "echo: hello" and reply.instance_id == "tpl-1"
            chunks = [
                c
                async for c in await client.chat.completions.create(model="third-party", messages=MESSAGES, stream=True)
            ]
            assert [c.choices[0].delta.content for c in chunks] == ["echo: hello"]
        assert upstream.seen[0]["body"] == {"query": {"text": "hello", "temperature": 0.2}}
    finally:
        await upstream.stop()


def test_sync_client(fleets: Callable[..., Fleet], tmp_path: Path) -> None:
    url = f"file://{tmp_path}/r.db"
    fleet = fleets(url, [1], "--ttft-ms", "0", "--tpot-ms", "0")
    with SyncModelClient(url) as client:
        assert list(client.models()) == [fleet.model]
        reply = client.completions.create(model=fleet.model, prompt="x", max_tokens=3)
        assert len(reply.choices[0].text.split()) == 3
        pieces = [
            c.choices[0].text
            for c in client.completions.create(model=fleet.model, prompt="x", max_tokens=3, stream=True)
        ]
        assert "".join(pieces) == reply.choices[0].text
