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
import tempfile
from typing import Any

import aiohttp

from bench.paired import compare, parse_rounds
from bench.report import save, table
from bench.worker import pinned, worker
from smmf.client import ModelClient
from smmf.instance import Instance
from smmf.registry import open_registry

BODY: dict[str, Any] = {"model": "sim", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 1}


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
                modes = {"direct": direct, "client": through_client}
                summary = await compare(modes, concurrency, args.rounds, args.seconds)
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
        [name.split("_")[1], r["direct"]["p50_us"], r["client"]["p50_us"], r["client"]["added_p50_us"],
         r["client"]["added_p99_us"], r["direct"]["throughput_rps"], r["client"]["throughput_rps"],
         r["client"]["throughput_ratio"]]
        for name, r in results.items()
    ]  # fmt: skip
    print()
    print(table(headers, rows))
    print("targets: added p50 <= 100 us; throughput ratio >= 0.9")
    save("client_overhead", body)


if __name__ == "__main__":
    asyncio.run(main(parse_rounds(__doc__)))
