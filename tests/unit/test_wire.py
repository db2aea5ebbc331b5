"""The OpenAI wire format: event streams, error bodies, Retry-After and load reports."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from email.utils import formatdate

import pytest

from smmf.wire import sse
from smmf.wire.errors import error_body, read_error
from smmf.wire.load_report import format_load_report, parse_load_report
from smmf.wire.responses import ResponseBuilder, Usage
from smmf.wire.retry_after import format_retry_after, parse_retry_after


async def lines(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def test_events_are_read_up_to_done() -> None:
    stream = lines(b": comment\n", sse.event({"a": 1}), b"\n", sse.event({"b": 2}), sse.DONE, sse.event({"late": 1}))
    assert [event async for event in sse.json_events(stream)] == [{"a": 1}, {"b": 2}]


async def test_a_stream_without_done_is_unfinished() -> None:
    with pytest.raises(sse.Unfinished):
        [event async for event in sse.json_events(lines(sse.event({"a": 1})))]


async def test_a_malformed_event_is_a_json_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        [event async for event in sse.json_events(lines(b"data: {not json\n"))]


def test_error_bodies_are_written_and_read_back() -> None:
    body = error_body("nope", param="model", code="model_not_found")
    assert read_error(json.dumps(body)) == ("nope", body)
    assert read_error('{"error": "plain"}')[0] == "plain"
    assert read_error('{"message": "top"}')[0] == "top"
    assert read_error("<html>bad gateway</html>") == (None, "<html>bad gateway</html>")
    assert read_error("[1, 2]") == (None, [1, 2])


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7", 7.0), ("0.5", 0.5), (" 3 ", 3.0), (None, None), ("soon", None), ("-1", None), ("nan", None)],
)
def test_retry_after_in_seconds(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_retry_after_as_an_http_date() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_retry_after_is_written_in_whole_seconds_of_at_least_one() -> None:
    assert [format_retry_after(s) for s in (0.2, 1.0, 1.5, 7)] == ["1", "1", "2", "7"]


def test_a_stream_and_a_whole_answer_carry_the_same_id_and_usage() -> None:
    shape = ResponseBuilder("chat", "m")
    usage = Usage.counted(3, 2)
    whole = shape.whole("hi", "stop", usage)
    first = shape.chunk("hi", None, first=True)
    assert whole["id"] == first["id"] == shape.usage_chunk(usage)["id"]
    assert whole["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "hi"}


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("TEXT named_metrics.inflight=3, named_metrics.queued=1", (3, 1)),
        ("TEXT cpu_utilization=0.5, named_metrics.inflight=2", (2, 0)),
        ("TEXT named_metrics.inflight=2.0,named_metrics.queued=0", (2, 0)),
        (None, None),
        ("", None),
        ("JSON {}", None),
        ("TEXT named_metrics.queued=1", None),
        ("TEXT named_metrics.inflight=-1", None),
        ("TEXT named_metrics.inflight=nan", None),
        ("TEXT named_metrics.inflight=1e300", None),
        ("TEXT named_metrics.inflight=x", None),
        ("TEXT named_metrics.inflight", None),
        ("TEXT named_metrics.inflight=1, " + "x" * 2000, None),
    ],
)
def test_load_reports_are_read_or_refused_whole(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_load_report(header) == expected


def test_a_written_load_report_reads_back() -> None:
    assert parse_load_report(format_load_report(5, 2)) == (5, 2)
