"""The worker's OpenAI-compatible surface, called with the official `openai` SDK against a real `smmf worker sim`."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import openai
import pytest

from tests.support.processes import SmmfProcess

StartWorker = Callable[..., SmmfProcess]
MESSAGES = [{"role": "user", "content": "Say something about balancing."}]


def sdk(worker: SmmfProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{worker.url}/v1", api_key="unused", max_retries=0, timeout=30)


def raw(method: str, url: str, body: bytes | None = None, **headers: str) -> tuple[int, dict]:
    """One HTTP request without any SDK: status and JSON body, errors included."""
    headers = {"Content-Type": "application/json"} | {k.replace("_", "-"): v for k, v in headers.items()}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def metric(worker: SmmfProcess, name: str) -> float:
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


@pytest.fixture
def sim(start_worker: StartWorker) -> SmmfProcess:
    return start_worker("sim", "--model", "sim-llm", "--ttft-ms", "5", "--tpot-ms", "1")


def test_models_are_listed_and_the_simulator_says_so(sim: SmmfProcess) -> None:
    (card,) = sdk(sim).models.list().data
    assert card.id == "sim-llm"
    assert "simulator" in card.owned_by
    assert card.model_extra is not None and card.model_extra["smmf"]["simulated"] is True


def test_chat_plain_and_streaming_agree(sim: SmmfProcess) -> None:
    client = sdk(sim)
    plain = client.chat.completions.create(model="sim-llm", messages=MESSAGES, max_tokens=8)
    assert plain.object == "chat.completion" and plain.choices[0].message.role == "assistant"
    assert plain.choices[0].finish_reason == "length"
    assert plain.usage is not None and plain.usage.completion_tokens == 8 and plain.usage.prompt_tokens > 0

    chunks = list(
        client.chat.completions.create(
            model="sim-llm", messages=MESSAGES, max_tokens=8, stream=True, stream_options={"include_usage": True}
        )
    )
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 8, "one chunk per token"
    assert "".join(content) == plain.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == plain.usage.total_tokens
    assert len({c.id for c in chunks}) == 1


def test_completions_plain_and_streaming(sim: SmmfProcess) -> None:
    client = sdk(sim)
    plain = client.completions.create(model="sim-llm", prompt="Once upon a time", max_tokens=4)
    assert plain.object == "text_completion" and len(plain.choices[0].text.split()) == 4
    assert plain.usage is not None and plain.usage.prompt_tokens == 4

    stream = client.completions.create(model="sim-llm", prompt="Once upon a time", max_tokens=4, stream=True)
    assert "".join(c.choices[0].text for c in stream) == plain.choices[0].text


def test_bad_input_gets_openai_errors(sim: SmmfProcess) -> None:
    client = sdk(sim)
    with pytest.raises(openai.BadRequestError) as empty:
        client.chat.completions.create(model="sim-llm", messages=[])
    assert empty.value.body["param"] == "messages"  # type: ignore[index]

    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model="sim-llm", messages=MESSAGES, temperature=3.5)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="sim-llm", prompt="x", max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(model="sim-llm", messages=[{"role": "wizard", "content": "hi"}])  # type: ignore[list-item]
    with pytest.raises(openai.NotFoundError, match="does not exist") as missing:
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]

    status, body = raw("POST", f"{sim.url}/v1/chat/completions", b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = raw("POST", f"{sim.url}/v1/chat/completions", b'["a list"]')
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = raw("GET", f"{sim.url}/v1/nothing-here")
    assert status == 404 and "error" in body
    assert "Traceback" not in sim.log()


def test_hostile_bodies_get_400s_not_tracebacks(sim: SmmfProcess) -> None:
    """Issue 12, finding 8: each of these was a 500 with a traceback in the worker's log."""
    url = f"{sim.url}/v1/chat/completions"
    surrogate = b'{"model": "sim-llm", "messages": [{"role": "user", "content": "\\ud800"}]}'
    deep = b'{"model": "sim-llm", "x": ' + b"[" * 5000 + b"]" * 5000 + b', "messages": []}'
    digits = (
        b'{"model": "sim-llm", "max_tokens": ' + b"9" * 5001 + b', "messages": [{"role": "user", "content": "hi"}]}'
    )
    for name, body, headers in [
        ("lone surrogate", surrogate, {}),
        ("deep nesting", deep, {}),
        ("5001 digits", digits, {}),
        ("broken deflate", b"garbage", {"Content_Encoding": "deflate"}),
    ]:
        status, reply = raw("POST", url, body, **headers)
        assert status == 400, (name, status, reply)
        assert reply["error"]["type"] == "invalid_request_error", name
    with pytest.raises(openai.BadRequestError, match="at most 32768") as big:
        sdk(sim).chat.completions.create(model="sim-llm", messages=MESSAGES, max_tokens=10**9)
    assert big.value.body["param"] == "max_tokens"  # type: ignore[index]
    assert "Traceback" not in sim.log()


