"""The real all-MiniLM-L6-v2 model through `smmf worker embedding`, called with the official SDK."""

from __future__ import annotations

import math

import openai
import pytest

from tests.support.engines import run_limit, start_limit
from tests.support.processes import SmmfProcess

pytestmark = pytest.mark.timeout(run_limit("embedding"))


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> SmmfProcess:
    worker = SmmfProcess(["worker", "embedding", "--model", "minilm", "--port", "0"], tmp_path_factory.mktemp("minilm"))
    try:
        worker.start(url_timeout=start_limit("embedding")).wait_healthy(timeout=start_limit("embedding"))
        yield worker
    finally:
        worker.stop()


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_vectors_have_384_dimensions_and_similar_sentences_are_closer(minilm: SmmfProcess) -> None:
    client = openai.OpenAI(base_url=f"{minilm.url}/v1", api_key="unused", max_retries=0)
    reply = client.embeddings.create(
        model="minilm",
        input=["A cat sits on the mat.", "A kitten is resting on a rug.", "Quarterly revenue rose by four percent."],
    )
    cat, kitten, revenue = (d.embedding for d in reply.data)
    assert len(cat) == 384
    assert cosine(cat, kitten) > cosine(cat, revenue) + 0.2
    assert reply.usage.prompt_tokens > 10

    single = client.embeddings.create(model="minilm", input="A cat sits on the mat.")
    assert cosine(single.data[0].embedding, cat) > 0.999


def test_generation_is_refused_on_an_embedding_model(minilm: SmmfProcess) -> None:
    client = openai.OpenAI(base_url=f"{minilm.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="does not support"):
        client.chat.completions.create(model="minilm", messages=[{"role": "user", "content": "hi"}])
