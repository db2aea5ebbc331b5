"""The prefix benchmark's setting as a discrete-event model: what `affinity` does over many random key layouts.

`bench/prefix.py` runs real processes, and one run sees one layout of the
tenants' keys on the instances (its salt makes the hashes new): whether
some instance draws eight of the sixteen prefixes, and thrashes, is chance,
and two runs of a policy can differ more than two policies.  This model
runs the same setting, in virtual time and in a few seconds per layout,
over many salts: four instances with 4 slots each and the sim's own
`PrefixCache` (1,024 blocks of 16 tokens, 8 of the 16 tenants' prompts),
16 tenants with Zipf popularity, 2,048-token system prompts and 24-token
turns, Poisson arrivals at 60 a second dealt out to K callers, each with
its own balancer over its own real `Peer` objects (its own in-flight
counts, no load reports); a first token after 5 ms plus 0.05 ms per
uncached prompt token and the wait for a slot, 8 tokens at 2 ms.  Only
the cache and the queues are modelled: no network, no CPU contention, so
its times are lower than the benchmark's and only the misses compare.

Policies: `affinity` as it is; `affinity_before`, the policy before keys
were placed (2026-12-05: each key's first instance in rank within the
share bound over 100 picks and a load slack of one request, else the next
in rank); `affinity_unbounded`, the ring alone (no bound, no spread).

Run: `.venv/bin/python -m bench.prefix_model [--salts 10] [--callers 1 4]
[--tenants 16] [--zipf 1.0] [--carried]`.  Writes
bench/results/prefix_model.json (or prefix_model_<tenants>t_z<zipf>.json
for another workload, and `_carried` after either when each layout is
measured on balancers that have just served another one, as in the
benchmark's second round, where the caller processes keep theirs) and prints
per policy and K the missed share (first token later than half a whole
prompt's prefill), TTFT p99 per salt, hit rate and the largest share.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from bench.report import save, table
from smmf.client.balancers import Affinity, Balancer, affinity_key
from smmf.client.peer import Peer
from smmf.client.placement import ranked
from smmf.client.request import Request
from smmf.instance import Instance
from smmf.worker.backends.prefix_cache import PrefixCache

INSTANCES, SLOTS = 4, 4
SYSTEM_TOKENS, TURN_TOKENS, BLOCK_TOKENS = 2048, 24, 16
CACHE_BLOCKS = 8 * SYSTEM_TOKENS // BLOCK_TOKENS
PREFILL_S_PER_TOKEN, FIRST_S, NEXT_S, TOKENS = 0.05e-3, 5e-3, 2e-3, 8
RATE, WARMUP, SECONDS = 60.0, 10.0, 20.0
MISSED_S = SYSTEM_TOKENS * PREFILL_S_PER_TOKEN / 2


class AffinityBefore(Affinity):
    """`affinity` before placement: the key's first instance in rank within the bound, else the next in rank."""

    def __init__(self) -> None:
        super().__init__(window=100, load_slack=1)

    def pick(self, candidates: Sequence[Peer], request: Request) -> Peer:
        key = affinity_key(request)
        assert key is not None
        room = {c.id for c in self.within_bound(candidates)}
        chosen = next((c for c in ranked(candidates, key) if c.id in room), None) or candidates[0]
        self.recent.add(chosen.id)
        return chosen


POLICIES: dict[str, Callable[[], Balancer]] = {
    "affinity": Affinity,
    "affinity_before": AffinityBefore,
    "affinity_unbounded": lambda: Affinity(epsilon=1e6, spread=math.inf),
}


