"""Prefix-cache-aware routing: does a shared prompt prefix find the instance that has it cached?

T tenants, each with its own long system prompt, called with Zipf
popularity and short user turns, by K caller processes sharing one
arrival schedule (`bench/callers.py`).  Four `smmf worker sim` instances
model vLLM's prefix cache (`--prefix-cache-blocks`, blocks of 16 tokens,
LRU): their combined cache holds every tenant's prefix, no single one does,
and every uncached prompt token adds prefill time to the first token.
Every run has prompts of its own, so each starts cold and warms up during
its first `WARMUP` seconds, which are sent but not measured; the hit rate
and prefill tokens count the whole run, warm-up included.

Per policy: time to first token p50 and p99, the prefix-cache hit rate and
the prefill tokens computed (from the workers' own counters, named after
vLLM's), and each instance's share of requests.  A first token later than
half a whole prompt's prefill is `missed`; each response's usage says how
much of its prompt was cached, so `not found` (less than half) and `slow
but found` tell the two reasons apart.  The reference is one
caller with perfect knowledge (`prefix_oracle`, bench-only): it keeps an
exact copy of every instance's cache, since all requests are its own, and
sends each request to the instance holding most of its prompt, within the
same load bound as `affinity`.

Run: `.venv/bin/python -m bench.prefix [--callers 1 4] [--seconds 20] [--rounds 2]`.
Writes bench/results/prefix.json and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from bench.callers import Callers, arrivals, idle, latency_row, run_main
from bench.report import save, table
from smmf.client import ModelClient, Request, Stream
from smmf.client.balancers import Affinity, register_policy
from smmf.client.peer import Peer
from smmf.sidecar.probe import UpstreamType, parse_load
from smmf.worker.backends.prefix_cache import PrefixCache
from smmf.worker.backends.sim import prompt_of
from smmf.worker.requests import ChatRequest
from tests.support.fleet import Fleet

INSTANCES = 4
TENANTS = 16
#: Tokens (words) in each tenant's system prompt, and in a user turn.
SYSTEM_TOKENS = 2048
TURN_TOKENS = 24
BLOCK_TOKENS = 16
#: Each instance's cache: 8 of the 16 tenants' prefixes; the four together hold all of them twice over.
CACHE_BLOCKS = 8 * SYSTEM_TOKENS // BLOCK_TOKENS
ZIPF = 1.0
PREFILL_MS_PER_TOKEN = 0.05
#: A first token later than this (half a whole system prompt's prefill) is counted as a request that missed the cache.
MISSED_S = SYSTEM_TOKENS * PREFILL_MS_PER_TOKEN / 1000 / 2
#: Unmeasured seconds at the start of each run, in which the caches warm (every run's prompts are new).
WARMUP = 10.0
MAX_TOKENS = 8
SIM = (
    "--slots", "4", "--slowdown", "0", "--ttft-ms", "5", "--tpot-ms", "2",
    "--prefill-ms-per-token", str(PREFILL_MS_PER_TOKEN),
    "--prefix-cache-blocks", str(CACHE_BLOCKS), "--block-tokens", str(BLOCK_TOKENS),
)  # fmt: skip


def system_prompt(tenant: int, salt: str, words: int = SYSTEM_TOKENS) -> str:
    """`salt` (one per run) leads, so every block's chained hash is new and no run finds what the one before cached."""
    return " ".join([salt, *(f"t{tenant}w{i}" for i in range(words))])


