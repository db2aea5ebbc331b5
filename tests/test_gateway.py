"""`smmf gateway`: the management API in its exact shapes, the OpenAI API through the official SDK, the admin token.

Against real processes: sim workers behind real sidecars, a template API
the test serves itself, and the gateway as `smmf gateway`, on the embedded
file registry and on real etcd.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import openai
import pytest

from tests.conftest import registry_url_for
from tests.support.fleet import Fleet
from tests.support.gateway import RunningGateway, start_gateway
from tests.support.processes import SmmfProcess
from tests.support.upstream_app import Upstream

SIM = ("--ttft-ms", "0", "--tpot-ms", "1")


@pytest.fixture(params=["file", "etcd"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return registry_url_for(request.param, tmp_path, request)


@pytest.fixture
def fleet(shared_url: str, tmp_path: Path) -> Iterator[Fleet]:
    started = Fleet(shared_url, f"m-{uuid.uuid4().hex[:6]}", [1, 1], tmp_path, SIM)
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture
def gateway(start_smmf: Callable[..., SmmfProcess], shared_url: str, fleet: Fleet) -> RunningGateway:
    return start_gateway(start_smmf, shared_url)


def template_body(upstream: Upstream, model: str) -> dict[str, object]:
    return {
        "model_name": model,
        "req_url_template": f"{upstream.url}/template",
        "body": {"query": {"text": "{USER_PROMPT}"}},
        "owner": "team-a",
        "response_extract": "data.items.0.attributes.answer",
    }


async def until(check: Callable[[], object], timeout: float = 30.0) -> None:
    """Poll an async `check` until it is truthy; fail after `timeout` seconds (a deadline, not a speed claim)."""
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[misc]
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.1)


async def test_the_management_api_answers_in_its_exact_shapes(
    gateway: RunningGateway, fleet: Fleet, upstream: Upstream
) -> None:
    status, body, _ = await gateway.call("POST", "/api/server/register", template_body(upstream, "ext") | {"body": {}})
    assert status == 400 and body["success"] is False and "{USER_PROMPT}" in body["msg"]

    status, body, _ = await gateway.call("POST", "/api/server/register", template_body(upstream, "ext"))
    assert (status, body) == (200, {"success": True, "msg": "register LLM ext succeed!"})

    status, body, _ = await gateway.call("GET", "/api/server/workers", token=None)
    assert status == 200 and set(body) == {"success", "data"} and body["success"] is True
    assert all(set(item) == {"model_name", "req_url_template"} for item in body["data"])
    endpoints = {f"http://127.0.0.1:{m.port}/v1" for m in fleet.members}
    assert {(i["model_name"], i["req_url_template"]) for i in body["data"]} == {
        *((fleet.model, e) for e in endpoints),
        ("ext", f"{upstream.url}/template"),
    }

    async def chat(model: str, text: str) -> tuple[int, dict, str | None]:
        status, body, headers = await gateway.call(
            "POST", "/api/v1/chat/completions", {"model_name": model, "input": text}, token=None
        )
        return status, body, headers.get("x-smmf-instance")

    status, body, _ = await chat("ext", "hello")
    assert (status, body) == (200, {"success": True, "msg": "execute succeed", "result": "echo: hello"})
    answered = set()
    for _ in range(20):
        status, body, instance = await chat(fleet.model, "hi")
        assert status == 200 and set(body) == {"success", "msg", "result"} and body["result"]
        answered.add(instance)
    assert len(answered) == 2, "instances sharing a name are balanced"

    target = sorted(endpoints)[0]
    offline = {"model_name": fleet.model, "req_url_template": target}
    status, body, _ = await gateway.call("POST", "/api/server/offline", offline)
    expected = f"remove llm worker(model_name={fleet.model}, url={target}) succeed!"
    assert (status, body) == (200, {"success": True, "msg": expected})
    status, body, _ = await gateway.call("GET", "/api/server/workers", token=None)
    assert (fleet.model, target) in {(i["model_name"], i["req_url_template"]) for i in body["data"]}

    async def only_the_other_answers() -> bool:
        answers = {(await chat(fleet.model, "hi"))[2] for _ in range(6)}
        return len(answers) == 1 and not next(iter(answers)).startswith(target.split("//")[1].split("/")[0] + "-")

    await until(only_the_other_answers)

    unknown = {"model_name": "nope", "req_url_template": target}
    status, body, _ = await gateway.call("POST", "/api/server/offline", unknown)
    assert status == 404 and body["success"] is False and "nope" in body["msg"]
    status, body, _ = await gateway.call("POST", "/api/server/offline", {"model_name": fleet.model})
    assert status == 400 and body["success"] is False and "req_url_template" in body["msg"]

    status, body, _ = await gateway.call("POST", "/api/server/online", offline)
    assert status == 200 and body["success"] is True
    status, body, _ = await chat("no-such-model", "hi")
    assert status == 404 and body["success"] is False and "no-such-model" in body["msg"]


async def test_writes_need_the_admin_token_and_no_secret_shows(
    gateway: RunningGateway, fleet: Fleet, upstream: Upstream
) -> None:
    instance = fleet.instance_of(fleet.members[0])
    view = (await gateway.call("GET", "/api/fleet", token=None))[1]
    (target,) = [i for m in view["models"] for i in m["instances"] if i["id"].startswith(instance)]
    writes = [
        ("POST", "/api/server/register", template_body(upstream, "ext")),
        ("POST", "/api/server/offline", {"model_name": fleet.model, "req_url_template": target["endpoint"]}),
        ("POST", "/api/server/online", {"model_name": fleet.model, "req_url_template": target["endpoint"]}),
        ("POST", f"/api/instances/{target['id']}/drain", None),
        ("POST", f"/api/instances/{target['id']}/restart", None),
        ("DELETE", f"/api/instances/{target['id']}", None),
    ]
    for method, path, body in writes:
        for token in (None, "wrong-token"):
            status, answer, _ = await gateway.call(method, path, body, token=token)
            assert status == 401 and answer["success"] is False, (method, path, token)
    status, answer, _ = await gateway.call("DELETE", f"/api/instances/{target['id']}")
    assert status == 409 and "offline" in answer["msg"], "a sidecar's record is not deregistered"
    status, answer, _ = await gateway.call("POST", f"/api/instances/{target['id']}/offline")
    assert status == 200 and answer["success"] and answer["state"] == "offline" and answer["ack"]["acked_at"]
    status, answer, _ = await gateway.call("POST", f"/api/instances/{target['id']}/online")
    assert status == 200 and answer["state"] == "up"
    status, answer, _ = await gateway.call("POST", "/api/instances/no-such-id/drain")
    assert status == 404 and "no-such-id" in answer["msg"]
    status, answer, _ = await gateway.call("POST", f"/api/instances/{target['id']}/explode")
    assert status == 404 and "explode" in answer["msg"]

    status, answer, _ = await gateway.call("POST", "/api/server/register", template_body(upstream, "ext"))
    assert status == 200
    (ext,) = [i for i in (await gateway.call("GET", "/api/server/workers"))[1]["data"] if i["model_name"] == "ext"]
    assert ext["req_url_template"] == f"{upstream.url}/template"

    async with aiohttp.ClientSession() as session:
        pages = []
        reads = ("/", "/static/dashboard.js", "/api/fleet", "/api/server/workers", "/metrics", "/health", "/v1/models")
        for path in reads:
            async with session.get(gateway.url + path) as reply:
                assert reply.status == 200, path
                pages.append(await reply.text())
        async with session.get(gateway.url + "/api/events") as reply:
            retry, view = await reply.content.readuntil(b"\n\n"), await reply.content.readuntil(b"\n\n")
            assert retry.startswith(b"retry:") and view.startswith(b"event: fleet\ndata: {")
            pages.append(view.decode(errors="replace"))
    for text in [*pages, gateway.process.log()]:
        assert gateway.token not in text
    assert " --admin-token-env SMMF_TEST_ADMIN_TOKEN" in " ".join(gateway.process.args)


async def test_the_openai_sdk_works_through_the_gateway(gateway: RunningGateway, fleet: Fleet) -> None:
    sdk = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    models = await sdk.models.list()
    assert fleet.model in {m.id for m in models.data}

    raw = await sdk.chat.completions.with_raw_response.create(
        model=fleet.model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    reply = raw.parse()
    assert reply.choices[0].message.content and raw.headers["x-smmf-instance"].startswith("127.0.0.1:")

    stream = await sdk.chat.completions.create(
        model=fleet.model, messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True
    )
    pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) == 5

    completion = await sdk.completions.create(model=fleet.model, prompt="say", max_tokens=3)
    assert completion.choices[0].text
    embedding = await sdk.embeddings.create(model=fleet.model, input=["a", "bb"])
    assert len(embedding.data) == 2

    with pytest.raises(openai.NotFoundError, match="gpt-9"):
        await sdk.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        await sdk.chat.completions.create(model=fleet.model, messages="not a list")  # type: ignore[arg-type]
    await sdk.close()

    async with aiohttp.ClientSession() as session:
        async with session.post(gateway.url + "/v1/chat/completions", data=b"{not json") as reply:
            assert reply.status == 400 and "JSON" in (await reply.json())["error"]["message"]
        async with session.get(gateway.url + "/metrics") as reply:
            metrics = await reply.text()
    # prometheus_client writes labels in name order.
    lines = metrics.splitlines()
    assert any(line.startswith('smmf_gateway_requests_total{instance="127.0.0.1:') for line in lines)
    assert any(
        line.startswith('smmf_gateway_time_to_first_token_seconds_count{instance="127.0.0.1:')
        and f'model="{fleet.model}"' in line
        for line in lines
    )
    assert 'smmf_gateway_requests_total{instance="-",model="gpt-9",route="chat",status="404"} 1.0' in lines
    assert "smmf_gateway_retries_total" in metrics and "smmf_gateway_ejections_total" in metrics


async def test_the_feed_pushes_each_registry_change(gateway: RunningGateway, upstream: Upstream) -> None:
    async with aiohttp.ClientSession() as session, session.get(gateway.url + "/api/events") as events:
        assert events.headers["Content-Type"].startswith("text/event-stream")

        async def next_view() -> dict:
            while True:
                block = (await events.content.readuntil(b"\n\n")).decode()
                data = [line[6:] for line in block.splitlines() if line.startswith("data: ")]
                if data:
                    return json.loads(data[0])

        first = await asyncio.wait_for(next_view(), 30)
        assert first["registry"]["connected"] and "ext" not in {m["model"] for m in first["models"]}
        status, _, _ = await gateway.call("POST", "/api/server/register", template_body(upstream, "ext"))
        assert status == 200

        async def shows_ext() -> None:
            while True:
                view = await next_view()
                for model in view["models"]:
                    if model["model"] == "ext":
                        (instance,) = model["instances"]
                        assert instance["owner"] == "team-a" and instance["persistent"]
                        return

        await asyncio.wait_for(shows_ext(), 30)
