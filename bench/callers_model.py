"""The balance benchmark with K callers as a discrete-event model: where the many-callers gap comes from.

`bench/balance.py --callers K` runs K processes on a 2-core machine, so a
gap it shows may be the policy, the information a caller has, or the
machine.  This model keeps the first two and drops the third: the
benchmark's settings in virtual time, FIFO servers with the sim's fixed
service times, a one-way network delay, Poisson arrivals at 70% of capacity
dealt out in turn to K callers, and each caller with its own real balancer
over its own real `Peer`s, fed what a caller of the benchmark hears:

* its own in-flight requests (`Peer.begin` and `Ticket.end`);
* a load report on each of its own responses, the worker's in-flight and
  queued requests as it answered (`Peer.report`);
* each instance's published load, read by its sidecar every load interval
  and seen by each caller up to one file-registry poll later (`Peer.update`).

`smmf.client.peer`'s clock is the model's.  Policies: the real ones by name
(with `bench/balance.py`'s `least_loaded_held`, the policy before figures
below the usual load were aged up), and two references that read the
servers' true state, which no caller has:

* `oracle`: the fewest requests per slot of all instances, ties at random;
  one gateway that sees everything (the benchmark's single-caller oracle);
* `least_loaded_true_others`: `least_loaded` with others' load on each
  instance replaced by the truth; what `least_loaded`'s choice rule does
  with perfect information.

Per policy and K it reports p50 and p99, the share of requests that waited
for a slot while another instance had one free (`queued_with_free_slot`),
how far each pick's figure of an instance's requests was from the truth
(`load_error`, mean absolute; `load_bias`, mean signed), the age of the
freshest figure of others' load the picked peer had (`info_age_ms`), and
each instance's requests per slot (`share_per_slot`, 1 for a fair share).
With `--private` every caller hears each instance's published load at
moments of its own, as old as before but no longer the same figure as
every other caller at once: what is left of the gap then is the figures'
age, and what goes is the callers' acting together on one figure.  With
`--bounces N` a full instance turns a request away at once, with its load
on the refusal, up to N times; the caller picks again among the others and
after the last refusal sends to the best of all (late binding, which smmf
does not do; `bounced` counts refusals per request).

Run: `.venv/bin/python -m bench.callers_model [--setting weights_long]
[--callers 1 4 16] [--load-interval 0.5] [--seeds 3] [--private] [--bounces 3]`.  Writes
bench/results/callers_model_<setting>.json (or `--out`) and prints a table;
three seeds of 60 s take about 20 s a setting.
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from bench.balance import register_bench_policies
from bench.callers import pct
from bench.report import save, table
from smmf.client import peer as peer_module
from smmf.client.balancers import Balancer, LeastLoaded, make
from smmf.client.peer import Peer
from smmf.client.request import Request
from smmf.instance import Instance, Load

#: Per setting: each instance's slots (its weight too) and seconds per request, as in `bench/balance.py`.
SETTINGS: dict[str, tuple[tuple[int, ...], tuple[float, ...]]] = {
    "slow": ((1, 1, 1, 1), (0.028, 0.028, 0.028, 0.084)),
    "weights": ((1, 1, 2, 4), (0.028,) * 4),
    "weights_long": ((1, 1, 2, 4), (0.084,) * 4),
}
#: One-way network delay, seconds; the benchmark's oracle p50 is about 6 ms above the service time.
DELAY = 0.003
#: The file registry's poll: a published load reaches each caller up to this much later.
POLL = 0.05
WARMUP, SECONDS = 10.0, 60.0
REQUEST = Request("m", "/completions", {"prompt": "x"})


class Clock:
    """Virtual time for `smmf.client.peer`, which reads both `time.time()` and `time.monotonic()`."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    monotonic = time


@dataclass
class Server:
    """A FIFO instance with `slots` slots and a fixed service time: the completion times of the requests it holds."""

    slots: int
    service: float
    ends: deque[float] = field(default_factory=deque)

    def held(self, now: float) -> int:
        while self.ends and self.ends[0] <= now:
            self.ends.popleft()
        return len(self.ends)

    def load(self, now: float) -> tuple[int, int]:
        """Requests in flight and queued now, as a worker reports them and its sidecar publishes them."""
        held = self.held(now)
        return min(held, self.slots), max(0, held - self.slots)

    def admit(self, now: float) -> tuple[float, bool]:
        """When a request arriving now is done, and whether it waits for a slot (FIFO, equal service: in order)."""
        start = now if self.held(now) < self.slots else self.ends[-self.slots]
        self.ends.append(start + self.service)
        return start + self.service, start > now