def run(
    policy: Callable[[], Balancer],
    salt: int,
    callers: int,
    tenants: int,
    zipf: float,
    balancers: Sequence[Balancer] | None = None,
) -> dict[str, Any]:
    """One layout (`salt`): arrivals, picks, slots and caches in virtual time; the measured requests' outcome.

    `balancers`, one per caller, are used as they are (as a caller process
    of the benchmark keeps its balancer from one round to the next); else
    each caller gets a new one.
    """
    rng = random.Random(salt)
    ids = [f"10.0.0.{i}:8000-m" for i in range(INSTANCES)]
    caches = [PrefixCache(CACHE_BLOCKS, BLOCK_TOKENS) for _ in ids]
    balancers = balancers or [policy() for _ in range(callers)]
    records = [Instance(id=i, model="m", endpoint=f"http://{i.split('-')[0]}/v1") for i in ids]
    views = [[Peer(record) for record in records] for _ in range(callers)]
    systems = [[f"s{salt}", *(f"t{t}w{i}" for i in range(SYSTEM_TOKENS))] for t in range(tenants)]
    popularity = [1 / (rank + 1) ** zipf for rank in range(tenants)]
    arrivals: list[tuple[float, int]] = []
    at = 0.0
    while (at := at + rng.expovariate(RATE)) < WARMUP + SECONDS:
        arrivals.append((at, rng.choices(range(tenants), popularity)[0]))
    events = [(when, n) for n, (when, _) in enumerate(arrivals)]  # n: an arrival; ~n: request n ends
    heapq.heapify(events)
    busy, waiting = [0] * INSTANCES, [list[int]() for _ in ids]
    served: dict[int, int] = {}
    ttfts: list[float] = []
    shares: Counter[int] = Counter()
    queries = hits = 0

    def start(instance: int, n: int, now: float) -> None:
        nonlocal queries, hits
        when, tenant = arrivals[n]
        tokens = systems[tenant] + [f"u{n}x{j}" for j in range(TURN_TOKENS)]
        hit = caches[instance].admit(tokens)
        queries, hits = queries + len(tokens), hits + hit
        first = now + FIRST_S + (len(tokens) - hit) * PREFILL_S_PER_TOKEN
        if when >= WARMUP:
            ttfts.append(first - when)
            shares[instance] += 1
        busy[instance] += 1
        heapq.heappush(events, (first + (TOKENS - 1) * NEXT_S, ~n))

    while events:
        now, n = heapq.heappop(events)
        if n >= 0:
            tenant = arrivals[n][1]
            prompt = " ".join(systems[tenant][:100])
            request = Request("m", "/chat/completions", {"messages": [{"role": "system", "content": prompt}]})
            peer = balancers[n % callers].pick(views[n % callers], request)
            peer.count(+1)
            served[n] = instance = ids.index(peer.id)
            if busy[instance] < SLOTS:
                start(instance, n, now)
            else:
                waiting[instance].append(n)
        else:
            n = ~n
            instance = served[n]
            busy[instance] -= 1
            views[n % callers][instance].count(-1)
            if waiting[instance]:
                start(instance, waiting[instance].pop(0), now)
    ttfts.sort()
    return {
        "missed": sum(t > MISSED_S for t in ttfts) / len(ttfts),
        "ttft_p99_ms": round(ttfts[int(0.99 * len(ttfts))] * 1000, 1),
        "hit_rate": hits / queries,
        "max_share_over_mean": max(shares.values()) * INSTANCES / sum(shares.values()),
    }


def layout(policy: Callable[[], Balancer], salt: int, callers: int, args: argparse.Namespace) -> dict[str, Any]:
    """A run of layout `salt`; with `--carried`, by balancers that have just served another (a second round)."""
    if not args.carried:
        return run(policy, salt, callers, args.tenants, args.zipf)
    balancers = [policy() for _ in range(callers)]
    run(policy, args.salts + salt, callers, args.tenants, args.zipf, balancers)
    return run(policy, salt, callers, args.tenants, args.zipf, balancers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--salts", type=int, default=10, help="key layouts per policy and caller count")
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--tenants", type=int, default=16)
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument(
        "--carried", action="store_true", help="measure each layout on balancers that have just served another one"
    )
    args = parser.parse_args()
    rows = []
    for callers in args.callers:
        for name in args.policies:
            runs = [layout(POLICIES[name], salt, callers, args) for salt in range(args.salts)]
            rows.append({
                "callers": callers,
                "policy": name,
                "missed_mean": round(statistics.mean(r["missed"] for r in runs), 4),
                "missed_worst": round(max(r["missed"] for r in runs), 4),
                "salts_p99_on_a_miss": sum(r["ttft_p99_ms"] * 1e-3 > MISSED_S for r in runs),
                "ttft_p99_ms": sorted(r["ttft_p99_ms"] for r in runs),
                "hit_rate": round(statistics.mean(r["hit_rate"] for r in runs), 3),
                "max_share_over_mean": round(max(r["max_share_over_mean"] for r in runs), 2),
            })  # fmt: skip
            print(f"{callers} caller(s), {name}: done", flush=True)
    columns = ["callers", "policy", "missed_mean", "missed_worst", "salts_p99_on_a_miss", "hit_rate",
               "max_share_over_mean", "ttft_p99_ms"]  # fmt: skip
    print(table([c.replace("_", " ") for c in columns], [[r[c] for c in columns] for r in rows]))
    setup = {"instances": INSTANCES, "slots": SLOTS, "tenants": args.tenants, "zipf": args.zipf, "rate_rps": RATE,
             "salts": args.salts, "cache_blocks": CACHE_BLOCKS, "system_tokens": SYSTEM_TOKENS,
             "carried": args.carried}  # fmt: skip
    name = "prefix_model" if (args.tenants, args.zipf) == (16, 1.0) else f"prefix_model_{args.tenants}t_z{args.zipf:g}"
    name += "_carried" if args.carried else ""
    save(name, {"setup": setup, "results": rows})


if __name__ == "__main__":
    main()
