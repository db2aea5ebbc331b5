"""Plain-text tables for the terminal."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..instance import Instance

__all__ = ["columns", "instance_table"]

INSTANCE_HEADERS = (
    "ID", "MODEL", "KIND", "ENDPOINT", "BACKEND", "STATE", "WEIGHT", "INFLIGHT", "QUEUED", "KV", "HITS",
    "SEEN", "LOAD AGE",
)  # fmt: skip


def columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in [headers, *rows]
    ]
    return "\n".join(lines)


def _age(when: float | None, now: float) -> str:
    return "-" if when is None else f"{max(0.0, now - when):.0f}s"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _row(r: Instance, now: float) -> tuple[str, ...]:
    """SEEN is how long ago the record's holder last confirmed it alive (- for a persistent record); load
    columns are - where nothing reports load, KV (cache usage) and HITS (the prefix cache's hit rate)
    where the server does not publish them."""
    load = r.load
    reported = load.reported
    return (
        r.id,
        r.model,
        r.kind.value,
        r.endpoint,
        r.backend,
        r.state.value,
        f"{r.weight:g}",
        str(load.inflight) if reported else "-",
        str(load.queued) if reported else "-",
        _share(load.kv_cache_usage),
        _share(load.prefix_cache_hit_rate),
        _age(r.alive_at, now),
        _age(load.updated_at, now) if reported else "-",
    )


def instance_table(records: list[Instance]) -> str:
    now = time.time()
    return columns(INSTANCE_HEADERS, [_row(r, now) for r in sorted(records, key=lambda r: (r.model, r.id))])
