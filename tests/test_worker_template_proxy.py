"""The `template` and `proxy` backends against a small upstream HTTP server that the test runs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import openai
import pytest

from tests.support.processes import SmmfProcess
from tests.support.upstream_app import Upstream

StartWorker = Callable[..., SmmfProcess]
SECRET = "sk-test-not-a-real-key-31337"


def sdk(worker: SmmfProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{worker.url}/v1", api_key="unused", max_retries=0, timeout=30)


def template_args(upstream: Upstream, extract: str = "data.items[].attributes.answer") -> list[str]:
    body = {"query": {"text": "{USER_PROMPT}", "temperature": "{MODEL_TEMPERATURE}"}, "model": "{MODEL_NAME}"}
    return [
        "--model", "tpl",
        "--url-template", f"{upstream.url}/template?lang=en&model={{MODEL_NAME}}",
        "--header", "X-Trace:{MODEL_NAME}",
        "--body", json.dumps(body),
        "--response-extract", extract,
        "--api-key-env", "TPL_KEY",
    ]  # fmt: skip


async def test_template_renders_calls_and_extracts(start_worker: StartWorker, upstream: Upstream) -> None:
    worker = start_worker("template", *template_args(upstream), env={"TPL_KEY": SECRET})
    client = sdk(worker)
    reply = await client.chat.completions.create(
        model="tpl",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there & more"}],
        temperature=0.3,
    )
    assert reply.choices[0].message.content == "echo: hi there & more"
    assert reply.choices[0].finish_reason == "stop"

    (seen,) = upstream.seen
    assert seen["body"] == {"query": {"text": "hi there & more", "temperature": 0.3}, "model": "tpl"}
    assert seen["query"] == {"lang": "en", "model": "tpl"}
    assert seen["headers"]["X-Trace"] == "tpl"
    assert seen["headers"]["Authorization"] == f"Bearer {SECRET}"

    chunks = [
        c
        async for c in await client.chat.completions.create(
            model="tpl", messages=[{"role": "user", "content": "x"}], stream=True
        )
    ]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: x"
    assert SECRET not in worker.log()


async def test_template_path_mismatch_is_a_502_naming_the_segment(
    start_worker: StartWorker, upstream: Upstream
) -> None:
    worker = start_worker("template", *template_args(upstream, "data.items[1].attributes.answer"), env={"TPL_KEY": "k"})
    with pytest.raises(openai.InternalServerError) as err:
        await sdk(worker).chat.completions.create(model="tpl", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502
    assert "data.items[1].attributes.answer" in err.value.message and "'answer'" in err.value.message


async def test_template_upstream_errors_are_mapped(start_worker: StartWorker, upstream: Upstream) -> None:
    worker = start_worker("template", *template_args(upstream), env={"TPL_KEY": "k"})
    client = sdk(worker)
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="tpl", messages=[{"role": "user", "content": "fail 429"}])
    assert limited.value.response.headers["Retry-After"] == "7"
    with pytest.raises(openai.InternalServerError, match="upstream says 500"):
        await client.chat.completions.create(model="tpl", messages=[{"role": "user", "content": "fail 500"}])


async def test_a_line_break_bound_for_a_header_is_the_caller_s_400(
    start_worker: StartWorker, upstream: Upstream
) -> None:
    """Issue 12, finding 8: it was refused, but as a 500 with a traceback."""
    args = [*template_args(upstream), "--header", "X-Question:{USER_PROMPT}"]
    worker = start_worker("template", *args, env={"TPL_KEY": "k"})
    with pytest.raises(openai.BadRequestError, match="line break"):
        await sdk(worker).chat.completions.create(model="tpl", messages=[{"role": "user", "content": "a\r\nX-Evil: 1"}])
    assert upstream.seen == [] and "Traceback" not in worker.log()


def test_template_without_prompt_placeholder_is_refused() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "smmf.cli", "worker", "template", "--model", "t", "--url-template", "http://127.0.0.1:9/x",
         "--body", '{"q": "fixed"}'],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and "{USER_PROMPT}" in run.stderr and "Traceback" not in run.stderr


@pytest.fixture
def proxy(start_worker: StartWorker, upstream: Upstream) -> SmmfProcess:
    return start_worker(
        "proxy", "--model", "local-name", "--upstream-url", f"{upstream.url}/v1", "--upstream-model", "real-model",
        "--api-key-env", "PROXY_KEY", env={"PROXY_KEY": SECRET},
    )  # fmt: skip


async def test_proxy_forwards_chat_and_rewrites_the_model(proxy: SmmfProcess, upstream: Upstream) -> None:
    client = sdk(proxy)
    reply = await client.chat.completions.create(
        model="local-name", messages=[{"role": "user", "content": "hi"}], temperature=0.1
    )
    assert reply.model == "local-name" and reply.choices[0].message.content == "Hello from upstream"
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (11, 3)
    seen = upstream.seen[-1]
    assert seen["body"]["model"] == "real-model" and seen["body"]["temperature"] == 0.1
    assert seen["headers"]["Authorization"] == f"Bearer {SECRET}"

    stream = await client.chat.completions.create(
        model="local-name",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert texts == ["Hello", " from", " upstream"], "streamed piece by piece"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 14
    details = chunks[-1].usage.prompt_tokens_details
    assert details is not None and details.cached_tokens == 7, "the upstream's prefix-cache count is passed on"

    completion = await client.completions.create(model="local-name", prompt="once", max_tokens=3)
    assert completion.choices[0].text == "Hello from upstream"
    assert SECRET not in proxy.log()


async def test_proxy_embeddings(proxy: SmmfProcess, upstream: Upstream) -> None:
    reply = await sdk(proxy).embeddings.create(model="local-name", input=["ab", "abcd"])
    assert [d.embedding[0] for d in reply.data] == [2.0, 4.0]
    assert upstream.seen[-1]["body"]["model"] == "real-model"


async def test_proxy_maps_upstream_errors(proxy: SmmfProcess) -> None:
    client = sdk(proxy)

    async def ask(text: str) -> None:
        await client.chat.completions.create(model="local-name", messages=[{"role": "user", "content": text}])

    with pytest.raises(openai.BadRequestError, match="upstream says 400"):
        await ask("fail 400")
    with pytest.raises(openai.InternalServerError, match="credentials") as denied:
        await ask("fail 401")
    assert denied.value.status_code == 502, "a worker with a bad key is the worker's fault, not the caller's"
    assert SECRET not in denied.value.message and "[redacted]" in denied.value.message, (
        "the echoed key is not passed on"
    )
    with pytest.raises(openai.RateLimitError) as limited:
        await ask("fail 429")
    assert limited.value.response.headers["Retry-After"] == "7"
    with pytest.raises(openai.InternalServerError, match="upstream failed"):
        await ask("fail 503")


async def test_proxy_to_an_unreachable_upstream_is_502(start_worker: StartWorker) -> None:
    worker = start_worker("proxy", "--model", "m", "--upstream-url", "http://127.0.0.1:9/v1")
    with pytest.raises(openai.InternalServerError, match="could not be reached") as err:
        await sdk(worker).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 502


def test_proxy_with_a_missing_key_variable_exits_with_a_message(start_worker: StartWorker) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "smmf.cli", "worker", "proxy", "--model", "m", "--port", "0",
         "--upstream-url", "http://127.0.0.1:9/v1", "--api-key-env", "SMMF_TEST_UNSET_KEY"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1 and "SMMF_TEST_UNSET_KEY" in run.stderr and "Traceback" not in run.stderr
