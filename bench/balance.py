"""Balancing under load, with one caller or many: every policy against an oracle.

Four `smmf worker sim` instances behind sidecars.  Three settings:

- `slow` (default): each serves one request at a time (`--slots 1`), one of
  them three times slower; all have weight 1, as an operator who does not
  know which machine is slow would register them.
- `weights`: weights 1, 1, 2 and 4 with as many slots, all of one speed.
- `weights_long`: the same with requests three times as long (84 ms), so
  a third of the rate and a third of the work for the processes on the
  machine: it tells what the machine's load does to `weights` from what
  the policy does (at sixteen callers, the gap stayed: `bench/README.md`).

Open-loop Poisson arrivals at about 70% of the total capacity go through
`ModelClient` with each policy in turn.  The arrivals are split evenly
between `--callers K` separate caller processes, each with its own
`ModelClient` and its own watch of the registry, as the replicas of an
application would be: each sees only its own requests and what the
registry and the workers' responses tell it.  With one caller the oracle
runs too: it picks the instance with the shortest true queue (that caller
is the only one, so its in-flight count per instance is the true queue);
with several there is no oracle, and every K is compared with the
single-caller oracle.

The policies take turns in each of `--rounds` rounds, and every policy of a
round meets the same arrival times, split the same way.  Each caller count
starts with 10 unmeasured seconds of the default policy, so the first
policy timed meets callers that have learnt the instances as the others
do.  The latencies of all rounds are pooled: a p99 of a single 20-second
run rests on its 17 slowest requests, and the oracle's ranged from 172 to
239 ms between runs.
The per-round p99s are reported beside the pooled one.

Run: `.venv/bin/python -m bench.balance [--callers 1 4 16] [--setting weights]`.
Writes bench/results/balance.json (balance_<setting>.json for the other
settings) and prints p50 and p99 latency per caller count and policy.
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

from bench.callers import WARMUP, Callers, arrivals, idle, latency_row, pct, run_main
from bench.report import save, table
from smmf.client import ModelClient, Request
from smmf.client.balancers import LeastLoaded, register_policy
from smmf.client.peer import Peer
from tests.support.fleet import Fleet

FAST: tuple[str, ...] = ("--ttft-ms", "10", "--tpot-ms", "2")  # 10 tokens: 10 + 9 x 2 = 28 ms
SLOW: tuple[str, ...] = ("--ttft-ms", "30", "--tpot-ms", "6")  # 3x: 84 ms
TOKENS = 10


class ShortestQueue:
    """The oracle: the instance with the fewest requests actually in flight per slot; ties at random.

    Per slot (weight, which is the slot count in both settings): counted
    whole, a one-slot instance with one request in flight lost to a
    four-slot one with two, and the oracle queued behind it while round
    robin did not, at half the oracle's p99.
    """

    def __init__(self) -> None:
        self.rng = random.Random(7)

    def pick(self, candidates: Sequence[Peer], request: Request) -> Peer:
        def per_slot(peer: Peer) -> float:
            return (peer.inflight + 1) / peer.record.weight

        least = min(per_slot(c) for c in candidates)
        return self.rng.choice([c for c in candidates if per_slot(c) == least])


class UniformPairs(LeastLoaded):
    """`least_loaded` as it drew its two candidates before weights: uniformly, for comparison in the same run."""

    def pair(self, candidates: Sequence[Peer]) -> tuple[Peer, Peer]:
        a, b = self.rng.sample(candidates, 2)
        return a, b


class PublishedOnly(LeastLoaded):
    """`least_loaded` without the load reported on responses: others' load as the sidecars published it."""

    def cost(self, peer: Peer) -> float:
        return peer.wait_behind(peer.aged(peer.published_others, peer.record.load.updated_at))


class HeldBelowUsual(LeastLoaded):
    """`least_loaded` as it aged others' load until 2026-12-06: down to the usual load, but a figure below it held."""

    def cost(self, peer: Peer) -> float:
        others, at = peer.heard
        return peer.wait_behind(peer.aged(others, at) if others > peer.usual else others)


def register_bench_policies() -> None:
    register_policy("oracle", ShortestQueue)
    register_policy("least_loaded_published", PublishedOnly)
    register_policy("least_loaded_held", HeldBelowUsual)
    register_policy("least_loaded_uniform", UniformPairs)


async def send_arrivals(client: ModelClient, model: str, run: dict) -> dict:
    """One open-loop run from wall-clock time `begin`; requests in the warm-up are sent but not measured."""
    policy, offsets, begin = run["policy"], run["arrivals"], run["begin"]
    latencies: list[float] = []
    errors = 0

    async def one(at: float) -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            await client.completions.create(
                model=model, prompt=f"request {at}", max_tokens=TOKENS, policy=policy, session_key=f"s{at}"
            )
        except Exception:  # noqa: BLE001 - counted
            errors += 1
            return
        if at >= WARMUP:
            latencies.append(time.perf_counter() - started)

    tasks = []
    for at in offsets:
        await asyncio.sleep(max(0.0, begin + at - time.time()))
        tasks.append(asyncio.create_task(one(at)))
    await asyncio.gather(*tasks)
    return {"latencies": latencies, "errors": errors}