class TrueOthers(LeastLoaded):
    """`least_loaded` fed the truth about others' load: its choice rule with perfect information."""

    def __init__(self, truth: Callable[[Peer], int]) -> None:
        super().__init__()
        self.truth = truth

    def cost(self, peer: Peer) -> float:
        return peer.wait_behind(self.truth(peer))


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    queued_with_free_slot: int = 0
    bounced: int = 0
    errors: list[float] = field(default_factory=list)
    ages: list[float] = field(default_factory=list)
    #: Measured requests per instance.
    served: list[int] = field(default_factory=list)


def run(
    setting: str, policy: str, callers: int, interval: float, seed: int, private: bool = False, bounces: int = 0
) -> Stats:
    """One run of `SECONDS` after `WARMUP`; every policy meets the same arrivals and publication phases for a seed."""
    slots, service = SETTINGS[setting]
    rng = random.Random(seed)
    servers = [Server(n, s) for n, s in zip(slots, service, strict=True)]
    rate = 0.7 * sum(n / s for n, s in zip(slots, service, strict=True))
    records = [Instance(id=f"i{i}", model="m", endpoint=f"http://10.0.0.{i}:8000/v1", weight=n,
                        load=Load(updated_at=0.0))
               for i, n in enumerate(slots)]  # fmt: skip
    index = {record.id: i for i, record in enumerate(records)}
    clock = Clock()
    with mock.patch.object(peer_module, "time", clock):
        views = [[Peer(record) for record in records] for _ in range(callers)]
    events: list[tuple[float, int, tuple[Any, ...]]] = []  # (when, tie-break, what)
    order = 0

    def push(when: float, what: tuple[Any, ...]) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (when, order, what))

    at = 0.0
    while (at := at + rng.expovariate(rate)) < WARMUP + SECONDS:
        push(at, ("arrive",))
    audiences = [[c] for c in range(callers)] if private else [list(range(callers))]
    for i in range(len(servers)):
        for audience in audiences:
            phase = rng.uniform(0, interval)
            while phase < WARMUP + SECONDS:
                push(phase, ("publish", i, audience))
                phase += interval

    #: Requests sent to each instance and not yet answered there, per caller: what a gateway would count.
    sent = [[0] * len(servers) for _ in range(callers)]

    def true_others(caller: int) -> Callable[[Peer], int]:
        return lambda peer: sum(row[index[peer.id]] for row in sent) - sent[caller][index[peer.id]]

    balancers: list[Balancer]
    if policy == "least_loaded_true_others":
        balancers = [TrueOthers(true_others(c)) for c in range(callers)]
    elif policy == "oracle":
        balancers = []
    else:
        balancers = [make(policy) for _ in range(callers)]
    for c, balancer in enumerate(balancers):
        own = getattr(balancer, "rng", None)
        if isinstance(own, random.Random):
            own.seed(seed * 1000 + c)  # so a run repeats exactly
    pick_rng = random.Random(seed + 1)
    stats = Stats(served=[0] * len(servers))
    arrived = 0

    def send(caller: int, started: float, measured: bool, tried: frozenset[str]) -> None:
        """Pick for one attempt of a request (`tried`: instances that turned it away) and send it."""
        last = len(tried) >= min(bounces, len(servers) - 1)
        peers = views[caller] if last else [peer for peer in views[caller] if peer.id not in tried]
        if balancers:
            chosen = balancers[caller].pick(peers, REQUEST)
        else:
            per_slot = [(sum(row[i] for row in sent) + 1) / s.slots for i, s in enumerate(servers)]
            chosen = views[caller][pick_rng.choice([i for i, v in enumerate(per_slot) if v == min(per_slot)])]
        if measured and not tried:
            for peer in peers:
                stats.errors.append(peer.load * peer.record.weight - sum(row[index[peer.id]] for row in sent))
            stats.ages.append(clock.now - max(chosen.record.load.updated_at, (chosen.reported or (0, 0.0))[1]))
        sent[caller][index[chosen.id]] += 1
        push(clock.now + DELAY, ("reach", chosen.begin(), caller, started, measured, tried))

    with mock.patch.object(peer_module, "time", clock):
        while events:
            clock.now, _, what = heapq.heappop(events)
            if what[0] == "arrive":
                send(arrived % callers, clock.now, clock.now >= WARMUP, frozenset())
                arrived += 1
            elif what[0] == "reach":
                _, ticket, caller, started, measured, tried = what
                i = index[ticket.peer.id]
                if servers[i].held(clock.now) >= servers[i].slots and len(tried) < min(bounces, len(servers) - 1):
                    sent[caller][i] -= 1
                    load = servers[i].load(clock.now)
                    push(clock.now + DELAY, ("bounced", ticket, caller, started, measured, tried, load, clock.now))
                    continue
                free_elsewhere = any(s.held(clock.now) < s.slots for j, s in enumerate(servers) if j != i)
                done, waits = servers[i].admit(clock.now)
                if measured and waits and free_elsewhere:
                    stats.queued_with_free_slot += 1
                push(done, ("answer", ticket, caller, started, measured))
            elif what[0] == "bounced":
                _, ticket, caller, started, measured, tried, load, at = what
                ticket.peer.report(*load, at)
                ticket.peer.count(-1)  # neither a success nor a failure: the instance only said it is full
                if measured:
                    stats.bounced += 1
                send(caller, started, measured, tried | {ticket.peer.id})
            elif what[0] == "answer":
                _, ticket, caller, started, measured = what
                i = index[ticket.peer.id]
                sent[caller][i] -= 1
                push(clock.now + DELAY, ("hear", ticket, started, measured, servers[i].load(clock.now), clock.now))
            elif what[0] == "hear":
                _, ticket, started, measured, load, at = what
                ticket.peer.report(*load, at)
                ticket.end(True)
                if measured:
                    stats.latencies.append(clock.now - started)
                    stats.served[index[ticket.peer.id]] += 1
            elif what[0] == "publish":
                _, i, audience = what
                inflight, queued = servers[i].load(clock.now)
                figure = Load(inflight=inflight, queued=queued, updated_at=clock.now)
                record = records[i].model_copy(update={"load": figure})
                for c in audience:
                    push(clock.now + rng.uniform(0, POLL), ("see", c, i, record))
            elif what[0] == "see":
                _, c, i, record = what
                if record.load.updated_at > views[c][i].record.load.updated_at:
                    views[c][i].update(record)
    return stats


