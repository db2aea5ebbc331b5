"""The embedded SQLite registry: sharing between OS processes, sweeping, tombstones, compaction."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smmf.registry import Put, RegistryUnavailable, Snapshot, open_registry
from tests.support.helpers import Mirror, eventually, next_event, record
from tests.support.processes import ROOT

TTL = 2.0


async def test_one_process_registers_while_another_watches(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/shared.db"
    async with open_registry(url) as registry:
        mirror = Mirror(registry.watch())
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.support.registrant", url, "gemma", "127.0.0.1:9-child", str(TTL)],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            assert child.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 20)
            assert line.strip() == b"registered"
            await eventually(lambda: mirror.holds("127.0.0.1:9-child"), 2)
            assert mirror.items["127.0.0.1:9-child"].backend == "sim"

            await asyncio.sleep(TTL * 1.5)
            assert "127.0.0.1:9-child" in mirror.items, "the child's keepalive holds the record"

            child.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            child.wait(timeout=10)
            # Nobody is left to clean up but the watcher: its polling sweeps the expired lease.
            await eventually(lambda: mirror.lacks("127.0.0.1:9-child"), TTL + 1)
            assert time.monotonic() - killed <= TTL + 1.5
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            await mirror.close()


async def test_deletes_leave_tombstones(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    async with open_registry(f"file://{db}") as registry:
        rec = record()
        lease = await registry.register(rec, TTL)
        await lease.revoke()
    rows = sqlite3.connect(db).execute("SELECT key, value FROM changes ORDER BY revision").fetchall()
    assert [(key, value is None) for key, value in rows] == [
        (f"instances/m/{rec.id}", False),
        (f"instances/m/{rec.id}", True),
    ]


async def test_change_log_is_compacted_and_a_lagging_watcher_resyncs(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    async with open_registry(f"file://{db}?history=20") as registry:
        first, second = record(), record()
        await registry.register(first, ttl=None)
        await registry.register(second, ttl=None)
        watch = registry.watch()
        snap = await next_event(watch)  # listed; the change-log poll has not started yet
        assert isinstance(snap, Snapshot) and len(snap.items) == 2

        for weight in range(1, 101):
            await registry.store.put(f"instances/m/{first.id}", first.model_copy(update={"weight": weight}).to_json())
        await registry.remove(second.id)

        kept = sqlite3.connect(db).execute("SELECT COUNT(*), MIN(revision) FROM changes").fetchone()
        assert kept[0] <= 20 + 20 // 10 and kept[1] > snap.revision, "old change-log rows are compacted"

        events = [await next_event(watch), await next_event(watch)]
        by_id = {e.id: e for e in events}
        assert type(by_id[second.id]).__name__ == "Delete"
        put = by_id[first.id]
        assert isinstance(put, Put) and put.value.weight == 100
        await watch.aclose()


async def test_an_unusable_path_is_reported_with_its_address(tmp_path: Path) -> None:
    blocker = tmp_path / "a-directory"
    blocker.mkdir()  # where the database file should be
    async with open_registry(f"file://{blocker}") as registry:
        with pytest.raises(RegistryUnavailable, match="a-directory"):
            await registry.list()
