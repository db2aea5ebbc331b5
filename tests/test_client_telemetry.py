"""Client telemetry captured with OpenTelemetry's in-memory exporters, against a real sim worker."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from smmf.client import ModelClient, Telemetry
from tests.support.fleet import Fleet

MESSAGES = [{"role": "user", "content": "a private question"}]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    started = Fleet(
        f"file://{tmp_path}/r.db", f"m-{uuid.uuid4().hex[:6]}", [1], tmp_path, ("--ttft-ms", "5", "--tpot-ms", "2")
    )
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture
def otel() -> tuple[InMemorySpanExporter, InMemoryMetricReader, Callable[[bool], Telemetry]]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[metrics])

    def make(capture: bool) -> Telemetry:
        return Telemetry(capture_content=capture, tracer_provider=tracer_provider, meter_provider=meter_provider)

    return spans, metrics, make


async def test_one_span_per_call_with_genai_attributes(fleet: Fleet, otel: tuple) -> None:  # type: ignore[type-arg]
    spans, metrics, make = otel
    async with ModelClient(fleet.url, policy="round_robin", telemetry=make(False)) as client:
        reply = await client.chat.completions.create(
            model=fleet.model, messages=MESSAGES, max_tokens=4, temperature=0.5
        )
        stream = await client.chat.completions.create(
            model=fleet.model, messages=MESSAGES, max_tokens=3, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
        assert client.feedback(reply.id, 1.0, comment="helpful") is True
        assert client.feedback("unknown-id", 0.0) is False

    plain, streamed, feedback = spans.get_finished_spans()
    assert plain.name == f"chat {fleet.model}" and plain.kind.name == "CLIENT"
    attrs = dict(plain.attributes or {})
    assert attrs["gen_ai.request.model"] == fleet.model and attrs["gen_ai.request.temperature"] == 0.5
    assert attrs["gen_ai.request.max_tokens"] == 4
    assert attrs["gen_ai.usage.output_tokens"] == 4 and attrs["gen_ai.usage.input_tokens"] > 0
    assert attrs["server.address"] == "127.0.0.1" and attrs["smmf.instance.id"] == reply.instance_id
    assert attrs["smmf.policy"] == "round_robin" and attrs["smmf.retries"] == 0
    assert attrs["gen_ai.response.id"] == reply.id
    assert not any(e.name.startswith("gen_ai.content") for e in plain.events), "no content unless asked"

    sattrs = dict(streamed.attributes or {})
    assert sattrs["smmf.time_to_first_token_s"] > 0 and sattrs["gen_ai.usage.output_tokens"] == 3
    assert chunks[-1].usage is not None

    assert feedback.name == "gen_ai.feedback" and feedback.parent is not None
    assert feedback.parent.span_id == plain.context.span_id and feedback.context.trace_id == plain.context.trace_id
    assert (
        feedback.attributes["smmf.feedback.score"] == 1.0 and feedback.attributes["smmf.feedback.comment"] == "helpful"
    )

    names = {
        m.name for rm in metrics.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert {"gen_ai.client.operation.duration", "smmf.client.time_to_first_token"} <= names


async def test_content_is_recorded_only_when_asked(fleet: Fleet, otel: tuple) -> None:  # type: ignore[type-arg]
    spans, _, make = otel
    async with ModelClient(fleet.url, telemetry=make(True)) as client:
        reply = await client.chat.completions.create(model=fleet.model, messages=MESSAGES, max_tokens=2)
    (span,) = spans.get_finished_spans()
    events = {e.name: dict(e.attributes or {}) for e in span.events}
    assert "a private question" in events["gen_ai.content.prompt"]["gen_ai.prompt"]
    assert events["gen_ai.content.completion"]["gen_ai.completion"] == reply.choices[0].message.content


async def test_failed_calls_are_marked(fleet: Fleet, otel: tuple) -> None:  # type: ignore[type-arg]
    spans, _, make = otel
    async with ModelClient(fleet.url, telemetry=make(False)) as client:
        with pytest.raises(Exception, match=r"does not exist|no instance"):
            await client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    (span,) = spans.get_finished_spans()
    assert span.status.status_code.name == "ERROR"
