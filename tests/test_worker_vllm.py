"""Real vLLM on CPU through `smmf worker vllm`, serving the bundled Gemma converted to a Hugging Face dir.

Runs in `.venv-vllm` (`make test-vllm`), where vLLM's CPU build is installed;
the main test run deselects it with `-m "not vllm"`.
"""

from __future__ import annotations

import openai
import pytest

from tests.support.engines import run_limit, start_limit
from tests.support.helpers import assert_stream_matches_plain
from tests.support.processes import SmmfProcess

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(run_limit("vllm-worker"))]

VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def vllm_worker(tmp_path_factory: pytest.TempPathFactory) -> SmmfProcess:
    worker = SmmfProcess(
        ["worker", "vllm", "--model", "gemma-vllm", "--port", "0", "--max-model-len", "1024"],
        tmp_path_factory.mktemp("vllm"),
        env=VLLM_ENV,
    )
    try:
        worker.start(url_timeout=start_limit("vllm-worker")).wait_healthy(timeout=start_limit("vllm-worker"))
        yield worker
    finally:
        worker.stop(timeout=60)


def sdk(worker: SmmfProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{worker.url}/v1", api_key="unused", max_retries=0, timeout=300)


def test_completion(vllm_worker: SmmfProcess) -> None:
    reply = sdk(vllm_worker).completions.create(
        model="gemma-vllm", prompt="The capital of France is", max_tokens=12, temperature=0
    )
    assert reply.choices[0].text.strip()
    assert reply.usage is not None and reply.usage.prompt_tokens >= 5 and 1 <= reply.usage.completion_tokens <= 12


def test_stream_and_chat(vllm_worker: SmmfProcess) -> None:
    client = sdk(vllm_worker)
    assert_stream_matches_plain(
        client, model="gemma-vllm", prompt="Here is a list of fruits: apple,", max_tokens=16, temperature=0
    )

    chat = client.chat.completions.create(
        model="gemma-vllm",
        messages=[{"role": "user", "content": "What color is the sky?"}],
        max_tokens=20,
        temperature=0,
    )
    # A base model need not answer well; what smmf owns is the turn format and the response shape.
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].finish_reason in ("stop", "length")
    assert "<end_of_turn>" not in (chat.choices[0].message.content or "")
    assert chat.usage is not None and chat.usage.prompt_tokens <= 16, "turn markers are single special tokens"


def test_usage_says_how_much_of_the_prompt_the_prefix_cache_found(vllm_worker: SmmfProcess) -> None:
    prompt = " ".join(f"item {i}," for i in range(150))  # some hundreds of tokens: whole KV-cache blocks
    found = []
    for _ in range(2):
        reply = sdk(vllm_worker).completions.create(model="gemma-vllm", prompt=prompt, max_tokens=1, temperature=0)
        assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
        found.append(reply.usage.prompt_tokens_details.cached_tokens)
    assert found[0] is not None and found[1] is not None and found[1] > found[0], found
