"""The demo's client part (examples/demo.py), run against sim workers so `make test` covers its code path."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.support.fleet import Fleet

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def demo():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("demo", ROOT / "examples" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_demo_client_against_sim_workers(demo, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    url = f"file://{tmp_path}/registry.db"
    chat = Fleet(url, "gemma-3-270m", [1, 1], tmp_path, ("--ttft-ms", "5", "--tpot-ms", "1"))
    embed = Fleet(url, "all-minilm-l6-v2", [1], tmp_path)
    try:
        chat.start()
        embed.start()
        served = await demo.run_client(url, "gemma-3-270m", "all-minilm-l6-v2", requests=20)
    finally:
        chat.stop()
        embed.stop()
    assert sum(row["requests"] for row in served.values()) == 20 and len(served) == 2
    out = capsys.readouterr().out
    assert "cosine similarity" in out and "what each instance served" in out and "streamed from" in out
