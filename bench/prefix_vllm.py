"""The prefix benchmark's workload on the real engine: two vLLM CPU instances with prefix caching, behind sidecars.

A short check, not part of `make test`: `bench.prefix`'s tenants, turns and
caller processes (fewer tenants, shorter prompts, a rate a CPU can serve),
sent as completions (the bundled Gemma is a base model, without a chat
template) through `affinity` and through `least_loaded`, with vLLM's own
`vllm:prefix_cache_queries` and `vllm:prefix_cache_hits` counters giving the
hit rate.  vLLM's KV cache is limited with `--num-gpu-blocks-override` so
that, as in the simulated setting, each instance holds only part of the
tenants' prefixes.

Each engine runs in float32 on a core of its own: these CPUs have no
AVX-512 BF16, and in bfloat16 a new 621-token prompt took 14.7 s on one
core (2.7 s with 512 of its tokens cached); in float32, 2.6 s (0.95 s).
The rate leaves the engines mostly idle, so the times are prefill, not queue.

Run in the vLLM environment: `.venv-vllm/bin/python -m bench.prefix_vllm`.
Starts the engines (minutes each on CPU), writes bench/results/prefix_vllm.json.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from bench.prefix import measure, parser, report
from smmf.registry import open_registry
from smmf.sidecar.probe import UpstreamType
from smmf.worker.bundled import gemma_hf_dir
from tests.support.etcd import free_port
from tests.support.processes import SmmfProcess

MODEL = "gemma"
INSTANCES = 2
TENANTS = 8
#: Words per system prompt; each "t3w17" is several Gemma tokens, about 550 in all (the context is 1,024).
SYSTEM_WORDS = 120
#: KV-cache blocks per instance, of 16 tokens (vLLM's CPU block size): about 4 of the 8 tenants' prompts.
KV_BLOCKS = 160


def engine(url: str, port: int, blocks: int, log_dir: Path, core: int) -> SmmfProcess:
    """An instance on a core of its own: vLLM's default binds every instance's threads to every core."""
    return SmmfProcess(
        ["sidecar", "--registry", url, "--model", MODEL, "--upstream", f"http://127.0.0.1:{port}",
         "--upstream-type", "vllm", "--ttl", "10", "--probe-interval", "1", "--load-interval", "0.5",
         "--", sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(gemma_hf_dir()),
         "--served-model-name", MODEL, "--max-model-len", "1024", "--dtype", "float32",
         "--enable-prefix-caching", "--num-gpu-blocks-override", str(blocks),
         "--host", "127.0.0.1", "--port", str(port)],
        log_dir,
        env={"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": str(core)},
    )  # fmt: skip


async def registered(url: str, count: int, timeout: float) -> None:
    async with open_registry(url) as registry:
        for _ in range(int(timeout)):
            if len((await registry.list(MODEL)).records) >= count:
                return
            await asyncio.sleep(1)
    raise RuntimeError(f"the vLLM instances did not register within {timeout:g}s")


async def main() -> None:
    args = parser(__doc__, 60.0, 1, 0.3, [2], ["affinity", "least_loaded"]).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"file://{tmp}/registry.db"
        ports = [free_port() for _ in range(INSTANCES)]
        engines = [
            engine(url, port, KV_BLOCKS, Path(tmp), core % (os.cpu_count() or 1)) for core, port in enumerate(ports)
        ]
        try:
            for process in engines:
                process.start(expect_url=False)
            await registered(url, INSTANCES, 900)
            rows = await measure(
                url,
                MODEL,
                ports,
                args,
                UpstreamType.VLLM,
                TENANTS,
                missed_s=None,
                system_words=SYSTEM_WORDS,
                api="completions",
            )
        finally:
            for process in engines:
                process.stop()
    setup = {
        "engine": "vllm-cpu", "instances": INSTANCES, "tenants": TENANTS, "system_words": SYSTEM_WORDS,
        "kv_blocks": KV_BLOCKS, "rate_rps": args.rate, "seconds": args.seconds, "rounds": args.rounds,
        "callers": args.callers,
    }  # fmt: skip
    report("prefix_vllm", rows, setup)


if __name__ == "__main__":
    asyncio.run(main())
