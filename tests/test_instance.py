"""The instance record: validation, forward compatibility, and forgiving reads."""

from __future__ import annotations

import json
import logging

import pytest
from pydantic import ValidationError

from smmf.instance import SCHEMA_VERSION, Instance, Kind, State, instance_id, parse_record


def test_round_trip_uses_the_schema_field() -> None:
    rec = Instance(id="h:1-abc", model="Qwen/Qwen2.5-7B", endpoint="http://h:1/v1", kind="embedding", weight=2)
    data = json.loads(rec.to_json())
    assert data["schema"] == SCHEMA_VERSION and "schema_version" not in data
    assert data["load"]["inflight"] == 0
    again = parse_record("k", rec.to_json())
    assert again == rec and again.kind is Kind.EMBEDDING and again.state is State.UP


def test_a_newer_writer_can_add_fields() -> None:
    rec = Instance(id="h:1-abc", model="m", endpoint="http://h:1/v1")
    data = json.loads(rec.to_json()) | {"schema": SCHEMA_VERSION + 1, "gpu_topology": {"nvlink": True}}
    parsed = parse_record("k", json.dumps(data))
    assert parsed is not None and parsed.id == "h:1-abc"


@pytest.mark.parametrize(
    "change",
    [
        {"weight": 0},
        {"state": "sleeping"},
        {"id": "a/b"},
        {"model": ""},
        {"load": {"inflight": -1}},
        {"load": {"kv_cache_usage": 1.5}},
    ],
)
def test_invalid_records_are_rejected(change: dict[str, object]) -> None:
    base = {"id": "h:1-x", "model": "m", "endpoint": "http://h:1/v1"}
    with pytest.raises(ValidationError):
        Instance.model_validate(base | change)


def test_parse_record_skips_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="smmf.instance"):
        assert parse_record("instances/m/once", b"[1, 2") is None
        assert parse_record("instances/m/once", b"[1, 2") is None
        assert parse_record("instances/m/once", b'{"id": 1}') is None
    messages = [m for m in caplog.messages if "instances/m/once" in m]
    assert len(messages) == 2, "one warning per key and bad value, not per read"


def test_an_instance_id_is_stable_readable_and_distinct_per_model() -> None:
    a, b = instance_id("gemma", "10.0.0.5", 8000), instance_id("gemma", "10.0.0.5", 8000)
    assert a == b and a.startswith("10.0.0.5:8000-"), "the same server at the same address keeps its id"
    assert instance_id("Qwen/Qwen2.5-7B", "10.0.0.5", 8000) != a and "/" not in instance_id("a/b", "h", 1)
