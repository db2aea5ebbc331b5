"""The instance record: the one schema that every part of smmf shares.

A record is what a sidecar publishes about one running model server and what
every client, dashboard and CLI reads back.  Readers meet records written by
other versions of smmf and by hand, so reading is forgiving in one way
(unknown fields are ignored, so a newer writer can add fields) and strict in
another (a record that does not validate is skipped with one warning, never
raised to the caller, so one bad key cannot take down a client).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .template import HttpTemplate, check_http_url

__all__ = [
    "MAX_RECORD_BYTES",
    "SCHEMA_VERSION",
    "Instance",
    "Kind",
    "Load",
    "Protocol",
    "State",
    "first_report",
    "instance_id",
    "parse_record",
    "report_invalid",
]

log = logging.getLogger(__name__)

#: Version written into every record.  Readers accept any version and ignore
#: fields they do not know, so old and new sidecars and clients can coexist.
SCHEMA_VERSION = 1

#: Largest record read.  A real one is well under 4 KiB; anything near this is
#: someone filling the registry, and every client would hold it in memory.
MAX_RECORD_BYTES = 64 * 1024


class Kind(StrEnum):
    LLM = "llm"
    EMBEDDING = "embedding"
    RERANK = "rerank"


class Protocol(StrEnum):
    OPENAI = "openai"
    TEMPLATE = "template"


class State(StrEnum):
    """What an instance is doing; only `up` instances get new requests.

    `draining` finishes the work it has and then goes `offline`; `offline` is
    an operator's decision and lasts until `online`, across restarts;
    `unhealthy` is the sidecar's probes failing, and ends when they pass.
    """

    UP = "up"
    DRAINING = "draining"
    OFFLINE = "offline"
    UNHEALTHY = "unhealthy"


class Load(BaseModel):
    """Load as the sidecar last read it from the server, at `updated_at`.

    `reported` is False when nothing publishes load for this instance (a
    server without metrics, a third-party API): its zeros mean "unknown".
    """

    model_config = ConfigDict(extra="ignore")

    inflight: int = Field(0, ge=0)
    queued: int = Field(0, ge=0)
    kv_cache_usage: float | None = Field(None, ge=0.0, le=1.0)
    #: Share of prompt tokens found in the server's prefix cache over its last load interval with traffic.
    prefix_cache_hit_rate: float | None = Field(None, ge=0.0, le=1.0)
    updated_at: float = Field(default_factory=time.time)
    reported: bool = True


def _non_blank(value: str, what: str) -> str:
    if not value or value.strip() != value:
        raise ValueError(f"{what} must be a non-empty string without surrounding spaces")
    return value


class Instance(BaseModel):
    """One running instance of one model, as stored in the registry.

    Secrets never live here.  A template record may name which of a caller's
    credentials its API needs (`template.api_key_env`), and a client sends it
    only where its own configuration says so (`smmf.client.trust`).
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    schema_version: int = Field(SCHEMA_VERSION, alias="schema", ge=1)
    id: str
    model: str
    kind: Kind = Kind.LLM
    endpoint: str
    protocol: Protocol = Protocol.OPENAI
    backend: str = "external"
    weight: float = Field(1.0, gt=0)
    state: State = State.UP
    load: Load = Field(default_factory=Load)
    labels: dict[str, str] = Field(default_factory=dict)
    #: For `protocol: template`: how to call the third-party API (the endpoint is its URL template).
    template: HttpTemplate | None = None
    started_at: float = Field(default_factory=time.time)
    #: When the holder of the record's lease last confirmed it alive (None for a persistent record).
    alive_at: float | None = None

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        _non_blank(value, "id")
        if "/" in value:
            raise ValueError("id must not contain '/'")
        return value

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str) -> str:
        return _non_blank(value, "model")

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        return check_http_url(_non_blank(value, "endpoint"), "endpoint")

    @model_validator(mode="after")
    def _template_needs_spec(self) -> Instance:
        if self.protocol is Protocol.TEMPLATE and self.template is None:
            raise ValueError("a protocol: template record needs its template")
        return self

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()

    @property
    def eligible(self) -> bool:
        """Whether new requests may be sent here (draining and offline take none)."""
        return self.state is State.UP


def instance_id(model: str, host: str, port: int | str) -> str:
    """The id an instance keeps across restarts: `host:port-` and a short hash of the model it serves.

    The same server at the same address is the same instance, so what an
    operator asked of it (offline, say) still applies after a reboot; the
    model's hash keeps two models behind one address apart.
    """
    return f"{host}:{port}-{hashlib.blake2b(model.encode(), digest_size=3).hexdigest()}"


# Keys whose current bad value was already reported, so a watcher that re-lists
# every few seconds does not log the same broken record again and again.
_reported: OrderedDict[tuple[str, str], None] = OrderedDict()
_REPORTED_MAX = 4096


def first_report(key: str, detail: str) -> bool:
    """True the first time (among the last 4096) that `detail` is reported about the record at `key`."""
    fingerprint = (key, detail)
    if fingerprint in _reported:
        return False
    _reported[fingerprint] = None
    if len(_reported) > _REPORTED_MAX:
        _reported.popitem(last=False)
    return True


def report_invalid(key: str, raw: bytes, error: str) -> None:
    """Warn that the record at `key` is skipped, once for as long as its value stays the same."""
    if first_report(key, hashlib.blake2b(raw, digest_size=8).hexdigest()):
        log.warning("skipping invalid instance record at %r: %s", key, error)


def parse_record(key: str, raw: bytes | str) -> Instance | None:
    """Validate a stored record; `None` (and one warning naming `key`) if it is invalid."""
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > MAX_RECORD_BYTES:
        report_invalid(key, data, f"{len(data)} bytes, over the limit of {MAX_RECORD_BYTES}")
        return None
    try:
        return Instance.model_validate_json(data)
    except ValidationError as exc:
        summary = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'record'}: {err['msg']}" for err in exc.errors()[:3]
        )
        report_invalid(key, data, summary)
    except ValueError as exc:
        report_invalid(key, data, str(exc))
    return None
