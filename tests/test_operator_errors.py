"""Bad input from an operator gets one line and exit 2, and a failure names its real cause (exit 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import openai
import pytest

from tests.support.etcd import free_port
from tests.support.fleet import Fleet


def smmf(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smmf.cli", *args], capture_output=True, text=True, timeout=timeout)


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 3, result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)


def test_a_bad_policy_is_one_line(tmp_path: Path) -> None:
    refused(smmf("chat", "--registry", f"file://{tmp_path}/r.db", "--model", "m", "--policy", "bogus", "hi"), "bogus")


def test_a_negative_weight_is_one_line(tmp_path: Path) -> None:
    result = smmf(
        "register", "--registry", f"file://{tmp_path}/r.db", "--model", "m",
        "--url-template", "http://127.0.0.1:9/{USER_PROMPT}", "--weight", "-3",
    )  # fmt: skip
    refused(result, "weight")


def test_a_port_out_of_range_is_one_line() -> None:
    refused(smmf("worker", "sim", "--model", "q", "--port", "70000"), "70000")


def test_a_mistyped_file_registry_is_refused_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "dir"
    refused(smmf("ls", "--registry", f"file://{missing}/reg.db"), str(missing), "does not exist")
    assert not missing.exists()


def test_up_refuses_a_bad_registry_before_starting_anything(tmp_path: Path) -> None:
    config = tmp_path / "up.yaml"
    config.write_text(f"instances:\n  - {{name: a, model: m, backend: sim, port: {free_port()}}}\n")
    logs = tmp_path / "logs"
    refused(smmf("up", str(config), "--registry", "http://127.0.0.1:2379", "--log-dir", str(logs)), "http://")
    refused(smmf("up", str(config), "--registry", "memory://x", "--log-dir", str(logs)), "memory")
    assert not logs.exists(), "no instance was started"


def test_up_refuses_bad_worker_options_before_starting_anything(tmp_path: Path) -> None:
    config = tmp_path / "up.yaml"
    config.write_text(
        f"instances:\n  - {{name: bad-rate, model: m, backend: sim, port: {free_port()}, args: [--fail-rate, '2']}}\n"
    )
    logs = tmp_path / "logs"
    refused(smmf("up", str(config), "--registry", f"file://{tmp_path}/r.db", "--log-dir", str(logs)), "bad-rate")
    assert not logs.exists()


def test_chat_names_an_unreachable_registry_as_the_cause() -> None:
    url = f"etcd://127.0.0.1:{free_port()}/smmf"
    result = smmf("chat", "--registry", url, "--model", "gemma", "hi")
    assert result.returncode == 1 and "unavailable" in result.stderr and "127.0.0.1" in result.stderr
    assert "known models" not in result.stderr and "Traceback" not in result.stderr


async def test_a_bad_policy_header_is_a_400_through_the_sdk(tmp_path: Path) -> None:
    from smmf.client import httpx_client

    url = f"file://{tmp_path}/r.db"
    fleet = Fleet(url, "m-policy", [1], tmp_path)
    try:
        fleet.start()
        sdk = openai.AsyncOpenAI(base_url="http://smmf/v1", api_key="unused", http_client=httpx_client(url))
        with pytest.raises(openai.BadRequestError, match="bogus"):
            await sdk.chat.completions.create(
                model="m-policy", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-smmf-policy": "bogus"}
            )
        with pytest.raises(openai.BadRequestError, match="bogus"):  # the caller's mistake, not a missing model
            await sdk.chat.completions.create(
                model="m-none", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-smmf-policy": "bogus"}
            )
        await sdk.close()
    finally:
        fleet.stop()
