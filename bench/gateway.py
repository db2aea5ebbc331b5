"""What the gateway adds to a request: `smmf gateway` against calling the worker directly, and the embedded client.

One zero-latency `smmf worker sim` registered in the embedded file
registry, and one `smmf gateway` over that registry.  The same request
loop (plain aiohttp, one connection pool) runs straight to the worker,
through `ModelClient` in this process, and through the gateway's
`/v1/chat/completions`, at concurrency 1 and 64, in alternating rounds.

The worker and the gateway are pinned to one core and this load generator
to the other, so the gateway's hop competes with the worker for its core as
it would on a shared host; the direct and client rows get the worker's
core to itself.  Reported: added latency per request (p50, p99) and the
throughput ratio to direct at each concurrency.

Run: `.venv/bin/python -m bench.gateway`.  Writes bench/results/gateway.json
and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from bench.paired import compare, parse_rounds
from bench.report import save, table
from bench.worker import pinned, worker
from smmf.client import ModelClient
from smmf.instance import Instance
from smmf.registry import open_registry
from tests.support.processes import SmmfProcess

BODY: dict[str, Any] = {"model": "sim", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 1}
SERVER = ["sim", "--model", "sim", "--ttft-ms", "0", "--tpot-ms", "0", "--max-concurrency", "1024",
          "--max-queue", "1024", "--slots", "1024"]  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    results: dict[str, dict] = {}
    with worker(SERVER, cpus="0") as server, pinned({1}), tempfile.TemporaryDirectory() as tmp:
        url = f"file://{tmp}/registry.db"
        async with open_registry(url) as registry:
            await registry.register(Instance(id="w1", model="sim", endpoint=f"{server.url}/v1"), ttl=None)
        gateway = SmmfProcess(["gateway", "--registry", url, "--port", "0"], Path(tmp), cpus="0")
        try:
            gateway.start(url_timeout=60).wait_healthy(60)
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
                ModelClient(url) as client,
            ):

                def post(base: str):  # type: ignore[no-untyped-def]
                    async def call() -> None:
                        async with session.post(f"{base}/v1/chat/completions", json=BODY) as reply:
                            assert reply.status == 200, await reply.text()
                            await reply.json()

                    return call

                async def through_client() -> None:
                    await client.chat.completions.create(**BODY)

                modes = {"direct": post(server.url), "client": through_client, "gateway": post(gateway.url)}
                for concurrency in (1, 64):
                    summary = await compare(modes, concurrency, args.rounds, args.seconds)
                    results[f"concurrency_{concurrency}"] = summary
                    print(f"concurrency {concurrency}: {json.dumps(summary)}", flush=True)
        finally:
            gateway.stop()

    headers = ["concurrency", "mode", "p50 us", "p99 us", "added p50 us", "added p99 us", "rps", "÷ direct"]
    rows = [
        [name.split("_")[1], mode, r[mode]["p50_us"], r[mode]["p99_us"], r[mode].get("added_p50_us", "-"),
         r[mode].get("added_p99_us", "-"), r[mode]["throughput_rps"], r[mode].get("throughput_ratio", "-")]
        for name, r in results.items() for mode in ("direct", "client", "gateway")
    ]  # fmt: skip
    print()
    print(table(headers, rows))
    save(
        "gateway",
        {
            "rounds": args.rounds,
            "seconds_per_round": args.seconds,
            "pinning": "worker and gateway on core 0, load generator on core 1",
            "results": results,
        },
    )


if __name__ == "__main__":
    asyncio.run(main(parse_rounds(__doc__)))
