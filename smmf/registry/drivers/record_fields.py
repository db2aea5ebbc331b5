"""A record as readable string fields, and back: how registries that keep string metadata show a record.

Consul's service Meta and Nacos's instance metadata are string maps an
operator reads in the registry's own UI, so a record is stored field by
field rather than as one opaque blob: strings as they are (`endpoint` shown
as `url`), everything else as compact JSON.  A record written by hand whose
model disagrees with its key keeps the key's model in `smmf_key_model`, so
readers can refuse it as they do with etcd.
"""

from __future__ import annotations

import json
from typing import Any

from ...errors import RecordRejected

__all__ = ["KEY_MODEL", "record_fields", "record_from_fields"]

#: The field holding the model of the record's key, when the record names another.
KEY_MODEL = "smmf_key_model"
#: Fields stored as plain strings; every other field is compact JSON.
_STRINGS = {"id", "model", "endpoint", "kind", "backend", "protocol", "state"}
#: A record field shown under another name.
_RENAMED = {"endpoint": "url"}
_FIELDS = {shown: name for name, shown in _RENAMED.items()}


def record_fields(model: str, raw: bytes, registry: str) -> dict[str, str]:
    """The fields of record `raw`, stored under `model`'s key; `RecordRejected` when it is not a JSON object."""
    try:
        record = json.loads(raw)
    except ValueError:
        raise RecordRejected(model, "record", f"it is not JSON; {registry} stores a record as its fields") from None
    if not isinstance(record, dict):
        raise RecordRejected(model, "record", f"it is not a JSON object; {registry} stores a record as its fields")
    fields: dict[str, str] = {}
    if record.get("model") != model:
        fields[KEY_MODEL] = model
    for name, value in record.items():
        text = value if name in _STRINGS and isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        fields[_RENAMED.get(str(name), str(name))] = text
    return fields


def record_from_fields(fields: dict[str, str], ignore: frozenset[str] = frozenset()) -> tuple[str, bytes] | None:
    """The model of the record's key and the record `fields` hold; None when they name no model."""
    model = fields.get(KEY_MODEL) or fields.get("model")
    if model is None:
        return None
    record: dict[str, Any] = {}
    for shown, text in fields.items():
        if shown == KEY_MODEL or shown in ignore:
            continue
        name = _FIELDS.get(shown, shown)
        if name in _STRINGS:
            record[name] = text
        else:
            try:
                record[name] = json.loads(text)
            except ValueError:
                record[name] = text  # left for the record's validation to refuse, with the key named
    return model, json.dumps(record, separators=(",", ":")).encode()