def user_turn(seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(f"u{rng.randrange(10**6)}" for _ in range(TURN_TOKENS))


def messages(run: dict[str, Any], tenant: int, seed: int) -> list[dict[str, str]]:
    system = system_prompt(tenant, run["salt"], run.get("system_words", SYSTEM_TOKENS))
    return [{"role": "system", "content": system}, {"role": "user", "content": user_turn(seed)}]


def prompt_tokens(request: Request) -> list[str]:
    """The tokens the sim backend sees for a chat request, by the sim's own reading of it."""
    return prompt_of(ChatRequest.model_validate(request.body)).split()


class PerfectKnowledge:
    """The reference: one caller that sees every request, so it can mirror every instance's cache exactly.

    Each request goes to the instance holding the longest prefix of its
    prompt among those within `affinity`'s load bound; ties go to the less
    loaded.  The mirror is updated as the request is sent, as the instance
    will update its cache.
    """

    def __init__(self) -> None:
        self.bound = Affinity()
        self.caches: dict[str, PrefixCache] = {}

    def pick(self, candidates: Sequence[Peer], request: Request) -> Peer:
        tokens = prompt_tokens(request)
        room = self.bound.within_bound(candidates) or list(candidates)
        for peer in room:
            self.caches.setdefault(peer.id, PrefixCache(CACHE_BLOCKS, BLOCK_TOKENS))
        best = max(room, key=lambda p: (self.caches[p.id].cached(tokens), -p.load))
        self.caches[best.id].admit(tokens)
        self.bound.recent.add(best.id)
        return best


def unbounded() -> Affinity:
    """The ring alone (a diagnostic): every prefix on its first instance in rank, however popular; no bound, no spread.

    It measures what placement and the bounds cost and give: misses, against
    the share the most popular tenant's instance then takes.
    """
    return Affinity(epsilon=1e6, spread=math.inf)


def register_bench_policies() -> None:
    register_policy("prefix_oracle", PerfectKnowledge)
    register_policy("affinity_unbounded", unbounded)


def schedule(rate: float, seconds: float, seed: int, tenants: int = TENANTS) -> list[list[float | int]]:
    """(offset, tenant, turn seed) per arrival; tenants by Zipf popularity; depends only on `seed`."""
    rng = random.Random(seed + 1000)
    weights = [1 / (rank + 1) ** ZIPF for rank in range(tenants)]
    offsets = arrivals(rate, seconds, seed, WARMUP)
    return [[at, rng.choices(range(tenants), weights)[0], rng.randrange(2**31)] for at in offsets]


def _open(client: ModelClient, model: str, run: dict[str, Any], tenant: int, seed: int) -> Awaitable[Stream[Any]]:
    """The turn as a streamed chat request, or as a completion of the same text (`run["api"]`).

    A completion suits a base model with no chat template (the bundled Gemma on vLLM).
    """
    turn = messages(run, tenant, seed)
    common: dict[str, Any] = {
        "model": model, "max_tokens": MAX_TOKENS, "stream": True, "policy": run["policy"],
        "stream_options": {"include_usage": True},
    }  # fmt: skip
    if run.get("api") == "completions":
        return client.completions.create(prompt="\n".join(m["content"] for m in turn), **common)
    return client.chat.completions.create(messages=turn, **common)


async def send_turns(client: ModelClient, model: str, run: dict[str, Any]) -> dict[str, Any]:
    """One open-loop run of streamed turns; time to first token measured after the warm-up.

    `found` is, per measured turn, the share of its prompt the server says
    it found in its prefix cache (`usage.prompt_tokens_details`), or None
    where it does not say: it tells a turn that missed the cache from one
    that was slow for another reason.
    """
    ttfts: list[float] = []
    found: list[float | None] = []
    instances: list[str] = []
    failures: list[str] = []

    async def one(at: float, tenant: int, seed: int) -> None:
        started = time.perf_counter()
        cached = None
        try:
            stream = await _open(client, model, run, tenant, seed)
            first = None
            async for chunk in stream:
                first = first or time.perf_counter()
                details = chunk.usage and chunk.usage.prompt_tokens_details
                if details and details.cached_tokens is not None and chunk.usage.prompt_tokens:
                    cached = details.cached_tokens / chunk.usage.prompt_tokens
        except Exception as exc:  # noqa: BLE001 - counted, and the first kept to say why
            failures.append(f"{type(exc).__name__}: {exc}"[:300])
            return
        if at >= WARMUP and first is not None:
            ttfts.append(first - started)
            found.append(cached)
            instances.append(stream.instance_id)

    tasks = []
    for at, tenant, seed in run["arrivals"]:
        await asyncio.sleep(max(0.0, run["begin"] + at - time.time()))
        tasks.append(asyncio.create_task(one(at, tenant, seed)))
    await asyncio.gather(*tasks)
    return {"ttfts": ttfts, "found": found, "instances": instances, "errors": len(failures), "failures": failures[:1]}


async def cache_counts(ports: list[int], kind: UpstreamType = UpstreamType.SMMF) -> tuple[float, float]:
    """Prompt tokens looked up and found, summed over the servers' own counters."""
    queries = hits = 0.0
    async with aiohttp.ClientSession() as session:
        for port in ports:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as reply:
                sample = parse_load(await reply.text(), kind)
            assert sample is not None and sample.prefix_queries is not None and sample.prefix_hits is not None
            queries += sample.prefix_queries
            hits += sample.prefix_hits
    return queries, hits


def summary(
    callers: int, policy: str, runs: list[dict[str, Any]], instances: int, missed_s: float | None = MISSED_S
) -> dict[str, Any]:
    """A row of the table; `missed` only where a miss has a known cost (`missed_s`; the sim's, not vLLM's)."""
    row = latency_row(callers, policy, runs, "ttfts", "ttft_", (50, 90, 99))
    ttfts = [t for run in runs for t in run["ttfts"]]
    found = [f for run in runs for f in run["found"]]
    reported = [(t, f) for t, f in zip(ttfts, found, strict=True) if f is not None]
    shares = Counter(i for run in runs for i in run["instances"])
    queries = sum(run["queries"] for run in runs)
    hits = sum(run["hits"] for run in runs)
    mean_share = row["requests"] / instances
    return {
        **row,
        "missed": round(sum(t > missed_s for t in ttfts) / max(1, len(ttfts)), 4) if missed_s else None,
        "not_found": round(sum(f < 0.5 for _, f in reported) / len(reported), 4) if reported else None,
        "slow_but_found": (
            round(sum(t > missed_s and f >= 0.5 for t, f in reported) / len(reported), 4)
            if reported and missed_s
            else None
        ),
        "hit_rate": round(hits / queries, 3) if queries else 0.0,
        "prefill_tokens": int(queries - hits),
        "max_share_over_mean": round(max(shares.values()) / mean_share, 2) if shares else 0.0,
        "shares": [round(n / row["requests"], 3) for _, n in sorted(shares.items())],
    }


def checks(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The targets' ratios for `affinity`, and for the unbounded diagnostic beside it where it ran."""
    by = {(row["callers"], row["policy"]): row for row in rows}
    found: dict[str, float] = {}
    oracle = by.get((1, "prefix_oracle"))
    for callers in sorted({row["callers"] for row in rows}):
        baseline = by.get((callers, "least_loaded"))
        for policy in ("affinity", "affinity_unbounded"):
            mine = by.get((callers, policy))
            if mine is None:
                continue
            if oracle and oracle["hit_rate"]:
                found[f"{policy}_hit_rate_over_oracle_k{callers}"] = round(mine["hit_rate"] / oracle["hit_rate"], 3)
            if baseline and mine["ttft_p99_ms"] and baseline["ttft_p99_ms"]:
                found[f"{policy}_ttft_p99_over_least_loaded_k{callers}"] = round(
                    mine["ttft_p99_ms"] / baseline["ttft_p99_ms"], 3
                )
            found[f"{policy}_max_share_over_mean_k{callers}"] = mine["max_share_over_mean"]
    return found


async def measure(
    url: str,
    model: str,
    ports: list[int],
    args: argparse.Namespace,
    kind: UpstreamType = UpstreamType.SMMF,
    tenants: int = TENANTS,
    missed_s: float | None = MISSED_S,
    **extra: Any,
) -> list[dict[str, Any]]:
    """Every policy for every caller count, on the instances of `model` serving on `ports`; a row each."""
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    async with ModelClient(url) as watcher:
        for count in args.callers:
            policies = [p for p in args.policies if p != "prefix_oracle" or count == 1]
            async with Callers("bench.prefix", url, model, count) as callers:
                for round_ in range(args.rounds):
                    turns = schedule(args.rate, args.seconds, round_, tenants)
                    for policy in policies:
                        await idle(watcher, model)
                        print(f"{count} caller(s), round {round_ + 1}, {policy}: "
                              f"{args.rate:g} req/s for {args.seconds:g}s", flush=True)  # fmt: skip
                        before = await cache_counts(ports, kind)
                        result = await callers.run(policy, turns, salt=f"r{round_}{policy}", **extra)
                        after = await cache_counts(ports, kind)
                        result["queries"], result["hits"] = after[0] - before[0], after[1] - before[1]
                        if result["failures"]:
                            print(f"  {result['errors']} failed; the first: {result['failures'][0]}", flush=True)
                        runs.setdefault((count, policy), []).append(result)
    return [summary(count, policy, policy_runs, len(ports), missed_s) for (count, policy), policy_runs in runs.items()]


def report(name: str, rows: list[dict[str, Any]], setup: dict[str, Any]) -> None:
    """Print the table and the target checks, and save them."""
    found = checks(rows)
    print()
    columns = ["callers", "policy", "requests", "errors", "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "missed",
               "not_found", "slow_but_found", "hit_rate", "prefill_tokens", "max_share_over_mean",
               "shares"]  # fmt: skip
    print(table([c.replace("_", " ") for c in columns], [[r[c] for c in columns] for r in rows]))
    for check, value in found.items():
        print(f"{check}: {value}")
    print("targets (K = 4): affinity hit rate >= 0.8 x prefix_oracle's; TTFT p99 <= 1/3 x least_loaded's; "
          "max share <= 1.25 x the mean")  # fmt: skip
    targets = {"hit_rate_over_oracle": 0.8, "ttft_p99_over_least_loaded": round(1 / 3, 3), "max_share_over_mean": 1.25}
    save(name, {"setup": setup, "targets": targets, "checks": found, "results": rows})


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"file://{tmp}/registry.db"
        fleet = Fleet(url, "prefix", [1.0] * INSTANCES, Path(tmp), SIM)
        fleet.start()
        try:
            rows = await measure(url, "prefix", [m.port for m in fleet.members], args)
        finally:
            fleet.stop()
    setup = {
        "instances": INSTANCES, "tenants": TENANTS, "system_tokens": SYSTEM_TOKENS, "turn_tokens": TURN_TOKENS,
        "block_tokens": BLOCK_TOKENS, "cache_blocks": CACHE_BLOCKS, "zipf": ZIPF, "sim": " ".join(SIM),
        "rate_rps": args.rate, "seconds": args.seconds, "rounds": args.rounds, "callers": args.callers,
    }  # fmt: skip
    report("prefix", rows, setup)


def parser(
    doc: str | None, seconds: float, rounds: int, rate: float, callers: list[int], policies: list[str]
) -> argparse.ArgumentParser:
    """The options of this benchmark and of `bench.prefix_vllm`, with their own defaults."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=seconds, help="measured seconds per policy and round")
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--rate", type=float, default=rate, help="requests per second, all callers together")
    parser.add_argument("--callers", type=int, nargs="+", default=callers, help="caller processes; a run per count")
    parser.add_argument("--policies", nargs="+", default=policies)
    parser.add_argument("--caller-of", nargs=2, metavar=("URL", "MODEL"), help=argparse.SUPPRESS)
    return parser


def parse() -> argparse.Namespace:
    policies = [
        "prefix_oracle", "affinity", "affinity_unbounded", "least_loaded", "peak_ewma", "round_robin", "weighted_random"
    ]  # fmt: skip
    return parser(__doc__, 20.0, 2, 60.0, [1, 4], policies).parse_args()


if __name__ == "__main__":
    arguments = parse()
    run_main(arguments, send_turns, register_bench_policies, lambda: main(arguments))
