"""How soon a registry change reaches an open dashboard: from a record's write to the view that shows it.

A `smmf gateway` over the file registry and over a real etcd; this process
holds the dashboard's event stream (`/api/events`) open, as a page does, and
registers then removes a persistent record directly in the registry, many
times, timing each write until the first view that shows it.  The issue's
bound is one second.

Run: `.venv/bin/python -m bench.feed [--samples 20]`.  Writes
bench/results/feed.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.callers import pct
from bench.report import save, table
from smmf.instance import Instance, Protocol
from smmf.registry import open_registry
from smmf.template import HttpTemplate
from tests.support.etcd import EtcdCluster
from tests.support.processes import SmmfProcess


def _record(n: int) -> Instance:
    template = HttpTemplate(url="http://127.0.0.1:9/x", body={"q": "{USER_PROMPT}"})
    return Instance(id=f"feed-{n}", model="feed", endpoint=template.url, protocol=Protocol.TEMPLATE, template=template)


async def _shows(events: aiohttp.StreamReader, wanted: set[str]) -> None:
    while True:
        block = (await events.readuntil(b"\n\n")).decode()
        for line in block.splitlines():
            if line.startswith("data: "):
                view = json.loads(line[6:])
                ids = {i["id"] for m in view["models"] for i in m["instances"]}
                if (wanted <= ids) if wanted else not ids:
                    return


async def measure(url: str, logs: Path, samples: int) -> list[float]:
    gateway = SmmfProcess(["gateway", "--registry", url, "--port", "0"], logs)
    delays = []
    try:
        gateway.start(url_timeout=60).wait_healthy(60)
        async with (
            open_registry(url) as registry,
            aiohttp.ClientSession() as session,
            session.get(gateway.url + "/api/events") as reply,
        ):
            await _shows(reply.content, set())
            for n in range(samples):
                record = _record(n)
                started = time.perf_counter()
                await registry.register(record, ttl=None)
                await asyncio.wait_for(_shows(reply.content, {record.id}), 30)
                delays.append(time.perf_counter() - started)
                await registry.remove(record.id)
                await asyncio.sleep(0.3)
    finally:
        gateway.stop()
    return delays


async def main(args: argparse.Namespace) -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        cluster = EtcdCluster(Path(tmp) / "etcd").start()
        try:
            for driver, url in (("file", f"file://{tmp}/registry.db"), ("etcd", cluster.url("/feed"))):
                delays = await measure(url, Path(tmp), args.samples)
                results[driver] = {
                    "samples": len(delays),
                    "p50_ms": round(pct(delays, 50) * 1000, 1),
                    "max_ms": round(max(delays) * 1000, 1),
                }
                print(driver, results[driver], flush=True)
        finally:
            cluster.stop()
    rows = [[driver, r["samples"], r["p50_ms"], r["max_ms"]] for driver, r in results.items()]
    print()
    print(table(["registry", "samples", "write→view p50 ms", "max ms"], rows))
    save("feed", {"bound_ms": 1000, "results": results})


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
