"""Balancing under load: every policy against an oracle, with one instance 3x slower than the rest.

Four `smmf worker sim` instances behind sidecars, each serving one request
at a time (`--slots 1`), one of them three times slower; all have weight 1,
as an operator who does not know which machine is slow would register them.
Open-loop Poisson arrivals at about 70% of the total capacity go through
`ModelClient` with each policy in turn, and through an oracle that always
picks the instance with the shortest true queue (this process is the only
client, so its in-flight count per instance is the true queue).

The policies take turns in each of `--rounds` rounds, and every policy of a
round meets the same arrival times.  The latencies of all rounds are pooled:
a p99 of a single 20-second run rests on its 17 slowest requests, and the
oracle's ranged from 172 to 239 ms between runs.  The per-round p99s are
reported beside the pooled one.

Run: `.venv/bin/python bench/balance.py`.  Writes bench/results/balance.json
and prints p50 and p99 latency per policy.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.report import save, table
from smmf.client import ModelClient, Request
from smmf.client.balancers import register_policy
from smmf.client.peer import Peer
from tests.support.fleet import Fleet

FAST = ("--ttft-ms", "10", "--tpot-ms", "2")  # 10 tokens: 10 + 9 x 2 = 28 ms
SLOW = ("--ttft-ms", "30", "--tpot-ms", "6")  # 3x: 84 ms
TOKENS = 10


class ShortestQueue:
    """The oracle: the instance with the fewest requests actually in flight; ties at random."""

    def __init__(self) -> None:
        self.rng = random.Random(7)

    def pick(self, candidates: Sequence[Peer], request: Request) -> Peer:
        least = min(c.inflight for c in candidates)
        return self.rng.choice([c for c in candidates if c.inflight == least])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def run_policy(client: ModelClient, model: str, policy: str, rate: float, seconds: float, seed: int) -> dict:
    """One open-loop run; the arrival times depend only on `seed`, so every policy of a round meets the same load."""
    rng = random.Random(seed)
    latencies: list[float] = []
    errors = 0
    tasks = []

    async def one(i: int, record: bool) -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            await client.completions.create(
                model=model, prompt=f"request {i}", max_tokens=TOKENS, policy=policy, session_key=f"s{i}"
            )
        except Exception:  # noqa: BLE001 - counted
            errors += 1
            return
        if record:
            latencies.append(time.perf_counter() - started)

    warmup = 2.0
    begin = time.perf_counter()
    next_at = begin
    i = 0
    while next_at - begin < warmup + seconds:
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i, next_at - begin >= warmup)))
        i += 1
        next_at += rng.expovariate(rate)
    await asyncio.gather(*tasks)
    return {"latencies": latencies, "errors": errors}


def summary(policy: str, runs: list[dict]) -> dict:
    """Latencies of all rounds pooled: a p99 from a few thousand samples, not a few hundred."""
    latencies = [x for run in runs for x in run["latencies"]]
    return {
        "policy": policy,
        "requests": len(latencies),
        "errors": sum(run["errors"] for run in runs),
        "p50_ms": round(pct(latencies, 50) * 1000, 1),
        "p99_ms": round(pct(latencies, 99) * 1000, 1),
        "mean_ms": round(statistics.mean(latencies) * 1000, 1),
        "p99_ms_per_round": [round(pct(run["latencies"], 99) * 1000, 1) for run in runs],
    }


async def idle(client: ModelClient, model: str, timeout: float = 30.0) -> None:
    """Wait until every instance has published an idle load, so one policy's backlog does not hurt the next."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(r.load.inflight + r.load.queued == 0 for r in client.models().get(model, [])):
            return
        await asyncio.sleep(0.2)


async def main(args: argparse.Namespace) -> None:
    register_policy("oracle", ShortestQueue)
    fast_s = (10 + (TOKENS - 1) * 2) / 1000
    capacity = 3 / fast_s + 1 / (3 * fast_s)
    rate = args.utilisation * capacity
    with tempfile.TemporaryDirectory() as tmp:
        url = f"file://{tmp}/registry.db"
        fleet = Fleet(url, "bal", [1, 1, 1, 1], Path(tmp), ("--slots", "1", "--slowdown", "0"),
                      member_args=[FAST, FAST, FAST, SLOW])  # fmt: skip
        fleet.start()
        try:
            runs: dict[str, list[dict]] = {policy: [] for policy in args.policies}
            async with ModelClient(url) as client:
                for round_ in range(args.rounds):
                    for policy in args.policies:
                        await idle(client, "bal")
                        print(f"round {round_ + 1}, {policy}: {rate:.1f} req/s for {args.seconds:g}s", flush=True)
                        runs[policy].append(await run_policy(client, "bal", policy, rate, args.seconds, seed=round_))
        finally:
            fleet.stop()
    rows = [summary(policy, policy_runs) for policy, policy_runs in runs.items()]

    by = {row["policy"]: row for row in rows}
    checks = {}
    if {"oracle", "least_loaded"} <= by.keys():
        checks["least_loaded_p99_over_oracle"] = round(by["least_loaded"]["p99_ms"] / by["oracle"]["p99_ms"], 3)
    if {"weighted_random", "least_loaded"} <= by.keys():
        checks["least_loaded_p99_over_weighted_random"] = round(
            by["least_loaded"]["p99_ms"] / by["weighted_random"]["p99_ms"], 3
        )
    body = {
        "setup": {
            "instances": 4,
            "slow_factor": 3,
            "capacity_rps": round(capacity, 1),
            "rate_rps": round(rate, 1),
            "seconds": args.seconds,
            "rounds": args.rounds,
            "service_ms_fast": fast_s * 1000,
        },
        "targets": {"least_loaded_p99_over_oracle": 1.25, "least_loaded_p99_over_weighted_random": 0.5},
        "checks": checks,
        "results": rows,
    }
    print()
    columns = ["policy", "requests", "errors", "p50_ms", "p99_ms", "mean_ms", "p99_ms_per_round"]
    print(table([c.replace("_", " ") for c in columns], [[r[c] for c in columns] for r in rows]))
    for name, value in checks.items():
        print(f"{name}: {value}")
    print("targets: least_loaded p99 <= 1.25 x oracle; <= 0.5 x weighted_random")
    save("balance", body)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per policy and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--utilisation", type=float, default=0.7)
    parser.add_argument(
        "--policies", nargs="+",
        default=["oracle", "least_loaded", "peak_ewma", "round_robin", "weighted_random", "affinity"],
    )  # fmt: skip
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
