"""Registry benchmark: 10,000 instances over 1,000 models, on the file driver and on real etcd.

For each driver it reports
  * bulk registration throughput (64 concurrent registrations),
  * cold `list()` of everything from a freshly opened registry,
  * register-to-visible latency at a watcher in another process (p50, p99),
  * the watcher process's memory growth from holding all records.

Run: `.venv/bin/python bench/registry.py` (or `make bench`).  Writes
bench/results/registry.json and prints a table.  etcd is started from the
`etcd` binary on free loopback ports and stopped by PID afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from contextlib import aclosing
from pathlib import Path

from bench.report import save, table
from smmf.instance import Instance
from smmf.registry import Put, Snapshot, open_registry
from tests.support.etcd import EtcdCluster
from tests.support.processes import ROOT

TARGETS = {
    "etcd": {"cold_list_s": 1.0, "visible_p99_ms": 50.0},
    "file": {"visible_p99_ms": 250.0},
}


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def make_record(i: int, models: int) -> Instance:
    return Instance(
        id=f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:8000-b{i:05d}",
        model=f"org/model-{i % models:04d}",
        endpoint=f"http://10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:8000/v1",
        backend="sim",
        labels={"zone": f"z{i % 3}", "bench": "registry"},
    )


# -- the watcher child process ----------------------------------------------


async def watch_child(url: str, expect: int) -> None:
    """Print the snapshot's cost, then each expected record's arrival time (CLOCK_MONOTONIC, host-wide)."""
    arrivals: dict[str, float] = {}
    async with open_registry(url) as registry, aclosing(registry.watch()) as watch:
        before = rss_kb()  # after the driver (and gRPC, for etcd) is imported: count the records only
        started = time.monotonic()
        async for event in watch:
            if isinstance(event, Snapshot):
                report = {
                    "records": len(event.items),
                    "snapshot_s": time.monotonic() - started,
                    "rss_before_kb": before,
                    "rss_after_kb": rss_kb(),
                }
                print(json.dumps(report), flush=True)
            elif isinstance(event, Put):
                arrivals[event.id] = time.monotonic()
                if len(arrivals) >= expect:
                    print(json.dumps({"arrivals": arrivals}), flush=True)
                    return


# -- the measuring parent ----------------------------------------------------


async def bulk_register(url: str, count: int, models: int, concurrency: int = 64) -> float:
    async with open_registry(url) as registry:
        queue = iter(range(count))

        async def worker() -> None:
            for i in queue:
                await registry.register(make_record(i, models), ttl=600)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)


async def cold_list(url: str, repeats: int = 3) -> tuple[list[float], int]:
    times, count = [], 0
    for _ in range(repeats):
        async with open_registry(url) as registry:
            started = time.perf_counter()
            listing = await registry.list()
            times.append(time.perf_counter() - started)
            count = len(listing.records)
    return times, count


async def visibility(url: str, samples: int, models: int, offset: int) -> tuple[dict[str, float], list[float]]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.registry", "--watch-child", url, "--expect", str(samples),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        snapshot = json.loads(await asyncio.wait_for(child.stdout.readline(), 300))
        sent: dict[str, float] = {}
        async with open_registry(url) as registry:
            for i in range(offset, offset + samples):
                rec = make_record(i, models)
                sent[rec.id] = time.monotonic()
                await registry.register(rec, ttl=600)
                await asyncio.sleep(0.01)
        arrivals = json.loads(await asyncio.wait_for(child.stdout.readline(), 120))["arrivals"]
        latencies = sorted((arrivals[k] - sent[k]) * 1000 for k in sent)
        await child.wait()
        return snapshot, latencies
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def run_driver(name: str, url: str, args: argparse.Namespace) -> dict[str, object]:
    print(f"[{name}] registering {args.instances} instances over {args.models} models ...", flush=True)
    throughput = await bulk_register(url, args.instances, args.models)
    print(f"[{name}] cold list ...", flush=True)
    list_times, listed = await cold_list(url)
    print(f"[{name}] register-to-visible, {args.samples} samples, watcher in another process ...", flush=True)
    snapshot, latencies = await visibility(url, args.samples, args.models, args.instances)
    return {
        "driver": name,
        "instances": args.instances,
        "models": args.models,
        "bulk_register_per_s": round(throughput, 1),
        "cold_list_s": [round(t, 4) for t in list_times],
        "cold_list_median_s": round(statistics.median(list_times), 4),
        "listed": listed,
        "watch_snapshot_records": snapshot["records"],
        "watch_snapshot_s": round(snapshot["snapshot_s"], 4),
        "watcher_rss_growth_mb": round((snapshot["rss_after_kb"] - snapshot["rss_before_kb"]) / 1024, 1),
        "watcher_rss_mb": round(snapshot["rss_after_kb"] / 1024, 1),
        "visible_p50_ms": round(percentile(latencies, 50), 2),
        "visible_p99_ms": round(percentile(latencies, 99), 2),
        "visible_max_ms": round(latencies[-1], 2),
        "samples": len(latencies),
        "targets": TARGETS.get(name, {}),
    }


def summary(rows: list[dict[str, object]]) -> str:
    cols = [
        ("driver", "driver"),
        ("instances", "instances"),
        ("bulk_register_per_s", "register/s"),
        ("cold_list_median_s", "cold list s"),
        ("visible_p50_ms", "visible p50 ms"),
        ("visible_p99_ms", "visible p99 ms"),
        ("watcher_rss_growth_mb", "watcher +MB"),
    ]
    return table([title for _, title in cols], [[row[key] for key, _ in cols] for row in rows])


async def main(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="smmf-bench-") as tmp:
        if "file" in args.drivers:
            rows.append(await run_driver("file", f"file://{tmp}/registry.db", args))
        if "etcd" in args.drivers:
            cluster = EtcdCluster(Path(tmp) / "etcd").start()
            try:
                rows.append(await run_driver("etcd", cluster.url("/bench"), args))
            finally:
                cluster.stop()
    print()
    print(summary(rows))
    print()
    save("registry", {"results": rows})


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--models", type=int, default=1_000)
    parser.add_argument("--samples", type=int, default=500, help="registrations timed for visibility")
    parser.add_argument("--drivers", default="file,etcd", help="comma-separated: file,etcd")
    parser.add_argument("--watch-child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    options = parse()
    if options.watch_child:
        asyncio.run(watch_child(options.watch_child, options.expect))
    else:
        options.drivers = options.drivers.split(",")
        asyncio.run(main(options))
