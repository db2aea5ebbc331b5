"""etcd-specific behaviour against real etcd processes: compaction, restarts, clusters, outages."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import aetcd
import pytest

from smmf.registry import AdminAction, Put, RegistryUnavailable, Snapshot, open_registry
from tests.support.etcd import EtcdCluster, EtcdMember, free_port
from tests.support.helpers import Mirror, eventually, held_and_watched, next_event, record

TTL = 2.0

StartEtcd = Callable[..., EtcdCluster]


async def _compact_now(member: EtcdMember) -> int:
    async with aetcd.Client(host="127.0.0.1", port=member.client_port) as raw:
        revision = (await raw.get_prefix(b"/")).header.revision
        await raw.compact(revision, physical=True)
        return revision


async def test_watch_recovers_after_compaction_past_its_revision(etcd: EtcdCluster) -> None:
    async with open_registry(etcd.url("/compaction")) as registry:
        keep, drop = record(), record()
        await registry.register(keep, ttl=None)
        await registry.register(drop, ttl=None)

        watch = registry.watch()
        snap = await next_event(watch)  # listed at revision R; the etcd watch from R+1 is not created yet
        assert isinstance(snap, Snapshot) and snap.ids == {keep.id, drop.id}

        added = record()
        await registry.register(added, ttl=None)
        await registry.remove(drop.id)
        changed = keep.model_copy(update={"weight": 7.0})
        await registry.store.put(f"instances/m/{keep.id}", changed.to_json())
        compacted_at = await _compact_now(etcd.members[0])
        assert compacted_at > snap.revision

        # Resuming from R+1 now hits compaction: the watcher lists again and emits exactly the difference.
        events = [await next_event(watch) for _ in range(3)]
        assert {(type(e).__name__, e.id) for e in events} == {
            ("Delete", drop.id),
            ("Put", added.id),
            ("Put", keep.id),
        }
        assert next(e for e in events if isinstance(e, Put) and e.id == keep.id).value.weight == 7.0

        # And it keeps streaming normally afterwards.
        late = record()
        await registry.register(late, ttl=None)
        event = await next_event(watch)
        assert isinstance(event, Put) and event.id == late.id
        await watch.aclose()


async def test_etcd_stopped_for_five_seconds(start_etcd: StartEtcd) -> None:
    cluster = start_etcd()
    async with held_and_watched(cluster.url("/restart"), TTL) as held:
        orphan = record()
        await held.holder.register(orphan, TTL)  # its holder "dies" now: nothing keeps it alive
        await eventually(lambda: held.mirror.holds(orphan.id), 5)

        cluster.members[0].stop()
        await asyncio.sleep(5)
        assert held.record.id in held.mirror.items, "an outage must not empty the watcher's cache"
        assert held.mirror.failed is None

        cluster.members[0].start()
        cluster.members[0].wait_ready()
        answered = time.monotonic()
        newcomer = record()
        await held.holder.register(newcomer, ttl=None)

        await eventually(lambda: held.mirror.holds_exactly(held.record.id, newcomer.id), TTL + 5)
        assert time.monotonic() - answered < TTL + 5
        assert held.mirror.snapshots == 1, "resync emits a difference, never a second snapshot"
        assert await held.mirror.saw_delete(orphan.id)

        await asyncio.sleep(TTL * 1.5)  # the kept lease really is alive again, not just not-yet-expired
        assert {r.id for r in (await held.holder.list()).records} == {held.record.id, newcomer.id}


async def test_cluster_keeps_working_when_a_member_is_lost(start_etcd: StartEtcd) -> None:
    cluster = start_etcd(size=3)
    async with held_and_watched(cluster.url("/cluster"), TTL) as held:
        cluster.members[0].stop(signal.SIGKILL)  # the first endpoint, the one both clients use

        second = record()
        await held.holder.register(second, TTL * 5)
        await eventually(lambda: held.mirror.holds(held.record.id, second.id), 10)
        await asyncio.sleep(TTL * 1.5)
        assert {r.id for r in (await held.watcher.list()).records} == {held.record.id, second.id}
        assert held.lease.reacquired == 0, "the lease lives in the cluster, not in one member"


async def test_a_hung_member_costs_a_watch_a_few_seconds_not_its_sight(start_etcd: StartEtcd) -> None:
    """Issue 12, finding 2: with the first member SIGSTOPped, watches neither failed nor progressed, for a minute."""
    cluster = start_etcd(size=3)
    hung = cluster.members[0]
    others = "etcd://" + ",".join(m.endpoint for m in cluster.members[1:]) + "/hung"
    async with held_and_watched(cluster.url("/hung"), TTL) as held, open_registry(others) as operator:
        admin = Mirror(held.watcher.watch_admin(held.record.id))
        await eventually(lambda: _snapshot_seen(admin), 10)
        assert hung.proc is not None
        hung.proc.send_signal(signal.SIGSTOP)
        try:
            newcomer = record()
            await operator.register(newcomer, TTL * 5)
            await operator.put_admin(held.record.id, AdminAction.OFFLINE)
            await eventually(lambda: held.mirror.holds(newcomer.id), 20)
            await eventually(lambda: admin.holds(held.record.id), 20)
            await admin.close()
        finally:
            hung.proc.send_signal(signal.SIGCONT)


async def test_unreachable_etcd(start_etcd: StartEtcd) -> None:
    port = free_port()
    url = f"etcd://127.0.0.1:{port}/down"
    async with open_registry(url) as registry:
        with pytest.raises(RegistryUnavailable, match=f"127.0.0.1:{port}"):
            await registry.list()

        mirror = Mirror(registry.watch())
        await asyncio.sleep(1.5)
        assert mirror.failed is None and not mirror.events, "watch keeps retrying quietly; it does not end"

        start_etcd(client_ports=[port])
        await eventually(lambda: _snapshot_seen(mirror), 5)
        await mirror.close()


async def _snapshot_seen(mirror: Mirror) -> bool:
    return mirror.snapshots == 1
