"""Registry trust (issue 12): what a client does with records written by someone it should not believe.

A registry record is data from whoever can write the registry.  These tests
write hostile records straight into a real registry and call through
`ModelClient`, against third-party APIs the tests run themselves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smmf.client import ModelClient
from smmf.client.cache import HOLD_EMPTY, InstanceCache
from smmf.errors import NoInstanceAvailable, RecordRejected
from smmf.instance import Instance, Protocol
from smmf.registry import Registry, open_registry
from smmf.registry.keys import instance_key
from smmf.template import HttpTemplate
from tests.support.helpers import eventually, record
from tests.support.upstream_app import Upstream

MESSAGES = [{"role": "user", "content": "hello"}]
SECRET = "s3cr3t-never-to-be-sent"


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[Upstream, Upstream]]:
    good, evil = await Upstream().start(), await Upstream().start()
    try:
        yield good, evil
    finally:
        await good.stop()
        await evil.stop()


def template_record(id: str, url: str, api_key_env: str | None = None, weight: float = 1.0) -> Instance:
    template = HttpTemplate(
        url=f"{url}/template",
        body={"query": {"text": "{USER_PROMPT}"}},
        response_extract="data.items[].attributes.answer",
        api_key_env=api_key_env,
    )
    return Instance(
        id=id, model="tpl", endpoint=template.url, protocol=Protocol.TEMPLATE, template=template, weight=weight
    )


def authorizations(upstream: Upstream) -> list[str | None]:
    return [seen["headers"].get("Authorization") for seen in upstream.seen]


async def test_a_record_cannot_ask_for_a_secret_the_caller_did_not_bind(
    url: str, upstreams: tuple[Upstream, Upstream], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 1: a record naming AWS_SECRET_ACCESS_KEY and a URL of its writer's choosing got the key and prompts."""
    good, evil = upstreams
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    async with open_registry(url) as registry:
        await registry.register(template_record("tpl-good", good.url), ttl=None)
        await registry.register(template_record("tpl-evil", evil.url, "AWS_SECRET_ACCESS_KEY", 1000), ttl=None)
        async with ModelClient(registry) as client:
            for _ in range(5):
                reply = await client.chat.completions.create(model="tpl", messages=MESSAGES)
                assert reply.instance_id == "tpl-good"
    assert evil.seen == [], "no prompt went to the record that asked for a secret"
    assert authorizations(good) == [None] * 5, "and no key went anywhere"


async def test_a_bound_credential_goes_to_its_host_only(
    tmp_path: Path, upstreams: tuple[Upstream, Upstream], monkeypatch: pytest.MonkeyPatch
) -> None:
    good, _ = upstreams
    monkeypatch.setenv("TPL_KEY", SECRET)
    host = good.url.removeprefix("http://")
    same_server_other_name = good.url.replace("127.0.0.1", "localhost")
    async with open_registry(f"file://{tmp_path}/r.db") as registry:
        await registry.register(template_record("tpl-bound", good.url, "TPL_KEY"), ttl=None)
        await registry.register(template_record("tpl-moved", same_server_other_name, "TPL_KEY", 1000), ttl=None)
        async with ModelClient(registry, credentials={host: "TPL_KEY"}) as client:
            for _ in range(3):
                reply = await client.chat.completions.create(model="tpl", messages=MESSAGES)
                assert reply.instance_id == "tpl-bound"
    assert authorizations(good) == [f"Bearer {SECRET}"] * 3


async def test_allowed_hosts_and_networks_limit_where_requests_go(
    tmp_path: Path, upstreams: tuple[Upstream, Upstream]
) -> None:
    good, _ = upstreams
    async with open_registry(f"file://{tmp_path}/r.db") as registry:
        await registry.register(template_record("tpl-local", good.url), ttl=None)
        async with ModelClient(registry, allow=["10.0.0.0/8", "*.example.com"]) as client:
            with pytest.raises(NoInstanceAvailable):
                await client.chat.completions.create(model="tpl", messages=MESSAGES)
        async with ModelClient(registry, allow=["127.0.0.0/8"]) as client:
            reply = await client.chat.completions.create(model="tpl", messages=MESSAGES)
            assert reply.instance_id == "tpl-local"
    assert len(good.seen) == 1


async def write_raw(registry: Registry, key: str, value: dict[str, object] | bytes) -> None:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    await registry.store.put(key, raw)


