"""Worker benchmark: what the HTTP layer costs.

1. llama.cpp overhead: generated tokens/s through `smmf worker llama-cpp`
   over HTTP, against llama-cpp-python called in this process, with the same
   prompts and parameters (greedy, fixed max_tokens).  The two run in
   alternating rounds so machine noise falls on both; the ratio is reported.
2. sim throughput: requests/s from a zero-latency `smmf worker sim` at
   concurrency 64, the worker pinned to one core and the load generator to
   the other.

Run: `.venv/bin/python bench/worker.py` (or `make bench`).  Writes
bench/results/worker.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from bench.report import save
from tests.support.processes import SmmfProcess

PROMPTS = [
    "The history of the printing press begins",
    "A good recipe for bread needs",
    "The three largest planets in the solar system are",
    "In the morning the harbour was quiet and",
    "To configure a web server you first",
]


@contextlib.contextmanager
def worker(args: list[str], cpus: str | None = None) -> Iterator[SmmfProcess]:
    """`smmf worker ARGS` on a free port (pinned to `cpus`), healthy; stopped by PID on the way out."""
    with tempfile.TemporaryDirectory() as logs:
        process = SmmfProcess(["worker", *args, "--port", "0"], Path(logs), cpus=cpus)
        try:
            yield process.start(url_timeout=300).wait_healthy(300)
        finally:
            process.stop()


@contextlib.contextmanager
def pinned(cpus: set[int]) -> Iterator[None]:
    """This process on `cpus` only (where taskset pins the server elsewhere), then on all again."""
    if shutil.which("taskset"):
        os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


# -- 1. llama.cpp through HTTP vs in-process ---------------------------------


def in_process_round(llm: object, max_tokens: int) -> tuple[int, float]:
    tokens, started = 0, time.perf_counter()
    for prompt in PROMPTS:
        out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_p=1.0)  # type: ignore[attr-defined]
        tokens += out["usage"]["completion_tokens"]
    return tokens, time.perf_counter() - started


async def http_round(url: str, max_tokens: int) -> tuple[int, float]:
    tokens, started = 0, time.perf_counter()
    async with aiohttp.ClientSession() as session:
        for prompt in PROMPTS:
            body = {"model": "gemma", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "top_p": 1}
            async with session.post(f"{url}/v1/completions", json=body) as reply:
                tokens += (await reply.json())["usage"]["completion_tokens"]
    return tokens, time.perf_counter() - started


async def llama_overhead(rounds: int, max_tokens: int, threads: int) -> dict[str, object]:
    from llama_cpp import Llama

    from smmf.worker.bundled import gemma_gguf

    path = gemma_gguf()
    with worker(["llama-cpp", "--model", "gemma", "--threads", str(threads), "--n-ctx", "2048"]) as server:
        llm = Llama(model_path=str(path), n_ctx=2048, n_threads=threads, verbose=False)
        await http_round(server.url, 8)  # warm both
        in_process_round(llm, 8)
        direct, http = [], []
        for _ in range(rounds):
            tokens, seconds = in_process_round(llm, max_tokens)
            direct.append(tokens / seconds)
            tokens, seconds = await http_round(server.url, max_tokens)
            http.append(tokens / seconds)
            print(f"  round: in-process {direct[-1]:.1f} tok/s, http {http[-1]:.1f} tok/s", flush=True)
    return {
        "rounds": rounds,
        "prompts": len(PROMPTS),
        "max_tokens": max_tokens,
        "threads": threads,
        "in_process_tok_s": [round(x, 2) for x in direct],
        "http_tok_s": [round(x, 2) for x in http],
        "in_process_median_tok_s": round(statistics.median(direct), 2),
        "http_median_tok_s": round(statistics.median(http), 2),
        "ratio": round(statistics.median(http) / statistics.median(direct), 3),
        "target_ratio": 0.95,
    }


# -- 2. sim worker throughput --------------------------------------------------


async def sim_throughput(concurrency: int, seconds: float) -> dict[str, object]:
    args = ["sim", "--model", "sim", "--ttft-ms", "0", "--tpot-ms", "0", "--slots", "1024",
            "--max-concurrency", "1024", "--max-queue", "1024"]  # fmt: skip
    body = {"model": "sim", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}
    with worker(args, cpus="0") as server, pinned({1}):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

            async def loop(deadline: float, counts: list[int]) -> None:
                while time.perf_counter() < deadline:
                    async with session.post(f"{server.url}/v1/chat/completions", json=body) as reply:
                        await reply.read()
                        counts[0 if reply.status == 200 else 1] += 1

            warm = [0, 0]
            await asyncio.gather(*(loop(time.perf_counter() + 1.0, warm) for _ in range(concurrency)))
            counts = [0, 0]
            started = time.perf_counter()
            await asyncio.gather(*(loop(started + seconds, counts) for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            async with session.get(f"{server.url}/metrics") as reply:
                metrics = await reply.text()
        served = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith('smmf_requests_total{endpoint="/v1/chat/completions",status="200"}')
        )
        affinity = subprocess.run(["taskset", "-pc", str(server.pid)], capture_output=True, text=True).stdout
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "ok": counts[0],
        "errors": counts[1],
        "requests_per_s": round(counts[0] / elapsed, 1),
        "worker_counted_total": served,
        "worker_affinity": affinity.strip().rsplit(":", 1)[-1].strip(),
        "output_tokens_per_request": 16,
        "worker_cpus": "0" if shutil.which("taskset") else "unpinned",
        "target_requests_per_s": 1500,
    }


async def main(args: argparse.Namespace) -> None:
    results: dict[str, object] = {}
    if not args.skip_llama:
        print("llama.cpp: tokens/s in-process vs through smmf worker over HTTP ...", flush=True)
        results["llama_cpp"] = await llama_overhead(args.rounds, args.max_tokens, args.threads)
    print(f"sim: requests/s at concurrency {args.concurrency}, worker on one core ...", flush=True)
    results["sim"] = await sim_throughput(args.concurrency, args.seconds)

    print()
    if "llama_cpp" in results:
        llama = results["llama_cpp"]
        print("llama.cpp            in-process tok/s  http tok/s  ratio  target")
        print(f"gemma-3-270m Q4_K_M  {llama['in_process_median_tok_s']:>17}  {llama['http_median_tok_s']:>10}"  # type: ignore[index]
              f"  {llama['ratio']:>5}  >= 0.95")  # type: ignore[index]  # fmt: skip
    sim = results["sim"]
    print(f"sim worker           concurrency {sim['concurrency']}: {sim['requests_per_s']} req/s"  # type: ignore[index]
          f" ({sim['errors']} errors), target >= 1500")  # type: ignore[index]  # fmt: skip
    print()
    save("worker", results)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--skip-llama", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
