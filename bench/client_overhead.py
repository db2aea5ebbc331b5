"""What the client library adds to a request: ModelClient against plain aiohttp, straight to one worker.

One zero-latency `smmf worker sim` (pinned to one core; this process on the
other) registered in the embedded file registry.  The same request loop runs
through plain aiohttp to the worker's URL and through `ModelClient`, at
concurrency 1 and 64, in alternating rounds so machine noise falls on both.
Reported: added latency per request (p50, p99, at concurrency 1) and the
throughput ratio (client / direct) at each concurrency: the median of the
ratios of each round's pair of back-to-back runs, which leaves out the
machine's slower drifts (runs of 3 s moved the ratio at concurrency 1 from
0.90 to 0.95).

Run: `.venv/bin/python bench/client_overhead.py`.  Writes
bench/results/client_overhead.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable

import aiohttp

from bench.report import save, table
from bench.worker import pinned, worker
from smmf.client import ModelClient
from smmf.instance import Instance
from smmf.registry import open_registry

BODY = {"model": "sim", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 1}


async def run_loop(call: Callable[[], Awaitable[None]], concurrency: int, seconds: float) -> tuple[list[float], float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def main(args: argparse.Namespace) -> None:
    results: dict[str, dict] = {}
    server_args = ["sim", "--model", "sim", "--ttft-ms", "0", "--tpot-ms", "0", "--max-concurrency", "1024",
                   "--max-queue", "1024", "--slots", "1024"]  # fmt: skip
    with worker(server_args, cpus="0") as server, pinned({1}), tempfile.TemporaryDirectory() as tmp:
        url = f"file://{tmp}/registry.db"
        async with open_registry(url) as registry:
            await registry.register(Instance(id="w1", model="sim", endpoint=f"{server.url}/v1"), ttl=None)
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
            ModelClient(url) as client,
        ):

            async def direct() -> None:
                async with session.post(f"{server.url}/v1/chat/completions", json=BODY) as reply:
                    await reply.json()

            async def through_client() -> None:
                await client.chat.completions.create(**BODY)

            for concurrency in (1, 64):
                rounds: dict[str, list[tuple[list[float], float]]] = {"direct": [], "client": []}
                await run_loop(direct, concurrency, 1.0)
                await run_loop(through_client, concurrency, 1.0)
                for _ in range(args.rounds):
                    rounds["direct"].append(await run_loop(direct, concurrency, args.seconds))
                    rounds["client"].append(await run_loop(through_client, concurrency, args.seconds))
                summary = {}
                for mode, runs in rounds.items():
                    latencies = [x for lat, _ in runs for x in lat]
                    summary[mode] = {
                        "requests": len(latencies),
                        "throughput_rps": round(statistics.median(len(lat) / secs for lat, secs in runs), 1),
                        "p50_us": round(pct(latencies, 50) * 1e6, 1),
                        "p99_us": round(pct(latencies, 99) * 1e6, 1),
                    }
                summary["added_p50_us"] = round(summary["client"]["p50_us"] - summary["direct"]["p50_us"], 1)
                summary["added_p99_us"] = round(summary["client"]["p99_us"] - summary["direct"]["p99_us"], 1)
                paired = [
                    (len(c) / c_secs) / (len(d) / d_secs)
                    for (d, d_secs), (c, c_secs) in zip(rounds["direct"], rounds["client"], strict=True)
                ]
                summary["throughput_ratio"] = round(statistics.median(paired), 3)
                summary["throughput_ratio_per_round"] = [round(r, 3) for r in paired]
                results[f"concurrency_{concurrency}"] = summary
                print(f"concurrency {concurrency}: {json.dumps(summary)}", flush=True)

    body = {
        "rounds": args.rounds,
        "seconds_per_round": args.seconds,
        "targets": {"added_p50_us": 100, "throughput_ratio": 0.9},
        "results": results,
    }
    headers = ["concurrency", "direct p50 us", "client p50 us", "added p50 us", "added p99 us", "direct rps",
               "client rps", "ratio"]  # fmt: skip
    rows = [
        [name.split("_")[1], r["direct"]["p50_us"], r["client"]["p50_us"], r["added_p50_us"], r["added_p99_us"],
         r["direct"]["throughput_rps"], r["client"]["throughput_rps"], r["throughput_ratio"]]
        for name, r in results.items()
    ]  # fmt: skip
    print()
    print(table(headers, rows))
    print("targets: added p50 <= 100 us; throughput ratio >= 0.9")
    save("client_overhead", body)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=1.0, help="per mode and round")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