async def test_hostile_records_are_never_listed_or_routed_to(url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Finding 4: key/id mismatch, an id under another key, a file: endpoint and a 1 MB record."""
    async with open_registry(url) as registry:
        live = record("m")
        await registry.register(live, ttl=None)
        run = {"run": url}  # the warning comes once per key and value: a value of this run
        await write_raw(
            registry,
            instance_key("m", "evil"),
            {"id": live.id, "model": "m", "endpoint": "http://10.9.9.9/v1", "labels": run},
        )
        await write_raw(
            registry,
            instance_key("m", "elsewhere"),
            {"id": "elsewhere", "model": "n", "endpoint": "http://10.9.9.9/v1", "labels": run},
        )
        await write_raw(
            registry,
            instance_key("m", "passwd"),
            {"id": "passwd", "model": "m", "endpoint": "file:///etc/passwd", "labels": run},
        )
        hostile = {"evil", "elsewhere", "passwd", "big"}
        try:
            await write_raw(registry, instance_key("m", "big"), {
                "id": "big", "model": "m", "endpoint": "http://10.9.9.9/v1", "labels": {"x": "y" * 1_000_000} | run,
            })  # fmt: skip
        except RecordRejected:  # Consul holds a record as Meta, which refuses it before anything is written
            hostile.remove("big")
        listed = (await registry.list()).records
        assert [r.id for r in listed] == [live.id] and listed[0].endpoint == live.endpoint
        cache = InstanceCache(registry)
        await cache.start()
        try:
            assert [(p.id, p.record.endpoint) for p in cache.peers("m")] == [(live.id, live.endpoint)]
            assert cache.known_models() == ["m"]
        finally:
            await cache.close()
    refused = {
        r.getMessage().split("'")[1] for r in caplog.records if "skipping invalid instance record" in r.getMessage()
    }
    assert refused == {instance_key("m", k) for k in hostile}


async def test_one_id_in_two_models_are_two_instances(url: str) -> None:
    """Finding 4: the cache keyed records by id: a second key with a live id replaced it, and its delete removed it."""
    async with open_registry(url) as registry:
        shared = "127.0.0.1:1-shared"
        mine = Instance(id=shared, model="a", endpoint="http://127.0.0.1:1/v1")
        theirs = Instance(id=shared, model="b", endpoint="http://127.0.0.1:2/v1")
        await registry.register(mine, ttl=None)
        cache = InstanceCache(registry)
        await cache.start()
        try:
            await registry.register(theirs, ttl=None)
            await eventually(lambda: _holds(cache, "b"), 10)
            assert [p.record.endpoint for p in cache.peers("a")] == [mine.endpoint]
            await registry.store.delete(instance_key("b", shared))
            await registry.register(record("sentinel"), ttl=None)
            await eventually(lambda: _holds(cache, "sentinel"), 10)
            assert [p.record.endpoint for p in cache.peers("a")] == [mine.endpoint]
        finally:
            await cache.close()


async def _holds(cache: InstanceCache, model: str) -> bool:
    return bool(cache.peers(model))


async def test_a_burst_of_expiries_does_not_empty_a_model(registry_url: str) -> None:
    """Finding 5: etcd resumed after a freeze expired every lease at once, and one request found no instance."""
    async with open_registry(registry_url) as registry:
        first, second = record("m"), record("m")
        for each in (first, second):
            await registry.register(each, ttl=None)
        cache = InstanceCache(registry)
        await cache.start()
        try:
            await registry.remove(first.id)
            await registry.remove(second.id)
            await registry.register(record("sentinel"), ttl=None)
            await eventually(lambda: _holds(cache, "sentinel"), 10)
            assert {p.id for p in cache.peers("m")} == {first.id, second.id}, "held back, not emptied"
            await registry.register(second, ttl=None)  # registers again within the hold
            await asyncio.sleep(HOLD_EMPTY)
            await eventually(lambda: _only(cache, "m", {second.id}), 10)
            await registry.remove(second.id)
            await asyncio.sleep(HOLD_EMPTY)
            await eventually(lambda: _gone(cache, "m"), 10)
        finally:
            await cache.close()


async def _only(cache: InstanceCache, model: str, ids: set[str]) -> bool:
    return {p.id for p in cache.peers(model)} == ids


async def _gone(cache: InstanceCache, model: str) -> bool:
    return model not in cache.known_models()


async def test_a_client_never_follows_a_record_to_another_scheme(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="http"):
        Instance(id="x", model="m", endpoint="unix:///run/sock")
    with pytest.raises(ValueError, match="placeholder"):
        HttpTemplate(url="http://{USER_PROMPT}/x", body="{USER_PROMPT}")
