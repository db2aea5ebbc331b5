"""What only the Consul driver does: blocking-query indexes, TTL checks as leases, the reaper, ACLs, Meta limits.

Every test here runs against the Consul emulator (`tests/support/consul_emulator.py`); the shared behaviour
of every driver is in `test_registry_conformance.py`.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
from collections.abc import Callable

import pytest

from smmf.errors import RecordRejected, RegistryDenied, RegistryUnavailable, UnsupportedRegistry
from smmf.registry import Registry, open_registry
from smmf.registry.drivers.consul_records import service_name
from tests.support.consul import ConsulEmulator
from tests.support.etcd import free_port
from tests.support.helpers import Mirror, eventually, record

TTL = 2.0
StartConsul = Callable[..., ConsulEmulator]


def _health(emulator: ConsulEmulator, model: str, token: str | None = None) -> list[dict[str, object]]:
    """Every instance of a model as Consul lists it, passing or not (as `curl /v1/health/service/<name>`)."""
    return emulator.call("GET", f"/v1/health/service/{service_name(model)}", token=token)  # type: ignore[no-any-return]


async def _ids(registry: Registry) -> set[str]:
    return {r.id for r in (await registry.list()).records}


async def test_a_service_reads_as_its_record_in_the_consul_ui(consul: ConsulEmulator) -> None:
    async with open_registry(consul.url("/ui")) as registry:
        rec = record("Qwen/Qwen2.5-7B-Instruct", weight=2.5, labels={"zone": "a"})
        lease = await registry.register(rec, TTL * 5)
        (entry,) = _health(consul, rec.model)
        service = entry["Service"]
        assert isinstance(service, dict)
        assert service["Service"] == "qwen-qwen2-5-7b-instruct" and service["ID"] == rec.id
        port = int(rec.endpoint.rsplit(":", 1)[1].split("/")[0])
        assert (service["Address"], service["Port"], service["Weights"]) == (
            "127.0.0.1",
            port,
            {"Passing": 2, "Warning": 1},
        )
        meta = service["Meta"]
        assert meta["model"] == rec.model and meta["url"] == rec.endpoint and meta["weight"] == "2.5"
        assert json.loads(meta["labels"]) == {"zone": "a"} and "inflight" in json.loads(meta["load"])
        assert service["Tags"] == ["smmf", "smmf-prefix=ui", "up"]
        checks = {c["CheckID"]: c for c in entry["Checks"]}  # type: ignore[union-attr]
        assert checks[f"service:{rec.id}"]["Status"] == "passing" and checks[f"service:{rec.id}"]["Type"] == "ttl"
        assert checks["serfHealth"]["Status"] == "passing"
        await lease.revoke()
        assert _health(consul, rec.model) == []


async def test_services_smmf_did_not_write_are_ignored(consul: ConsulEmulator) -> None:
    url = consul.url("/foreign")
    # Named and described as a record would be, but without smmf's tags: only the tags tell it apart.
    foreign = {"Name": "web", "ID": "web-1", "Port": 80, "Meta": {"id": "web-1", "model": "web", "url": "http://h/v1"}}
    consul.call("PUT", "/v1/agent/service/register", foreign)
    async with open_registry(url) as registry:
        assert await _ids(registry) == set()
        consul.call("PUT", "/v1/agent/service/deregister/web-1")


async def test_an_index_that_goes_backwards_starts_over(start_consul: StartConsul) -> None:
    """After a restore from an older snapshot every index is lower: a watch that kept its index would miss all."""
    emulator = start_consul()
    async with open_registry(emulator.url("/idx", wait="1")) as registry:
        mirror = Mirror(registry.watch())
        first = record()
        await registry.register(first, ttl=None)
        await eventually(lambda: mirror.holds(first.id), 5)
        emulator.reset_index()
        second = record()
        await registry.register(second, ttl=None)  # written at a lower index than the watch waits beyond
        await eventually(lambda: mirror.holds(second.id), 10)
        await mirror.close()


async def test_a_lease_whose_check_the_agent_lost_registers_again(consul: ConsulEmulator) -> None:
    async with open_registry(consul.url("/lost")) as registry:
        rec = record("lost-check")
        lease = await registry.register(rec, TTL, check=0.2)
        keepalive = asyncio.create_task(lease.keepalive())
        try:
            service = {"Name": service_name(rec.model), "ID": rec.id, "Meta": {"model": rec.model}}
            # The check replaced by one without a TTL: passing it is a 500 "does not have associated TTL".
            http_check = {"CheckID": f"service:{rec.id}", "HTTP": "http://127.0.0.1:9/", "Interval": "10s"}
            consul.call(
                "PUT", "/v1/agent/service/register?replace-existing-checks=true", service | {"Check": http_check}
            )
            await eventually(lambda: asyncio.to_thread(lambda: lease.reacquired == 1), 10)
            # The check gone altogether: passing it is a 404 "Unknown check ID".
            consul.call("PUT", "/v1/agent/service/register?replace-existing-checks=true", service)
            await eventually(lambda: asyncio.to_thread(lambda: lease.reacquired == 2), 10)
            await eventually(lambda: registry.get(rec.model, rec.id), 5)
            (entry,) = _health(consul, rec.model)
            assert [c["Type"] for c in entry["Checks"]] == ["", "ttl"]  # type: ignore[index]
        finally:
            keepalive.cancel()
            await lease.revoke()


async def test_an_expired_record_is_absent_at_once_and_reaped_later(start_consul: StartConsul) -> None:
    """Consul keeps a dead instance, critical, until the reaper runs: smmf must not route to it meanwhile."""
    emulator = start_consul(reaper_speedup=30)  # the 1-minute minimum becomes 2 s, the 30 s reaper 1 s
    async with open_registry(emulator.url("/reap")) as registry:
        rec = record("reaped")
        await registry.register(rec, TTL)  # nothing keeps it alive
        await eventually(lambda: _lacks(registry, rec.id), TTL + 1)
        (entry,) = _health(emulator, rec.model)
        check = entry["Checks"][1]  # type: ignore[index]
        assert (check["Status"], check["Output"]) == ("critical", "TTL expired")
        assert check["Definition"]["DeregisterCriticalServiceAfterDuration"] == "1m0s", "raised to Consul's minimum"
        await eventually(lambda: asyncio.to_thread(lambda: _health(emulator, rec.model) == []), 10)


async def _lacks(registry: Registry, instance_id: str) -> bool:
    return instance_id not in await _ids(registry)


async def test_the_acl_token_comes_from_the_environment(
    start_consul: StartConsul, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "b1gs3cr3t-0000-4000-8000-000000000000"
    monkeypatch.setenv("SMMF_TEST_CONSUL_TOKEN", token)
    emulator = start_consul(token_env="SMMF_TEST_CONSUL_TOKEN")
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    async with open_registry(emulator.url("/acl")) as anonymous:
        with pytest.raises(RegistryDenied) as denied:
            await anonymous.list()
        assert token not in str(denied.value)
    monkeypatch.setenv("TEAM_CONSUL_TOKEN", token)
    async with open_registry(emulator.url("/acl", token_env="TEAM_CONSUL_TOKEN")) as registry:
        rec = record()
        await registry.register(rec, ttl=None)
        await registry.put_admin(rec.id, "offline")
        assert await _ids(registry) == {rec.id} and await registry.get_admin(rec.id) is not None
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", token)  # Consul's own variable, when the URL names none
    async with open_registry(emulator.url("/acl")) as registry:
        assert await _ids(registry) == {rec.id}
    with pytest.raises(UnsupportedRegistry, match="NOT_SET_ANYWHERE"):
        open_registry(emulator.url("/acl", token_env="NOT_SET_ANYWHERE"))
    with pytest.raises(urllib.error.HTTPError) as refused:
        emulator.call("GET", "/v1/catalog/services", token="wrong")
    assert refused.value.code == 403


async def test_a_record_that_cannot_fit_is_refused_whole(consul: ConsulEmulator) -> None:
    async with open_registry(consul.url("/meta")) as registry:
        big = record(
            "big-labels", labels={f"k{i}": "v" * 100 for i in range(400)}
        )  # ~42 KiB of labels: over 64 keys of 512 bytes
        with pytest.raises(RecordRejected, match=r"'labels'.*64 Meta keys"):
            await registry.register(big, ttl=None)
        long = record(
            "long-labels", labels={f"k{i}": "é" * 50 for i in range(20)}
        )  # over 512 bytes: spread over labels, labels-2
        lease = await registry.register(long, ttl=None)
        assert (await registry.get(long.model, long.id)).labels == long.labels  # type: ignore[union-attr]
        (entry,) = _health(consul, long.model)
        meta = entry["Service"]["Meta"]  # type: ignore[index]
        assert {"labels", "labels-2"} <= set(meta) and all(len(v.encode()) <= 512 for v in meta.values())
        await lease.revoke()
        assert await _ids(registry) == set(), "nothing was written for the refused record"


def test_the_emulator_checks_meta_as_consul_does(consul: ConsulEmulator) -> None:
    cases = {
        "consul-version": "Key prefix 'consul-' is reserved for internal use",
        "bad key": "Key contains invalid characters",
        "k" * 129: "Key is too long (limit: 128 characters)",
    }
    for key, message in cases.items():
        with pytest.raises(urllib.error.HTTPError) as refused:
            consul.call("PUT", "/v1/agent/service/register", {"Name": "m", "Meta": {key: "v"}})
        assert refused.value.code == 400
        assert (
            refused.value.read().decode()
            == f"Invalid Service Meta: Couldn't load metadata pair ('{key}', 'v'): {message}"
        )


async def test_an_unreachable_consul_is_named() -> None:
    address = f"127.0.0.1:{free_port()}"
    async with open_registry(f"consul://{address}/x?timeout=1") as registry:
        with pytest.raises(RegistryUnavailable, match=address):
            await registry.list()


async def test_a_watch_keeps_what_it_has_while_consul_is_away(start_consul: StartConsul) -> None:
    emulator = start_consul()
    async with open_registry(emulator.url("/away", wait="2")) as registry:
        rec = record()
        await registry.register(rec, ttl=None)
        mirror = Mirror(registry.watch())
        await eventually(lambda: mirror.holds(rec.id), 5)
        emulator.stop()
        await asyncio.sleep(3)
        assert await mirror.holds(rec.id), "nothing is deleted because Consul is away"
        emulator.start()  # empty, as an agent restarted without its data: the persistent record is gone with it
        again = record()
        await registry.register(again, ttl=None)
        await eventually(lambda: mirror.holds_exactly(again.id), 15)
        await mirror.close()
