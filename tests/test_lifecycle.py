"""An instance's identity and states as an operator steers them, against real sidecars, on file and etcd.

Each test is one finding of an operator's trial: a sidecar that registered
another process's server, offline lost on restart, withdrawn instances that
vanished from `smmf ls`, ids claimed twice, and liveness shown as load age.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smmf.admin import AdminAction
from smmf.instance import Instance, State, instance_id
from smmf.registry import Registry, open_registry
from tests.support.etcd import free_port
from tests.support.helpers import eventually
from tests.support.processes import SmmfProcess

TTL = 2.0
PROBE = 0.5
StartSmmf = Callable[..., SmmfProcess]


def sidecar_args(url: str, model: str, port: int, *extra: str) -> list[str]:
    return [
        "sidecar", "--registry", url, "--model", model, "--upstream", f"http://127.0.0.1:{port}",
        "--ttl", str(TTL), "--probe-interval", str(PROBE), *extra,
        "--", sys.executable, "-m", "smmf.cli", "worker", "sim", "--model", model, "--port", str(port),
    ]  # fmt: skip


def smmf(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smmf.cli", *args], capture_output=True, text=True, timeout=timeout)


def listed(url: str, model: str) -> dict[str, dict[str, object]]:
    result = smmf("ls", "--registry", url, "--model", model, "--json")
    assert result.returncode == 0, result.stderr
    return {r["id"]: r for r in json.loads(result.stdout)}


async def record_of(registry: Registry, model: str, port: int) -> Instance | None:
    return await registry.get(model, instance_id(model, "127.0.0.1", port))


async def in_state(registry: Registry, model: str, port: int, state: State) -> bool:
    record = await record_of(registry, model, port)
    return record is not None and record.state is state


async def until_up(registry: Registry, model: str, port: int) -> None:
    await eventually(lambda: in_state(registry, model, port, State.UP), 30)


@pytest.fixture
def model(request: pytest.FixtureRequest) -> str:
    return f"life-{abs(hash(request.node.nodeid)) % 10**6}"


@pytest.fixture
def sidecars(start_smmf: StartSmmf) -> Iterator[Callable[..., SmmfProcess]]:
    def start(url: str, model: str, port: int, *extra: str) -> SmmfProcess:
        return start_smmf(*sidecar_args(url, model, port, *extra), healthy=False, expect_url=False)

    yield start


async def test_a_sidecar_never_registers_a_server_it_did_not_start(
    sidecars: Callable[..., SmmfProcess], start_smmf: StartSmmf, url: str, model: str
) -> None:
    port = free_port()
    start_smmf("worker", "sim", "--model", model, "--port", str(port))  # somebody else's server on the port
    sidecar = sidecars(url, model, port)
    await eventually(lambda: _logged(sidecar, "crash-looping"), 60)
    assert "is not this sidecar's child" in sidecar.log()
    async with open_registry(url) as registry:
        assert (await registry.list(model)).records == [], "no record for a server the sidecar does not own"


async def _logged(process: SmmfProcess, text: str) -> bool:
    return text in process.log()


async def test_offline_survives_a_restart_of_the_sidecar(
    sidecars: Callable[..., SmmfProcess], url: str, model: str, request: pytest.FixtureRequest
) -> None:
    port = free_port()
    first = sidecars(url, model, port)
    async with open_registry(url) as registry:
        await until_up(registry, model, port)
        offline = smmf("offline", instance_id(model, "127.0.0.1", port), "--registry", url)
        assert offline.returncode == 0 and "now offline" in offline.stdout, offline.stderr
        first.stop()
        if url.startswith("nacos://"):  # reads lag the server by up to a push delay: ask the server itself
            assert not request.getfixturevalue("nacos").publishing(model), "deregistered"
        else:
            assert await record_of(registry, model, port) is None, "a sidecar that stops deregisters its record"

        sidecars(url, model, port)  # the same command again, as after a reboot
        await eventually(lambda: in_state(registry, model, port, State.OFFLINE), 30)
        await asyncio.sleep(4 * PROBE)
        assert await in_state(registry, model, port, State.OFFLINE), "still offline, healthy or not"

        online = smmf("online", instance_id(model, "127.0.0.1", port), "--registry", url)
        assert online.returncode == 0 and "now up" in online.stdout, online.stderr


async def test_withdrawn_instances_stay_visible_with_their_state(
    sidecars: Callable[..., SmmfProcess], url: str, model: str
) -> None:
    port = free_port()
    sidecars(url, model, port)
    target = instance_id(model, "127.0.0.1", port)
    async with open_registry(url) as registry:
        await until_up(registry, model, port)
    assert smmf("offline", target, "--registry", url).returncode == 0
    assert listed(url, model)[target]["state"] == "offline"
    models = smmf("models", "--registry", url)
    (row,) = [line.split() for line in models.stdout.splitlines() if line.startswith(model)]
    header = models.stdout.splitlines()[0].split()
    assert dict(zip(header, row, strict=True)) == {
        "MODEL": model, "INSTANCES": "1", "UP": "0", "DRAINING": "0", "OFFLINE": "1", "UNHEALTHY": "0",
    }  # fmt: skip
    assert smmf("online", target, "--registry", url).returncode == 0
    drain = smmf("drain", target, "--registry", url)
    assert drain.returncode == 0 and "now offline" in drain.stdout, "a drained instance is offline, and listed"
    assert listed(url, model)[target]["state"] == "offline"


async def test_an_unhealthy_instance_is_listed_as_unhealthy(
    sidecars: Callable[..., SmmfProcess], tmp_path: Path, model: str
) -> None:
    url = f"file://{tmp_path}/r.db"
    port = free_port()
    sidecar = sidecars(url, model, port)
    async with open_registry(url) as registry:
        await until_up(registry, model, port)
        (child,) = sidecar.children()
        os.kill(child, signal.SIGSTOP)  # alive but not answering: the probes fail
        try:
            await eventually(lambda: in_state(registry, model, port, State.UNHEALTHY), 10)
        finally:
            os.kill(child, signal.SIGCONT)
        await eventually(lambda: in_state(registry, model, port, State.UP), 10)


async def test_a_second_live_sidecar_with_the_same_id_refuses(
    sidecars: Callable[..., SmmfProcess], url: str, model: str
) -> None:
    first_port, second_port = free_port(), free_port()
    sidecars(url, model, first_port, "--id", "shared-id")
    async with open_registry(url) as registry:
        await eventually(lambda: _endpoint(registry, model, first_port), 30)
        second = sidecars(url, model, second_port, "--id", "shared-id")
        assert second.proc is not None
        code = await asyncio.to_thread(second.proc.wait, 3 * TTL + 20)
        assert code == 1 and "already registered by another live sidecar" in second.log()
        assert await _endpoint(registry, model, first_port), "the first holder's record is untouched"


async def _endpoint(registry: Registry, model: str, port: int) -> bool:
    record = await registry.get(model, "shared-id")
    return record is not None and record.endpoint == f"http://127.0.0.1:{port}/v1"


async def test_a_crashed_sidecars_record_expires_and_its_successor_takes_the_id(
    sidecars: Callable[..., SmmfProcess], url: str, model: str
) -> None:
    port = free_port()
    first = sidecars(url, model, port)
    async with open_registry(url) as registry:
        await until_up(registry, model, port)
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)  # its record stays until the lease expires
        killed = time.time()
        sidecars(url, model, port)
        await eventually(lambda: _alive_since(registry, model, port, killed), 3 * TTL + 30)


async def _alive_since(registry: Registry, model: str, port: int, since: float) -> bool:
    record = await record_of(registry, model, port)
    return record is not None and record.state is State.UP and (record.alive_at or 0) > since


async def test_liveness_is_shown_apart_from_load(sidecars: Callable[..., SmmfProcess], url: str, model: str) -> None:
    port = free_port()
    sidecars(url, model, port)
    async with open_registry(url) as registry:
        await until_up(registry, model, port)
        await asyncio.sleep(3 * TTL)  # idle: the load does not change, the lease is renewed
        record = await record_of(registry, model, port)
        assert record is not None and record.alive_at is not None
        assert time.time() - record.alive_at <= TTL + 1.5, "an idle, live instance was confirmed alive recently"
        assert time.time() - record.load.updated_at >= 2 * TTL, "while its load figure is older"
    table = smmf("ls", "--registry", url, "--model", model)
    header, row = table.stdout.splitlines()[0], table.stdout.splitlines()[1]
    assert "SEEN" in header and "LOAD AGE" in header
    seen = row.split()[header.split().index("SEEN")]
    assert seen.endswith("s") and float(seen[:-1]) <= TTL + 1.5


async def test_smmf_top_shows_every_instance_and_its_state(
    sidecars: Callable[..., SmmfProcess], url: str, model: str
) -> None:
    port = free_port()
    sidecars(url, model, port)
    async with open_registry(url) as registry:
        await until_up(registry, model, port)
    top = smmf("top", "--registry", url, "--model", model, "-n", "2", "--interval", "0.2")
    assert top.returncode == 0, top.stderr
    assert instance_id(model, "127.0.0.1", port) in top.stdout and " up " in top.stdout
    assert "1 instances: 1 up, 0 draining, 0 offline, 0 unhealthy" in top.stdout


async def test_admin_actions_on_template_records(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/r.db"
    registered = smmf(
        "register", "--registry", url, "--model", "api", "--url-template", "http://127.0.0.1:9/{USER_PROMPT}",
        "--id", "tpl-api",
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    restart = smmf("restart", "tpl-api", "--registry", url)
    assert restart.returncode == 2 and "no server to restart" in restart.stderr and "Traceback" not in restart.stderr
    drain = smmf("drain", "tpl-api", "--registry", url)
    assert drain.returncode == 0 and "now offline" in drain.stdout
    row = smmf("ls", "--registry", url).stdout.splitlines()[1].split()
    assert row[-2:] == ["-", "-"], "a third-party API has no lease to renew and no load to age"
    again = smmf(
        "register", "--registry", url, "--model", "api", "--url-template", "http://127.0.0.1:9/{USER_PROMPT}",
        "--id", "tpl-api",
    )  # fmt: skip
    assert again.returncode == 2 and "already registered" in again.stderr
    assert smmf("deregister", "tpl-api", "--registry", url).returncode == 0
    async with open_registry(url) as registry:
        assert await registry.get_admin("tpl-api") is None, "deregister removes the admin key too"
    assert smmf("offline", "tpl-api", "--registry", url).returncode == 2


async def test_admin_keys_are_obeyed_after_restart_and_removed_with_the_instance(
    sidecars: Callable[..., SmmfProcess], tmp_path: Path, model: str
) -> None:
    url = f"file://{tmp_path}/r.db"
    port = free_port()
    first = sidecars(url, model, port)
    target = instance_id(model, "127.0.0.1", port)
    async with open_registry(url) as registry:
        await until_up(registry, model, port)
        await registry.put_admin(target, AdminAction.DRAIN)
        await eventually(lambda: in_state(registry, model, port, State.OFFLINE), 15)
        first.stop()
        sidecars(url, model, port)
        await eventually(lambda: in_state(registry, model, port, State.OFFLINE), 30)
        assert smmf("deregister", target, "--registry", url).returncode == 0
        assert await registry.get_admin(target) is None


async def test_a_sidecar_says_once_what_it_is_waiting_for(start_smmf: StartSmmf, tmp_path: Path, model: str) -> None:
    port = free_port()  # nothing listens here, and the sidecar starts no child
    sidecar = start_smmf(
        "sidecar", "--registry", f"file://{tmp_path}/r.db", "--model", model,
        "--upstream", f"http://127.0.0.1:{port}", "--probe-interval", "0.2",
        healthy=False, expect_url=False,
    )  # fmt: skip
    await eventually(lambda: _logged(sidecar, "Connect call failed"), 10)
    await asyncio.sleep(2)  # ten more probes, all refused the same way
    waiting = [line for line in sidecar.log().splitlines() if "upstream not healthy" in line]
    assert len(waiting) == 1, waiting


async def test_a_registry_outage_is_logged_when_it_starts_and_ends(
    sidecars: Callable[..., SmmfProcess], start_etcd: Callable[..., object], model: str
) -> None:
    cluster = start_etcd()
    member = cluster.members[0]  # type: ignore[attr-defined]
    url = cluster.url("/outage-log")  # type: ignore[attr-defined]
    member.stop()
    port = free_port()
    sidecar = sidecars(url, model, port)
    await eventually(lambda: _logged(sidecar, "registering when it answers"), 30)
    await asyncio.sleep(5)  # the sidecar keeps retrying, every second or two
    member.start()
    member.wait_ready()
    async with open_registry(url) as registry:
        await eventually(lambda: in_state(registry, model, port, State.UP), 15)
    # the sidecar logs the recovery once its record is written, so a reader can see the record first
    await eventually(lambda: _logged(sidecar, f"registry {url}: reachable again"), 5)
    lines = sidecar.log().splitlines()
    assert len([line for line in lines if "registering when it answers" in line]) == 1
    assert len([line for line in lines if f"registry {url}: reachable again" in line]) == 1