def test_slow_headers_and_half_sent_bodies_are_cut_off(start_worker: StartWorker) -> None:
    """Issue 12, finding 8: 150 slowloris sockets and 50 half-sent bodies stayed open 30 s and more."""
    worker = start_worker("sim", "--model", "m", "--header-timeout", "1", "--body-timeout", "1")
    host, port = worker.url.removeprefix("http://").split(":")
    slow = [socket.create_connection((host, int(port)), timeout=30) for _ in range(20)]
    half = [socket.create_connection((host, int(port)), timeout=30) for _ in range(10)]
    for sock in slow:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    for sock in half:
        sock.sendall(b'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"model": ')
    assert all(sock.recv(100) == b"" for sock in slow), "closed without an answer"
    answers = [b"".join(iter(lambda s=sock: s.recv(4096), b"")) for sock in half]
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers[0][:100]
    for sock in slow + half:
        sock.close()
    assert sdk(worker).completions.create(model="m", prompt="x", max_tokens=2).choices
    assert "Traceback" not in worker.log()


def test_max_tokens_has_a_configurable_ceiling(start_worker: StartWorker) -> None:
    worker = start_worker("sim", "--model", "m", "--max-tokens-limit", "16")
    assert sdk(worker).completions.create(model="m", prompt="x", max_tokens=16).usage.completion_tokens == 16  # type: ignore[union-attr]
    with pytest.raises(openai.BadRequestError, match="at most 16"):
        sdk(worker).completions.create(model="m", prompt="x", max_tokens=17)


def test_body_over_the_limit_is_413(start_worker: StartWorker) -> None:
    worker = start_worker("sim", "--model", "m", "--max-body-bytes", "2048")
    status, body = raw(
        "POST", f"{worker.url}/v1/completions", json.dumps({"model": "m", "prompt": "x" * 10_000}).encode()
    )
    assert status == 413 and "2048" in body["error"]["message"]


def test_admission_control_answers_429_with_retry_after(start_worker: StartWorker) -> None:
    worker = start_worker("sim", "--model", "m", "--max-concurrency", "1", "--max-queue", "0", "--ttft-ms", "0",
                          "--tpot-ms", "50")  # fmt: skip
    client = sdk(worker)
    busy = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=100, stream=True)
    next(iter(busy))  # the only slot is taken
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=1)
    assert int(refused.value.response.headers["Retry-After"]) >= 1
    busy.close()


def test_every_response_reports_the_load_it_left_out_of_its_own_count(start_worker: StartWorker) -> None:
    """The ORCA header (smmf.wire.load_report): in-flight and queued as the worker answered, less that request."""
    worker = start_worker("sim", "--model", "m", "--max-concurrency", "1", "--max-queue", "0", "--ttft-ms", "0",
                          "--tpot-ms", "50")  # fmt: skip
    client = sdk(worker)
    busy = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES, max_tokens=100, stream=True)
    assert busy.headers["endpoint-load-metrics"] == "TEXT named_metrics.inflight=0, named_metrics.queued=0"
    stream = busy.parse()
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=1)
    assert refused.value.response.headers["endpoint-load-metrics"] == (
        "TEXT named_metrics.inflight=1, named_metrics.queued=0"
    ), "a refusal reports the stream holding the only slot"
    stream.close()
    deadline = time.monotonic() + 10
    while metric(worker, "smmf_requests_inflight") != 0:
        assert time.monotonic() < deadline, "the slot was not freed after the stream was closed"
        time.sleep(0.05)
    whole = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES, max_tokens=1)
    assert whole.headers["endpoint-load-metrics"] == "TEXT named_metrics.inflight=0, named_metrics.queued=0"


