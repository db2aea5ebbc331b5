"""The load report an smmf worker puts on every response, in ORCA's HTTP form.

Each caller balances for itself and sees only its own requests; a load the
sidecar publishes is up to a load interval old while an instance's queue
turns over in tens of milliseconds.  So every response carries the
worker's load at the moment it answered, the way gRPC's ORCA reports ride
on responses: the `endpoint-load-metrics` header in ORCA's TEXT format
(also what Envoy reads and vLLM writes), with two named metrics:

    endpoint-load-metrics: TEXT named_metrics.inflight=3, named_metrics.queued=1

Both leave out the request the response answers.  A report is data from
whoever answered: a value that is not a non-negative number, or a header
that is not this form, is no report.
"""

from __future__ import annotations

import math

__all__ = ["LOAD_REPORT", "format_load_report", "parse_load_report"]

LOAD_REPORT = "endpoint-load-metrics"
_INFLIGHT = "named_metrics.inflight"
_QUEUED = "named_metrics.queued"
#: Longest header read; a worker writes about 60 characters.
_MAX_LENGTH = 1024
#: A figure above this is no instance's load, but a broken or hostile report.
_MAX_VALUE = 1_000_000


def format_load_report(inflight: int, queued: int) -> str:
    return f"TEXT {_INFLIGHT}={inflight}, {_QUEUED}={queued}"


def parse_load_report(header: str | None) -> tuple[int, int] | None:
    """(in-flight, queued) from a report; None when there is none or it cannot be read."""
    if not header or len(header) > _MAX_LENGTH:
        return None
    kind, _, fields = header.strip().partition(" ")
    if kind != "TEXT":
        return None
    values: dict[str, int] = {}
    for field in fields.split(","):
        name, sep, text = field.strip().partition("=")
        if name in (_INFLIGHT, _QUEUED):
            try:
                value = float(text)
            except ValueError:
                return None
            if not sep or not math.isfinite(value) or not 0 <= value <= _MAX_VALUE:
                return None
            values[name] = round(value)
    if _INFLIGHT not in values:
        return None
    return values[_INFLIGHT], values.get(_QUEUED, 0)
