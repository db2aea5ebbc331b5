"""The registry protocol, checked the same way against every driver (memory, file, real etcd)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest

from smmf.errors import AlreadyRegistered, RecordRejected
from smmf.instance import Load, State
from smmf.registry import AdminAction, Delete, Put, Registry, Snapshot, open_registry
from smmf.registry.keys import instance_key, key_id
from smmf.template import HttpTemplate
from tests.support.helpers import Mirror, eventually, next_event, record

# etcd raises any TTL below 2 s to 2 s, so every driver is tested at 2 s.
TTL = 2.0


async def ids(registry: Registry, model: str | None = None) -> set[str]:
    return {r.id for r in (await registry.list(model)).records}


async def test_register_list_and_watch(registry: Registry) -> None:
    watch = registry.watch()
    first = await next_event(watch)
    assert isinstance(first, Snapshot) and first.items == {}

    a = record("llama/gemma-3-270m")
    b = record("minilm", kind="embedding", weight=2.5, labels={"zone": "a"})
    lease_a = await registry.register(a, TTL * 5)
    await registry.register(b, TTL * 5)

    put_a, put_b = await next_event(watch), await next_event(watch)
    assert isinstance(put_a, Put) and put_a.id == a.id and put_a.value.alive_at is not None, "the lease stamps liveness"
    assert put_a.value == a.model_copy(update={"alive_at": put_a.value.alive_at})
    assert isinstance(put_b, Put) and put_b.revision > put_a.revision
    b = b.model_copy(update={"alive_at": put_b.value.alive_at})
    assert put_b.value == b

    listing = await registry.list()
    assert {r.id for r in listing.records} == {a.id, b.id}
    assert listing.revision >= put_b.revision
    assert await ids(registry, "llama/gemma-3-270m") == {a.id}
    assert await ids(registry, "llama") == set(), "a model name must not match as a prefix of another"

    only_b = registry.watch("minilm")
    snap = await next_event(only_b)
    assert isinstance(snap, Snapshot) and snap.ids == {b.id} and snap.values == [b]

    await lease_a.revoke()
    gone = await next_event(watch)
    assert isinstance(gone, Delete) and gone.id == a.id
    assert await ids(registry) == {b.id}

    late = registry.watch()
    late_snap = await next_event(late)
    assert isinstance(late_snap, Snapshot) and late_snap.ids == {b.id}
    for w in (watch, only_b, late):
        await w.aclose()


async def test_record_expires_when_keepalive_stops(registry: Registry) -> None:
    rec = record()
    lease = await registry.register(rec, TTL)
    keepalive = asyncio.create_task(lease.keepalive())
    mirror = Mirror(registry.watch())
    await eventually(lambda: mirror.holds(rec.id), 5)

    await asyncio.sleep(TTL * 1.5)
    assert await ids(registry) == {rec.id}, "keepalive must hold the record past its TTL"

    keepalive.cancel()
    stopped = time.monotonic()
    await eventually(lambda: _lacks_listing(registry, rec.id), TTL + 1)
    await eventually(lambda: mirror.lacks(rec.id), 1)
    assert time.monotonic() - stopped <= TTL + 1 + 0.5
    await mirror.close()


async def _lacks_listing(registry: Registry, key: str) -> bool:
    return key not in await ids(registry)


async def test_reregisters_after_lease_is_lost(
    registry: Registry, registry_url: str, request: pytest.FixtureRequest
) -> None:
    rec = record()
    lease = await registry.register(rec, TTL)
    first_lease = lease.lease_id
    keepalive = asyncio.create_task(lease.keepalive())
    mirror = Mirror(registry.watch())
    await eventually(lambda: mirror.holds(rec.id), 5)

    if registry_url.startswith("nacos://"):
        # A Nacos lease is its connection, and no other client can end it: the server drops it, as it does
        # one that stopped answering.  The SDK connects again and registers the instance again itself.
        assert request.getfixturevalue("nacos").drop(rec.model)
        await eventually(lambda: _connections_publishing(request, rec.model), 10)
        await eventually(lambda: mirror.holds(rec.id), 10)
        assert await ids(registry) == {rec.id}
        keepalive.cancel()
        await lease.revoke()
        await mirror.close()
        return

    async with open_registry(registry_url) as other:  # someone else drops the lease: as after a registry restart
        assert first_lease is not None
        await other.store.revoke(first_lease)

    await eventually(lambda: mirror.saw_delete(rec.id), 5)
    await eventually(lambda: mirror.holds(rec.id), TTL)

    async def registered_again() -> bool:
        # The lease counts the write when its reply comes back, which a watch can show the record before.
        return lease.reacquired == 1 and lease.lease_id != first_lease

    await eventually(registered_again, 5)
    assert await ids(registry) == {rec.id}
    keepalive.cancel()
    await lease.revoke()
    await mirror.close()


async def _connections_publishing(request: pytest.FixtureRequest, service: str) -> bool:
    return bool(request.getfixturevalue("nacos").publishing(service))


async def test_update_keeps_the_same_lease(registry: Registry) -> None:
    rec = record()
    lease = await registry.register(rec, TTL)
    lease_id = lease.lease_id
    watch = registry.watch()
    await next_event(watch)

    busy = rec.model_copy(update={"state": State.DRAINING, "load": Load(inflight=3, queued=1)})
    await lease.update(busy)
    event = await next_event(watch)
    assert isinstance(event, Put) and event.value.state is State.DRAINING and event.value.load.inflight == 3
    assert lease.lease_id == lease_id
    (stored,) = (await registry.list()).records
    assert stored.load.queued == 1

    with pytest.raises(ValueError, match="model and id"):
        await lease.update(rec.model_copy(update={"model": "other"}))

    # Nothing keeps the lease alive: the updated record goes with it.
    gone = await next_event(watch, timeout=TTL + 2)
    assert isinstance(gone, Delete) and gone.id == rec.id
    await watch.aclose()


async def test_persistent_record_lives_until_removed(registry: Registry) -> None:
    url = "https://api.example.invalid/v1/chat?q={USER_PROMPT}"
    rec = record(protocol="template", endpoint=url, template=HttpTemplate(url=url, method="GET"))
    lease = await registry.register(rec, ttl=None)
    assert lease.lease_id is None
    await asyncio.sleep(TTL + 0.5)
    assert await ids(registry) == {rec.id}
    assert await registry.remove(rec.id) is True
    assert await ids(registry) == set()
    assert await registry.remove(rec.id) is False


async def test_admin_keys(registry: Registry) -> None:
    assert await registry.get_admin("i-1") is None
    mine = registry.watch_admin("i-1")
    first = await next_event(mine)
    assert isinstance(first, Snapshot) and first.items == {}

    await registry.put_admin("i-2", AdminAction.OFFLINE)
    await registry.put_admin("i-1", "drain", requested_by="test")
    event = await next_event(mine)
    assert isinstance(event, Put) and event.id == "i-1" and event.value.action is AdminAction.DRAIN
    assert event.value.requested_by == "test"

    state = await registry.get_admin("i-1")
    assert state is not None and state.action is AdminAction.DRAIN

    await registry.put_admin("i-1", AdminAction.DRAIN)  # the same action again is a new request
    again = await next_event(mine)
    assert isinstance(again, Put) and again.value.requested_at >= event.value.requested_at

    everyone = registry.watch_admin()
    snap = await next_event(everyone)
    assert isinstance(snap, Snapshot) and {key_id(k): v.action for k, v in snap.items.items()} == {
        "i-1": AdminAction.DRAIN,
        "i-2": AdminAction.OFFLINE,
    }

    assert await registry.delete_admin("i-1") is True
    assert isinstance(await next_event(mine), Delete)
    assert await registry.delete_admin("i-1") is False
    with pytest.raises(ValueError):
        await registry.put_admin("i-1", "explode")
    await mine.aclose()
    await everyone.aclose()


async def test_malformed_records_are_skipped(registry: Registry, caplog: pytest.LogCaptureFixture) -> None:
    good = record()
    await registry.register(good, TTL * 5)
    suffix = uuid.uuid4().hex[:6]  # warnings are reported once per key and value per process
    bad_json = instance_key("m", f"broken-json-{suffix}")
    bad_field = instance_key("m", f"negative-weight-{suffix}")
    try:
        await registry.store.put(bad_json, b"{not json")
    except RecordRejected:  # Consul stores a record as service fields, so bad JSON cannot get in: a bad field can
        await registry.store.put(bad_json, b'{"load": "not json"}')
    negative = record(id=f"negative-weight-{suffix}").to_json().replace(b'"weight":1.0', b'"weight":-1')
    await registry.store.put(bad_field, negative)

    with caplog.at_level(logging.WARNING, logger="smmf.instance"):
        assert await ids(registry) == {good.id}
    assert any(bad_json in m for m in caplog.messages), caplog.messages
    assert any(bad_field in m and "weight" in m for m in caplog.messages), caplog.messages

    watch = registry.watch()
    snap = await next_event(watch)
    assert isinstance(snap, Snapshot) and snap.ids == {good.id}

    # A record that turns bad disappears for readers; a good one after it still arrives.
    await registry.store.put(instance_key(good.model, good.id), b'{"id": 42}')
    turned_bad = await next_event(watch)
    assert isinstance(turned_bad, Delete) and turned_bad.id == good.id
    later = record()
    await registry.register(later, TTL * 5)
    event = await next_event(watch)
    assert isinstance(event, Put) and event.id == later.id
    await watch.aclose()


async def test_ttl_must_be_positive(registry: Registry) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await registry.register(record(), ttl=0)


async def test_an_exclusive_registration_never_replaces_another_holders_record(registry: Registry) -> None:
    rec = record()
    first = await registry.register(rec, TTL * 5, exclusive=True)
    impostor = rec.model_copy(update={"endpoint": "http://10.9.9.9:1/v1"})
    with pytest.raises(AlreadyRegistered):
        await registry.register(impostor, TTL * 5, exclusive=True)
    held = await registry.get(rec.model, rec.id)
    assert held is not None and held.endpoint == rec.endpoint, "the holder's record is untouched"
    await first.revoke()
    again = await registry.register(impostor, TTL * 5, exclusive=True)  # free once its holder let go
    assert (await registry.get(rec.model, rec.id)).endpoint == impostor.endpoint  # type: ignore[union-attr]
    await again.revoke()


async def test_a_leased_record_says_when_it_was_last_confirmed_alive(registry: Registry) -> None:
    leased = await registry.register(record(), TTL, heartbeat=TTL / 2)
    keepalive = asyncio.create_task(leased.keepalive())
    try:
        first = await registry.get(leased.record.model, leased.record.id)
        assert first is not None and first.alive_at is not None and time.time() - first.alive_at < TTL

        async def renewed() -> bool:
            now = await registry.get(leased.record.model, leased.record.id)
            return now is not None and (now.alive_at or 0) > (first.alive_at or 0)

        await eventually(renewed, 3 * TTL)
    finally:
        keepalive.cancel()
        await leased.revoke()
    persistent = await registry.register(record(), ttl=None)
    stored = await registry.get(persistent.record.model, persistent.record.id)
    assert stored is not None and stored.alive_at is None, "nothing keeps a persistent record alive"
    await persistent.revoke()


async def test_remove_takes_the_admin_key_with_the_record(registry: Registry) -> None:
    rec = record()
    await registry.register(rec, ttl=None)
    await registry.put_admin(rec.id, AdminAction.OFFLINE)
    assert await registry.remove(rec.id)
    assert await registry.get(rec.model, rec.id) is None and await registry.get_admin(rec.id) is None
    await registry.put_admin("only-an-admin-key", AdminAction.OFFLINE)
    assert await registry.remove("only-an-admin-key"), "an admin key alone is something to remove"
    assert not await registry.remove("only-an-admin-key")


async def test_a_record_deleted_under_its_live_lease_is_written_again(registry: Registry) -> None:
    """Issue 12, finding 6: a live sidecar's deleted key stayed deleted until the instance's load changed."""
    rec = record()
    lease = await registry.register(rec, TTL * 5, exclusive=True, check=0.2)
    keepalive = asyncio.create_task(lease.keepalive())

    async def rewritten() -> int:
        # In Consul the record's TTL check is its lease, and deleting the service deletes it: the lease is lost.
        return lease.reacquired if "consul" in registry.url else lease.restored

    try:
        assert await registry.store.delete(lease.key)
        await eventually(lambda: registry.get(rec.model, rec.id), 10)
        # The lease counts the write when its reply comes back, which this client can see the record before.
        await eventually(rewritten, 10)
        assert await rewritten() == 1
    finally:
        keepalive.cancel()
        await lease.revoke()


async def test_a_lost_lease_found_by_two_writers_at_once_is_registered_again_once(registry: Registry) -> None:
    """CI of stop 24: after a 30 s registry outage a sidecar's keepalive and its load update both found the
    lease gone and both registered again; the second found the first's record, took it for another holder's,
    and the sidecar stopped its worker."""
    rec = record()
    lease = await registry.register(rec, TTL * 5, exclusive=True)
    assert lease.lease_id is not None
    await registry.store.revoke(lease.lease_id)  # the lease expired while the registry was away
    await asyncio.gather(lease.update(rec), lease.update(rec.model_copy(update={"weight": 2.0})))
    held = await registry.get(rec.model, rec.id)
    assert held is not None and lease.reacquired == 1
    await lease.revoke()
