"""A plain vLLM server (no smmf code in its process) fronted by a sidecar: it registers, and its load is published.

Runs in `.venv-vllm` (`make test-vllm`).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from smmf.instance import Instance
from smmf.registry import Put, Registry, open_registry
from smmf.worker.bundled import gemma_hf_dir
from tests.support.engines import run_limit, start_limit
from tests.support.etcd import free_port
from tests.support.helpers import eventually
from tests.support.processes import SmmfProcess

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(run_limit("vllm-server"))]


async def _records(registry: Registry) -> list[Instance]:
    return (await registry.list("gemma")).records


async def test_vllm_api_server_behind_a_sidecar(start_smmf: Callable[..., SmmfProcess], tmp_path: Path) -> None:
    model_dir = gemma_hf_dir()
    port = free_port()
    url = f"file://{tmp_path}/registry.db"
    sidecar = start_smmf(
        "sidecar", "--registry", url, "--model", "gemma", "--upstream", f"http://127.0.0.1:{port}",
        "--upstream-type", "vllm", "--ttl", "5", "--probe-interval", "1", "--load-interval", "0.5",
        "--", sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--served-model-name", "gemma", "--max-model-len", "1024", "--dtype", "bfloat16",
        "--host", "127.0.0.1", "--port", str(port),
        healthy=False, expect_url=False, env={"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"},
    )  # fmt: skip
    async with open_registry(url) as registry:
        (record,) = await eventually(lambda: _records(registry), start_limit("vllm-server"), interval=1)
        assert record.backend == "vllm" and record.endpoint == f"http://127.0.0.1:{port}/v1"
        published: list[int] = []

        async def watch() -> None:
            async for event in registry.watch("gemma"):
                if isinstance(event, Put):
                    published.append(event.value.load.inflight)

        watcher = asyncio.create_task(watch())
        client = openai.OpenAI(base_url=record.endpoint, api_key="unused", max_retries=0, timeout=300)
        answers: list[str] = []

        def ask(i: int) -> None:
            reply = client.completions.create(model="gemma", prompt=f"Story number {i}:", max_tokens=64, temperature=0)
            answers.append(reply.choices[0].text)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()

        async def busy() -> bool:
            return any(value >= 1 for value in published)

        async def settled() -> bool:
            return bool(published) and published[-1] == 0

        await eventually(busy, 60)
        for thread in threads:
            await asyncio.to_thread(thread.join, 300)
        assert len(answers) == 3
        await eventually(settled, 10)
        watcher.cancel()
        print(f"vLLM behind a sidecar: published in-flight values {published}")

        # vLLM's automatic prefix caching: the same long prompt twice, and its own counters give the hit rate.
        prompt = "Here is a list of fruits: " + ", ".join(["apple", "pear", "plum", "fig"] * 80)
        for _ in range(2):
            await asyncio.to_thread(client.completions.create, model="gemma", prompt=prompt, max_tokens=1)

        async def hit_rate() -> float | None:
            (current,) = await _records(registry)
            return current.load.prefix_cache_hit_rate

        rate = await eventually(hit_rate, 10)
        print(f"vLLM behind a sidecar: published prefix-cache hit rate {rate}")
    assert sidecar.proc is not None and sidecar.proc.poll() is None