def test_disconnect_cancels_the_generation_and_frees_the_slot(start_worker: StartWorker) -> None:
    worker = start_worker("sim", "--model", "m", "--max-concurrency", "1", "--max-queue", "0", "--ttft-ms", "0",
                          "--tpot-ms", "100")  # fmt: skip
    client = sdk(worker)
    stream = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=600, stream=True)
    next(iter(stream))
    assert metric(worker, "smmf_requests_inflight") == 1
    stream.close()  # 600 tokens at 100 ms would hold the slot for a minute

    deadline = time.monotonic() + 5
    while metric(worker, "smmf_requests_inflight") != 0:
        assert time.monotonic() < deadline, "the slot was not freed after the client went away"
        time.sleep(0.05)
    reply = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=1)
    assert reply.choices[0].finish_reason == "length"


def test_fail_rate_fails_on_purpose(start_worker: StartWorker) -> None:
    worker = start_worker("sim", "--model", "m", "--fail-rate", "1")
    with pytest.raises(openai.InternalServerError, match="Simulated failure") as failed:
        sdk(worker).chat.completions.create(model="m", messages=MESSAGES)
    assert failed.value.status_code == 503


def test_metrics_count_tokens_and_latency(sim: SmmfProcess) -> None:
    client = sdk(sim)
    for _ in range(3):
        client.completions.create(model="sim-llm", prompt="one two", max_tokens=5)
    assert metric(sim, "smmf_completion_tokens_total") == 15
    assert metric(sim, "smmf_prompt_tokens_total") == 6
    assert metric(sim, "smmf_requests_queued") == 0


def test_the_prefix_cache_counts_prompt_tokens_looked_up_and_found(start_worker: StartWorker) -> None:
    worker = start_worker("sim", "--model", "m", "--prefix-cache-blocks", "64", "--block-tokens", "4")
    prompt = " ".join(f"w{i}" for i in range(10))  # two whole blocks of four, and two tokens over
    first = sdk(worker).completions.create(model="m", prompt=prompt, max_tokens=2).usage
    second = sdk(worker).completions.create(model="m", prompt=prompt, max_tokens=2).usage
    assert metric(worker, "smmf_prefix_cache_queries_total") == 20
    assert metric(worker, "smmf_prefix_cache_hits_total") == 8  # the second time, the two whole blocks
    cached = [u.prompt_tokens_details.cached_tokens for u in (first, second) if u and u.prompt_tokens_details]
    assert cached == [0, 8], "each response says how much of its prompt was found, as vLLM's usage does"
    streamed = sdk(worker).chat.completions.create(
        model="m", messages=[{"role": "user", "content": prompt}], max_tokens=2, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    usage = next(chunk.usage for chunk in streamed if chunk.usage)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens is not None
    plain = start_worker("sim", "--model", "m")
    with pytest.raises(AssertionError, match="not in /metrics"):
        metric(plain, "smmf_prefix_cache_queries_total")
    assert sdk(plain).completions.create(model="m", prompt=prompt, max_tokens=2).usage.prompt_tokens_details is None  # type: ignore[union-attr]


def test_bad_command_lines_exit_cleanly(start_worker: StartWorker) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "smmf.cli", "worker", *args], capture_output=True, text=True, timeout=60
        )

    bad_rate = run("sim", "--model", "m", "--fail-rate", "2")
    assert bad_rate.returncode == 2 and "--fail-rate" in bad_rate.stderr and "Traceback" not in bad_rate.stderr
    bad_cache = run("sim", "--model", "m", "--prefix-cache-blocks", "-1")
    assert bad_cache.returncode == 2 and "--prefix-cache-blocks" in bad_cache.stderr
    assert "Traceback" not in bad_cache.stderr

    taken = start_worker("sim", "--model", "m")
    port = taken.url.rsplit(":", 1)[1]
    clash = run("sim", "--model", "m", "--port", port)
    assert clash.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in clash.stderr
    assert "Traceback" not in clash.stderr
