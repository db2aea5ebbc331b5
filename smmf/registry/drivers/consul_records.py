"""How an instance record becomes a Consul service, and back.

An operator reading the Consul UI should see a service per model and the
record's fields as readable Meta, so the record is not stored as one opaque
blob: each field is its own Meta key (`endpoint` shows as `url`), strings as
they are and everything else as compact JSON.  The record's key is the
service ID and the model it is registered under; that model is also the
record's, except for a record written by hand that disagrees with its key,
whose key's model is kept in `smmf_key_model` so readers can refuse it.

Consul limits Meta to 64 keys of `^[a-zA-Z0-9_-]+$` (at most 128 characters,
not starting with `consul-`) and values of 512 bytes.  A longer value (a
template's JSON, say) is spread over `field`, `field-2`, `field-3`...; a
record that still does not fit is refused with the field named, never cut.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ...errors import RecordRejected
from .record_fields import KEY_MODEL, record_fields, record_from_fields

__all__ = ["KEY_MODEL_META", "LEASE_META", "ServiceParts", "decode_service", "encode_service", "service_name"]

META_MAX_PAIRS = 64
META_KEY_MAX = 128
META_VALUE_MAX = 512
_META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")
_CHUNK = re.compile(r"^(.+)-([2-9]|[1-9][0-9]+)$")

#: Meta key holding the lease a leased record lives under, so any process can revoke it.
LEASE_META = "smmf_lease"
#: Meta key holding the model of the record's key, when the record names another.
KEY_MODEL_META = KEY_MODEL


def service_name(model: str) -> str:
    """The model name made DNS-safe (lower case, `[a-z0-9-]`, at most 63 characters); Meta keeps the exact name."""
    name = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")[:63].strip("-")
    return name or "model"


@dataclass(frozen=True, slots=True)
class ServiceParts:
    """What `PUT /v1/agent/service/register` needs besides the check."""

    name: str
    address: str
    port: int
    weight: int
    meta: dict[str, str]
    state: str


def _chunks(value: str) -> list[str]:
    """`value` in pieces of at most 512 bytes, never splitting a character."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for char in value:
        width = len(char.encode())
        if size + width > META_VALUE_MAX:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    pieces.append("".join(current))
    return pieces


def encode_service(model: str, raw: bytes, lease: int | None) -> ServiceParts:
    """The service that stores record `raw` of `model`; `RecordRejected` naming the field that cannot fit."""
    fields = record_fields(model, raw, "Consul")
    record = json.loads(raw)
    meta: dict[str, str] = {}
    if lease is not None:
        meta[LEASE_META] = str(lease)
    for key, text in fields.items():
        if not _META_KEY.match(key) or len(key) > META_KEY_MAX - 4 or key.lower().startswith("consul-"):
            raise RecordRejected(model, key, "the name is not a Consul Meta key ([a-zA-Z0-9_-], at most 124)")
        for number, piece in enumerate(_chunks(text), start=1):
            meta[key if number == 1 else f"{key}-{number}"] = piece
        if len(meta) > META_MAX_PAIRS:
            raise RecordRejected(model, key, f"the record needs more than Consul's {META_MAX_PAIRS} Meta keys")
    endpoint = urlsplit(str(record.get("endpoint", "")))
    try:
        port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    except ValueError:
        port = 0
    weight = record.get("weight", 1)
    passing = max(1, min(65535, round(weight))) if isinstance(weight, int | float) else 1
    state = str(record.get("state", "up"))
    return ServiceParts(service_name(model), endpoint.hostname or "", port, passing, meta, state)


def decode_service(meta: dict[str, str]) -> tuple[str, bytes] | None:
    """The model of the record's key and the record a service's Meta holds; None when it names no model."""
    joined: dict[str, str] = {}
    for key in sorted(meta, key=lambda k: (_base(k), _number(k))):
        base = _base(key)
        joined[base] = joined.get(base, "") + meta[key]
    return record_from_fields(joined, ignore=frozenset({LEASE_META}))


def _base(key: str) -> str:
    match = _CHUNK.match(key)
    return match.group(1) if match else key


def _number(key: str) -> int:
    match = _CHUNK.match(key)
    return int(match.group(2)) if match else 1
