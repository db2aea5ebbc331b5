"""Side-by-side request loops: the same call made directly and through a layer of smmf, in alternating rounds.

Each round runs every mode back to back for the same few seconds, so the
machine's slower drifts fall on all of them; a throughput ratio is the
median over rounds of one round's pair, never a comparison of absolute
numbers taken at different times.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bench.callers import pct

__all__ = ["compare", "parse_rounds", "run_loop"]

Call = Callable[[], Awaitable[None]]


async def run_loop(call: Call, concurrency: int, seconds: float) -> tuple[list[float], float]:
    """`concurrency` loops of `call` for `seconds`: each call's latency, and the wall time taken."""
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


async def compare(modes: Mapping[str, Call], concurrency: int, rounds: int, seconds: float) -> dict[str, Any]:
    """Every mode's latency and throughput; for each mode after the first (the baseline) what it adds.

    `added_p50_us` and `added_p99_us` are differences from the baseline;
    `throughput_ratio` is mode ÷ baseline, paired within each round.
    """
    for call in modes.values():
        await run_loop(call, concurrency, 1.0)  # warm connections and caches
    runs: dict[str, list[tuple[list[float], float]]] = {name: [] for name in modes}
    for _ in range(rounds):
        for name, call in modes.items():
            runs[name].append(await run_loop(call, concurrency, seconds))
    summary: dict[str, Any] = {}
    for name, done in runs.items():
        latencies = [x for lat, _ in done for x in lat]
        summary[name] = {
            "requests": len(latencies),
            "throughput_rps": round(statistics.median(len(lat) / secs for lat, secs in done), 1),
            "p50_us": round(pct(latencies, 50) * 1e6, 1),
            "p99_us": round(pct(latencies, 99) * 1e6, 1),
        }
    baseline, *layers = modes
    for name in layers:
        paired = [
            (len(c) / c_secs) / (len(d) / d_secs)
            for (d, d_secs), (c, c_secs) in zip(runs[baseline], runs[name], strict=True)
        ]
        summary[name] |= {
            "added_p50_us": round(summary[name]["p50_us"] - summary[baseline]["p50_us"], 1),
            "added_p99_us": round(summary[name]["p99_us"] - summary[baseline]["p99_us"], 1),
            "throughput_ratio": round(statistics.median(paired), 3),
            "throughput_ratio_per_round": [round(r, 3) for r in paired],
        }
    return summary


def parse_rounds(doc: str | None) -> argparse.Namespace:
    """The command line every paired benchmark takes: how many rounds, and seconds per mode in each."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=1.0, help="per mode and round")
    return parser.parse_args()
