"""What only the Nacos driver does: leases that are connections, pushes, metadata limits, credentials by name.

Against the Nacos emulator (`tests/support/nacos_emulator.py`); the shared
behaviour is in the conformance, sidecar, client and CLI suites.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from smmf.errors import RecordRejected, RegistryDenied, RegistryUnavailable, UnsupportedRegistry
from smmf.instance import State, instance_id
from smmf.registry import Delete, Snapshot, open_registry
from smmf.registry.drivers.nacos_records import service_name
from tests.support.etcd import free_port
from tests.support.helpers import Mirror, eventually, next_event, record
from tests.support.nacos import NacosEmulator
from tests.support.processes import SmmfProcess
from tests.test_lifecycle import sidecar_args

TTL = 2.0


async def test_a_push_that_empties_a_service_reaches_watchers(nacos: NacosEmulator) -> None:
    url = nacos.url("t-empty")
    async with open_registry(url) as writer, open_registry(url) as reader:
        watch = reader.watch("only-one")
        assert isinstance(await next_event(watch), Snapshot)
        lease = await writer.register(record("only-one"), TTL * 5)
        await next_event(watch)
        await lease.revoke()
        gone = await next_event(watch)
        assert isinstance(gone, Delete) and gone.id == lease.record.id, "the last instance's delete must arrive"
        assert (await reader.list("only-one")).records == []
        await watch.aclose()


async def test_a_record_over_the_metadata_limit_is_refused_and_nothing_is_written(nacos: NacosEmulator) -> None:
    async with open_registry(nacos.url("t-big")) as registry:
        big = record("big", labels={f"label{i}": "x" * 40 for i in range(30)})
        with pytest.raises(RecordRejected, match="1024") as refused:
            await registry.register(big, TTL * 5)
        assert refused.value.field == "labels"
        fits = record("big", labels={"zone": "a"})
        await registry.register(fits, TTL * 5)
        assert [r.id for r in (await registry.list("big")).records] == [fits.id]


def test_model_names_become_service_names_the_sdk_can_keep() -> None:
    assert service_name("Qwen/Qwen2.5-7B-Instruct") == "Qwen:Qwen2.5-7B-Instruct"
    assert service_name("a b@@c") == "a-b-c"
    assert len(service_name("m" * 600).encode()) <= 200


async def test_credentials_come_from_the_named_variables(
    start_nacos: Callable[..., NacosEmulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_NACOS_USER", "smmf")
    monkeypatch.setenv("TEST_NACOS_PASSWORD", "s3cret-pass")
    emulator = start_nacos(user_env="TEST_NACOS_USER", password_env="TEST_NACOS_PASSWORD")
    with pytest.raises(UnsupportedRegistry, match="NOT_SET"):
        open_registry(emulator.url("t-auth", username_env="TEST_NACOS_USER", password_env="NOT_SET"))

    async with open_registry(emulator.url("t-auth")) as anonymous:
        with pytest.raises(RegistryDenied):
            await anonymous.list()

    url = emulator.url("t-auth", username_env="TEST_NACOS_USER", password_env="TEST_NACOS_PASSWORD")
    assert "s3cret" not in url
    async with open_registry(url) as registry:
        rec = record("authed")
        await registry.register(rec, ttl=None)
        assert [r.id for r in (await registry.list()).records] == [rec.id]
    logs = "".join(p.read_text(errors="replace") for p in Path(emulator.log_dir / "sdk").rglob("*.log"))
    assert "s3cret-pass" not in logs


async def test_a_frozen_sidecar_disappears_then_registers_again_on_reconnect(
    start_nacos: Callable[..., NacosEmulator], start_smmf: Callable[..., SmmfProcess]
) -> None:
    """The server probes a connection idle for its keep-alive (2 s here) and drops it when nobody answers."""
    emulator = start_nacos(keep_alive=2.0)
    url = emulator.url("t-cut")
    port = free_port()
    sidecar = start_smmf(*sidecar_args(url, "cut", port), healthy=False, expect_url=False)
    rec_id = instance_id("cut", "127.0.0.1", port)
    async with open_registry(url) as registry:
        mirror = Mirror(registry.watch())
        await eventually(lambda: mirror.holds(rec_id), 60)
        os.kill(sidecar.pid, signal.SIGSTOP)
        try:
            await eventually(lambda: mirror.lacks(rec_id), 30)
        finally:
            os.kill(sidecar.pid, signal.SIGCONT)
        await eventually(lambda: mirror.holds(rec_id), 30)
        record_ = await registry.get("cut", rec_id)
        assert record_ is not None and record_.state is State.UP
        await mirror.close()


async def test_a_server_restarted_empty_gets_every_instance_back_and_watchers_keep_theirs(
    start_nacos: Callable[..., NacosEmulator], start_smmf: Callable[..., SmmfProcess]
) -> None:
    emulator = start_nacos()
    url = emulator.url("t-restart")
    port = free_port()
    start_smmf(*sidecar_args(url, "restarted", port), healthy=False, expect_url=False)
    rec_id = instance_id("restarted", "127.0.0.1", port)
    async with open_registry(url) as registry:
        mirror = Mirror(registry.watch())
        await eventually(lambda: mirror.holds(rec_id), 60)
        emulator.stop()
        with pytest.raises(RegistryUnavailable, match=emulator.address):
            await registry.list()
        assert await mirror.holds(rec_id), "a watcher never empties what it holds because the server is away"
        emulator.start()
        await eventually(lambda: _listed(registry, rec_id), 60)
        await eventually(lambda: mirror.holds(rec_id), 30)
        assert mirror.failed is None
        await mirror.close()


async def _listed(registry: object, rec_id: str) -> bool:
    try:
        return rec_id in {r.id for r in (await registry.list()).records}  # type: ignore[attr-defined]
    except RegistryUnavailable:
        return False


async def test_removing_another_process_s_live_instance_is_refused_with_a_way_out(nacos: NacosEmulator) -> None:
    url = nacos.url("t-remove")
    async with open_registry(url) as holder, open_registry(url) as other:
        lease = await holder.register(record("held"), TTL * 5)
        await eventually(lambda: _listed(other, lease.record.id), 10)
        with pytest.raises(Exception, match="offline"):
            await other.remove(lease.record.id)
        assert await holder.get("held", lease.record.id) is not None
