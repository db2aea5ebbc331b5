"""Fault benchmark: the fault suite's scenarios, run longer, as one table of what failed and what was measured.

Each scenario starts its own etcd (one member, or three), three sim workers
behind sidecars (TTL 3 s) and a `ModelClient` sending 50 non-streaming
requests a second, applies one fault, and counts every request's outcome.
The scenarios live in `tests/support/faults.py`, shared with `tests/faults`.

Run: `.venv/bin/python -m bench.faults [--freeze 30] [--only NAME]`.  Writes
bench/results/faults.json and prints the table.  Every process is started
here and stopped by PID afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.report import save, table
from tests.support import faults
from tests.support.etcd import EtcdCluster

Scenario = Callable[[faults.Rig], Awaitable[faults.Outcome]]


def scenarios(freeze: float) -> dict[str, tuple[int, Scenario]]:
    """name: (etcd members, scenario)."""
    return {
        "kill-worker-shallow": (1, lambda rig: faults.kill_worker(rig, 15, faults.SHALLOW)),
        "kill-worker-deep": (1, lambda rig: faults.kill_worker(rig, 15, faults.DEEP)),
        "kill-sidecar": (1, lambda rig: faults.kill_sidecar(rig, 15)),
        "freeze-etcd": (1, lambda rig: faults.freeze_etcd(rig, freeze)),
        "restart-etcd-with-data": (1, lambda rig: faults.restart_etcd(rig, 5, True)),
        "restart-etcd-empty": (1, lambda rig: faults.restart_etcd(rig, 5, False)),
        "kill-member": (3, lambda rig: faults.lose_member(rig, 10, False)),
        "hang-member": (3, lambda rig: faults.lose_member(rig, 10, True)),
        "rolling-restart": (1, faults.rolling_restart),
        "delete-record": (1, faults.delete_record),
        "hostile-records": (1, lambda rig: faults.hostile_records(rig, 10)),
        "compaction-under-churn": (1, lambda rig: faults.compaction_under_churn(rig, 15)),
        "streams-during-kill": (1, lambda rig: faults.streams_during_kill(rig, 12)),
    }


async def run(name: str, members: int, scenario: Scenario, scratch: Path) -> faults.Outcome:
    cluster = EtcdCluster(scratch / name / "etcd", members)
    await asyncio.to_thread(cluster.start)
    try:
        async with faults.rig(cluster, scratch / name) as rig:
            return await scenario(rig)
    finally:
        await asyncio.to_thread(cluster.stop)


async def main(args: argparse.Namespace) -> None:
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="smmf-faults-") as scratch:
        for name, (members, scenario) in scenarios(args.freeze).items():
            if args.only and name not in args.only:
                continue
            outcome = await run(name, members, scenario, Path(scratch))
            print(f"{name}: {outcome.row()}", flush=True)
            outcomes.append(outcome)
        if not args.only or "file-writer" in args.only:
            outcomes.append(await faults.kill_file_writer(Path(scratch), after=2000))
    rows = [outcome.row() for outcome in outcomes]
    save("faults", {"rate_per_s": 50, "ttl_s": faults.TTL, "scenarios": rows})
    print(
        table(
            ["scenario", "sent", "ok", "failed", "measured"],
            [
                [o.scenario, o.sent, o.ok, o.failed, "; ".join(f"{k} {v:.2f}" for k, v in o.measured.items())]
                for o in outcomes
            ],
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--freeze", type=float, default=30.0, help="seconds etcd stays frozen")
    parser.add_argument("--only", action="append", help="run only these scenarios (repeatable)")
    asyncio.run(main(parser.parse_args()))
