"""The fault suite (issue 12): each scenario of `tests.support.faults`, short, asserting what must hold.

Three sim workers behind sidecars on real etcd, 50 requests a second
through `ModelClient`, TTL 3 s.  `bench/faults.py` runs the same scenarios
longer and writes the results table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import faults
from tests.support.etcd import EtcdCluster

StartEtcd = Callable[..., EtcdCluster]

pytestmark = pytest.mark.timeout(300)


def no_failures(outcome: faults.Outcome) -> None:
    print(outcome.row())
    assert outcome.sent > 0 and outcome.failed == 0, outcome.failures.most_common(3)


@pytest.mark.parametrize("depth", [faults.SHALLOW, faults.DEEP], ids=["shallow", "deep"])
async def test_kill_9_of_a_worker(start_etcd: StartEtcd, tmp_path: Path, depth: int) -> None:
    async with faults.rig(start_etcd(), tmp_path) as rig:
        outcome = await faults.kill_worker(rig, 5, depth)
    no_failures(outcome)
    assert outcome.measured["not routed after s"] <= faults.TTL + 1
    if depth == faults.DEEP:
        assert outcome.measured["in flight at kill"] >= 8, "a deep queue was lost with the worker"


async def test_kill_9_of_a_sidecar(start_etcd: StartEtcd, tmp_path: Path) -> None:
    async with faults.rig(start_etcd(), tmp_path) as rig:
        outcome = await faults.kill_sidecar(rig, 3)
    no_failures(outcome)
    assert outcome.measured["record gone after s"] <= faults.TTL + 1
    assert outcome.measured["worker gone after s"] < 10, "the worker outlived its sidecar"


async def test_etcd_frozen_longer_than_the_ttl(start_etcd: StartEtcd, tmp_path: Path) -> None:
    async with faults.rig(start_etcd(), tmp_path) as rig:
        outcome = await faults.freeze_etcd(rig, 2 * faults.TTL)
    no_failures(outcome)


@pytest.mark.parametrize("keep_data", [True, False], ids=["with-data", "empty"])
async def test_etcd_killed_and_restarted(start_etcd: StartEtcd, tmp_path: Path, keep_data: bool) -> None:
    async with faults.rig(start_etcd(), tmp_path) as rig:
        outcome = await faults.restart_etcd(rig, 3, keep_data)
    no_failures(outcome)
    assert outcome.measured["all back after s"] <= 2


@pytest.mark.parametrize("hang", [False, True], ids=["killed", "hung"])
async def test_one_member_of_three_lost(start_etcd: StartEtcd, tmp_path: Path, hang: bool) -> None:
    async with faults.rig(start_etcd(size=3), tmp_path) as rig:
        outcome = await faults.lose_member(rig, 1, hang)
    no_failures(outcome)
    assert outcome.measured["offline seen after s"] <= 10 and outcome.measured["online seen after s"] <= 10


async def test_rolling_drain_and_restart(start_etcd: StartEtcd, tmp_path: Path) -> None:
    async with faults.rig(start_etcd(), tmp_path) as rig:
        outcome = await faults.rolling_restart(rig)
    no_failures(outcome)
    assert outcome.measured["requests started on an instance that was out"] == 0


async def test_a_record_deleted_under_a_live_lease_comes_back(start_etcd: StartEtcd, tmp_path: Path) -> None:
    async with faults.rig(start_etcd(), tmp_path) as rig:
        outcome = await faults.delete_record(rig)
    no_failures(outcome)
    assert outcome.measured["back after s"] <= faults.PROBE_INTERVAL + 1


async def test_streams_during_a_kill_9(start_etcd: StartEtcd, tmp_path: Path) -> None:
    async with faults.rig(start_etcd(), tmp_path) as rig:
        outcome = await faults.streams_during_kill(rig)
    print(outcome.row())
    assert outcome.measured["hung"] == 0
    assert set(outcome.failures) <= {"StreamInterrupted"}, outcome.failures
    assert outcome.ok + outcome.failed == outcome.sent


async def test_a_file_registry_writer_killed_mid_write(tmp_path: Path) -> None:
    outcome = await faults.kill_file_writer(tmp_path)
    no_failures(outcome)


async def test_hostile_records_are_never_routed_to(start_etcd: StartEtcd, tmp_path: Path) -> None:
    async with faults.rig(start_etcd(), tmp_path) as rig:
        outcome = await faults.hostile_records(rig, 3)
    no_failures(outcome)
    assert outcome.measured["answered by a hostile record"] == 0 and outcome.measured["calls at the bait"] == 0


async def test_a_watch_compacted_under_churn_ends_equal_to_the_registry(start_etcd: StartEtcd, tmp_path: Path) -> None:
    async with faults.rig(start_etcd(), tmp_path) as rig:
        outcome = await faults.compaction_under_churn(rig, 5)
    no_failures(outcome)
    assert outcome.measured["compactions"] >= 5 and outcome.measured["client equals registry after s"] < 10