def main(args: argparse.Namespace) -> None:
    rows = []
    slots = SETTINGS[args.setting][0]
    for callers in args.callers:
        for policy in args.policies:
            runs = [
                run(args.setting, policy, callers, args.load_interval, seed, args.private, args.bounces)
                for seed in range(args.seeds)
            ]
            latencies = [x for r in runs for x in r.latencies]
            errors = [x for r in runs for x in r.errors]
            rows.append(
                {
                    "callers": callers,
                    "policy": policy,
                    "requests": len(latencies),
                    "p50_ms": round(pct(latencies, 50) * 1000, 1),
                    "p99_ms": round(pct(latencies, 99) * 1000, 1),
                    "p99_ms_per_seed": [round(pct(r.latencies, 99) * 1000, 1) for r in runs],
                    "bounced": round(sum(r.bounced for r in runs) / len(latencies), 4),
                    "queued_with_free_slot": round(sum(r.queued_with_free_slot for r in runs) / len(latencies), 4),
                    "load_error": round(statistics.mean(abs(x) for x in errors), 3) if errors else None,
                    "load_bias": round(statistics.mean(errors), 3) if errors else None,
                    "info_age_ms": round(statistics.median(x for r in runs for x in r.ages) * 1000, 1),
                    "share_per_slot": [
                        round(sum(r.served[i] for r in runs) / len(latencies) * sum(slots) / n, 2)
                        for i, n in enumerate(slots)
                    ],
                }
            )
            print(rows[-1], flush=True)
    oracle = {row["callers"]: row["p99_ms"] for row in rows if row["policy"] == "oracle"}
    reference = oracle.get(1) or next(iter(oracle.values()), None)
    for row in rows:
        row["p99_over_oracle"] = round(row["p99_ms"] / reference, 3) if reference else None
    columns = ["callers", "policy", "p50_ms", "p99_ms", "p99_over_oracle", "bounced", "queued_with_free_slot",
               "load_error", "load_bias", "info_age_ms", "share_per_slot"]  # fmt: skip
    print(table([c.replace("_", " ") for c in columns], [[r[c] for c in columns] for r in rows]))
    setup = {"setting": args.setting, "slots": SETTINGS[args.setting][0], "service_s": SETTINGS[args.setting][1],
             "utilisation": 0.7, "delay_s": DELAY, "poll_s": POLL, "load_interval_s": args.load_interval,
             "seconds": SECONDS, "seeds": args.seeds, "private": args.private, "bounces": args.bounces}  # fmt: skip
    save(args.out or f"callers_model_{args.setting}", {"setup": setup, "results": rows})


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="weights_long")
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--load-interval", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--private", action="store_true", help="each caller's published loads taken at its own moments")
    parser.add_argument(
        "--bounces", type=int, default=0, help="times a full instance may turn a request away to be sent elsewhere"
    )
    parser.add_argument("--out")
    parser.add_argument(
        "--policies", nargs="+",
        default=["oracle", "least_loaded", "least_loaded_held", "least_loaded_true_others", "peak_ewma", "round_robin",
                 "weighted_random"],
    )  # fmt: skip
    return parser.parse_args()


if __name__ == "__main__":
    register_bench_policies()
    main(parse())
