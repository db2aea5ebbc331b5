"""How an instance record becomes a Nacos instance, and back.

The Nacos console's instance table shows a service per model and each
instance's ip, port, weight and metadata, so the record's fields are the
metadata, readable (`record_fields.py`).  Nacos checks a service name
against `^(?!@).((?!@@)[^\\u4E00-\\u9FA5\\s])*$` (at most 512 characters):
most model names would pass as they are.  nacos-sdk-python also keeps a
cache file per service, named after it, so a `/` (`Qwen/Qwen2.5-7B-Instruct`)
becomes `:` and a name is cut at 200 characters; the metadata keeps the
exact name.

The server refuses metadata longer than 1,024 characters, keys and values
together (`DefaultParamChecker.checkMetadataFormat`, counted in UTF-16 code
units); a record that does not fit is refused here, naming its longest
field, and nothing of it is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ...errors import RecordRejected
from .record_fields import record_fields, record_from_fields

__all__ = ["MAX_METADATA", "InstanceParts", "decode_instance", "encode_instance", "service_name"]

MAX_METADATA = 1024
#: Nacos allows 512; the SDK's cache file name (`<group>@@<service>`) must stay within 255 bytes.
MAX_SERVICE_NAME = 200
#: Nacos's weight range (`Instance.weight` is checked against 0..10000 by the console and the maintainer API).
MAX_WEIGHT = 10000.0
_UNFIT = re.compile(r"[\s\u4E00-\u9FA5]|@@")


def service_name(model: str) -> str:
    """The model name within Nacos's rules for service names."""
    name = _UNFIT.sub("-", model).replace("/", ":").replace("\0", "-").lstrip("@")
    while len(name.encode()) > MAX_SERVICE_NAME:
        name = name[:-1]
    return name or "model"


def _java_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True, slots=True)
class InstanceParts:
    """What registering an instance needs."""

    service: str
    ip: str
    port: int
    weight: float
    metadata: dict[str, str]


def encode_instance(model: str, raw: bytes) -> InstanceParts:
    """The instance that stores record `raw` of `model`; `RecordRejected` when its metadata cannot fit."""
    metadata = record_fields(model, raw, "Nacos")
    size = sum(_java_length(k) + _java_length(v) for k, v in metadata.items() if v.strip())
    if size > MAX_METADATA:
        longest = max(metadata, key=lambda k: len(metadata[k]))
        raise RecordRejected(
            model,
            longest,
            f"the record needs {size} characters of metadata and Nacos allows {MAX_METADATA} for all keys and "
            f"values together (its longest field is {longest!r})",
        )
    endpoint = urlsplit(metadata.get("url", ""))
    try:
        port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    except ValueError:
        port = 0
    try:
        weight = min(max(float(metadata.get("weight", "1")), 0.0), MAX_WEIGHT)
    except ValueError:
        weight = 1.0
    return InstanceParts(service_name(model), endpoint.hostname or "0.0.0.0", port, weight, metadata)


def decode_instance(service: str, metadata: dict[str, str]) -> tuple[str, bytes] | None:
    """The model of the record's key and the record an instance of `service` holds; None when it is not smmf's."""
    decoded = record_from_fields(metadata)
    if decoded is None or service_name(decoded[0]) != service:
        return None
    return decoded