def summary(callers: int, policy: str, runs: list[dict]) -> dict:
    latencies = [x for run in runs for x in run["latencies"]]
    return {
        **latency_row(callers, policy, runs, "latencies"),
        "mean_ms": round(statistics.mean(latencies) * 1000, 1),
        "p99_ms_per_round": [round(pct(run["latencies"], 99) * 1000, 1) for run in runs],
    }


FAST_S = (10 + (TOKENS - 1) * 2) / 1000
#: Per setting: weights, each member's sim options, and the capacity in requests per second.
SETTINGS: dict[str, tuple[list[float], list[tuple[str, ...]], float]] = {
    "slow": (
        [1, 1, 1, 1],
        [("--slots", "1", *FAST)] * 3 + [("--slots", "1", *SLOW)],
        3 / FAST_S + 1 / (3 * FAST_S),
    ),
    "weights": (
        [1, 1, 2, 4],
        [("--slots", str(n), *FAST) for n in (1, 1, 2, 4)],
        8 / FAST_S,
    ),
    "weights_long": (
        [1, 1, 2, 4],
        [("--slots", str(n), *SLOW) for n in (1, 1, 2, 4)],
        8 / (3 * FAST_S),
    ),
}


def checks(rows: list[dict], default: str) -> dict[str, float]:
    """The default policy's p99 over the single-caller oracle's, and over weighted_random's, for each K."""
    by = {(row["callers"], row["policy"]): row["p99_ms"] for row in rows}
    found = {}
    oracle = by.get((1, "oracle"))
    for callers in sorted({row["callers"] for row in rows}):
        mine = by.get((callers, default))
        if mine is None:
            continue
        if oracle:
            found[f"{default}_p99_over_oracle_k{callers}"] = round(mine / oracle, 3)
        if by.get((callers, "weighted_random")):
            found[f"{default}_p99_over_weighted_random_k{callers}"] = round(mine / by[(callers, "weighted_random")], 3)
    return found


async def main(args: argparse.Namespace) -> None:
    weights, member_args, capacity = SETTINGS[args.setting]
    rate = args.utilisation * capacity
    runs: dict[tuple[int, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"file://{tmp}/registry.db"
        sim = ("--slowdown", "0")
        fleet = Fleet(url, "bal", weights, Path(tmp), sim, member_args=member_args, load_interval=args.load_interval)
        fleet.start()
        try:
            async with ModelClient(url) as watcher:
                for count in args.callers:
                    policies = [p for p in args.policies if p != "oracle" or count == 1]
                    async with Callers("bench.balance", url, "bal", count) as callers:
                        # Unmeasured: new callers learn latencies and usual loads before any policy is timed;
                        # without it the first policy of a count met them cold (p50 147 ms against 126).
                        await idle(watcher, "bal")
                        await callers.run(args.default, arrivals(rate, 0.0, seed=args.rounds))
                        for round_ in range(args.rounds):
                            offsets = arrivals(rate, args.seconds, seed=round_)
                            for policy in policies:
                                await idle(watcher, "bal")
                                print(f"{count} caller(s), round {round_ + 1}, {policy}: "
                                      f"{rate:.1f} req/s for {args.seconds:g}s", flush=True)  # fmt: skip
                                runs.setdefault((count, policy), []).append(await callers.run(policy, offsets))
        finally:
            fleet.stop()
    rows = [summary(count, policy, policy_runs) for (count, policy), policy_runs in runs.items()]
    found = checks(rows, args.default)
    body = {
        "setup": {
            "setting": args.setting,
            "instances": len(weights),
            "weights": weights,
            "members": [" ".join(m) for m in member_args],
            "capacity_rps": round(capacity, 1),
            "rate_rps": round(rate, 1),
            "seconds": args.seconds,
            "rounds": args.rounds,
            "callers": args.callers,
            "service_ms_fast": FAST_S * 1000,
            "load_interval_s": args.load_interval,
        },
        "targets": {"p99_over_oracle": 1.25, "p99_over_weighted_random": 0.5},
        "checks": found,
        "results": rows,
    }
    print()
    columns = ["callers", "policy", "requests", "errors", "p50_ms", "p99_ms", "mean_ms", "p99_ms_per_round"]
    print(table([c.replace("_", " ") for c in columns], [[r[c] for c in columns] for r in rows]))
    for name, value in found.items():
        print(f"{name}: {value}")
    print(f"targets: {args.default} p99 <= 1.25 x the single-caller oracle; <= 0.5 x weighted_random")
    save(args.out or ("balance" if args.setting == "slow" else f"balance_{args.setting}"), body)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per policy and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--utilisation", type=float, default=0.7)
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="slow")
    parser.add_argument(
        "--load-interval", type=float, default=0.5, help="seconds between the sidecars' load writes to the registry"
    )
    parser.add_argument("--out", help="the results file's name (default: from the setting)")
    parser.add_argument("--callers", type=int, nargs="+", default=[1], help="caller processes; one run per count")
    parser.add_argument("--default", default="least_loaded", help="the policy the targets are checked for")
    parser.add_argument(
        "--policies", nargs="+",
        default=["oracle", "least_loaded", "least_loaded_published", "peak_ewma", "round_robin", "weighted_random",
                 "affinity"],
    )  # fmt: skip
    parser.add_argument("--caller-of", nargs=2, metavar=("URL", "MODEL"), help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    run_main(arguments, send_arrivals, register_bench_policies, lambda: main(arguments))
