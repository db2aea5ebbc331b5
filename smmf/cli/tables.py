"""Plain-text tables for the terminal."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..instance import Instance

__all__ = ["columns", "instance_table"]


def columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in [headers, *rows]
    ]
    return "\n".join(lines)


def instance_table(records: list[Instance]) -> str:
    headers = ("ID", "MODEL", "KIND", "ENDPOINT", "BACKEND", "STATE", "WEIGHT", "INFLIGHT", "QUEUED", "LOAD AGE")
    now = time.time()
    rows = [
        (
            r.id,
            r.model,
            r.kind.value,
            r.endpoint,
            r.backend,
            r.state.value,
            f"{r.weight:g}",
            str(r.load.inflight),
            str(r.load.queued),
            f"{max(0.0, now - r.load.updated_at):.0f}s",
        )
        for r in sorted(records, key=lambda r: (r.model, r.id))
    ]
    return columns(headers, rows)
