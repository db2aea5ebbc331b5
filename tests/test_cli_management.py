"""The `smmf` management commands as an operator runs them, against real sidecars and workers (file and etcd)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleet import Fleet
from tests.support.upstream_app import Upstream


def smmf(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smmf.cli", *args], capture_output=True, text=True, timeout=timeout)


def records(url: str, model: str | None = None) -> list[dict]:
    listed = smmf("ls", "--registry", url, "--json", *(["--model", model] if model else []))
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


@pytest.fixture
def fleet(url: str, tmp_path: Path) -> Iterator[Fleet]:
    started = Fleet(url, f"m-{uuid.uuid4().hex[:6]}", [1, 2], tmp_path, ("--ttft-ms", "0", "--tpot-ms", "1"))
    try:
        yield started.start()
    finally:
        started.stop()


def test_ls_models_and_instance_control(fleet: Fleet, url: str) -> None:
    listed = records(url, fleet.model)
    assert len(listed) == 2 and {r["weight"] for r in listed} == {1.0, 2.0}
    table = smmf("ls", "--registry", url)
    assert table.returncode == 0 and fleet.model in table.stdout and "INFLIGHT" in table.stdout

    models = smmf("models", "--registry", url)
    assert models.returncode == 0
    (row,) = [line.split() for line in models.stdout.splitlines() if line.startswith(fleet.model)]
    assert row[1:] == ["2", "2", "0", "0", "0"]

    target = listed[0]["id"]
    offline = smmf("offline", target, "--registry", url)
    assert offline.returncode == 0 and "offline done" in offline.stdout, offline.stderr
    assert states(url, fleet.model)[target] == "offline"

    online = smmf("online", target, "--registry", url)
    assert online.returncode == 0, online.stderr
    assert states(url, fleet.model)[target] == "up"

    drain = smmf("drain", target, "--registry", url)
    assert drain.returncode == 0 and states(url, fleet.model)[target] == "offline"
    assert smmf("online", target, "--registry", url).returncode == 0

    restart = smmf("restart", target, "--registry", url)
    assert restart.returncode == 0, restart.stderr
    assert states(url, fleet.model)[target] == "up"


def states(url: str, model: str) -> dict[str, str]:
    return {r["id"]: r["state"] for r in records(url, model)}


def test_unknown_ids_exit_2(url: str) -> None:
    for command in ("offline", "online", "drain", "restart", "deregister"):
        result = smmf(command, "no-such-instance", "--registry", url)
        assert result.returncode == 2, command
        assert "no-such-instance" in result.stderr and "Traceback" not in result.stderr


def test_chat_shows_the_answering_instance(fleet: Fleet, url: str) -> None:
    plain = smmf("chat", "--registry", url, "--model", fleet.model, "--max-tokens", "3", "hello")
    assert plain.returncode == 0 and len(plain.stdout.split()) == 3
    assert "[answered by 127.0.0.1:" in plain.stderr
    streamed = smmf("chat", "--registry", url, "--model", fleet.model, "--stream", "--policy", "round_robin", "hello")
    assert streamed.returncode == 0 and streamed.stdout.strip()
    missing = smmf("chat", "--registry", url, "--model", "gpt-9", "hello")
    assert missing.returncode == 1 and "gpt-9" in missing.stderr and fleet.model in missing.stderr


async def test_register_template_apis(url: str) -> None:
    upstream = await Upstream().start()
    try:
        body = json.dumps({"query": {"text": "{USER_PROMPT}", "temperature": "{MODEL_TEMPERATURE}"}})
        ids = []
        for _ in range(2):
            registered = await _async_smmf(
                "register", "--registry", url, "--model", "answers", "--url-template", f"{upstream.url}/template",
                "--body", body, "--response-extract", "data.items[].attributes.answer",
            )  # fmt: skip
            assert registered.returncode == 0, registered.stderr
            ids.append(registered.stdout.strip())
        listed = records(url, "answers")
        assert sorted(r["id"] for r in listed) == sorted(ids) and all(r["protocol"] == "template" for r in listed)

        chat = await _async_smmf("chat", "--registry", url, "--model", "answers", "--policy", "round_robin", "hi")
        assert chat.returncode == 0 and chat.stdout.strip() == "echo: hi", chat.stderr

        offline = await _async_smmf("offline", ids[0], "--registry", url)
        assert offline.returncode == 0
        states = {r["id"]: r["state"] for r in records(url, "answers")}
        assert states == {ids[0]: "offline", ids[1]: "up"}
        for _ in range(3):
            routed = await _async_smmf("chat", "--registry", url, "--model", "answers", "hi")
            assert f"[answered by {ids[1]}]" in routed.stderr, "an offline template record gets no requests"

        no_prompt = smmf("register", "--registry", url, "--model", "x", "--url-template", "http://127.0.0.1:9/x",
                         "--body", '{"q": "fixed"}')  # fmt: skip
        assert no_prompt.returncode == 2 and "{USER_PROMPT}" in no_prompt.stderr

        assert smmf("deregister", ids[0], "--registry", url).returncode == 0
        assert [r["id"] for r in records(url, "answers")] == [ids[1]]
    finally:
        await upstream.stop()


async def _async_smmf(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command without blocking this event loop (the test's upstream server runs on it)."""
    return await asyncio.to_thread(smmf, *args)
