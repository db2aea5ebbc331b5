"""One list-then-watch loop that every driver's watch goes through.

The loop lists a prefix at revision R, streams changes after R and, when the
stream breaks for any reason (connection lost, history compacted, backend
restarted), lists again and emits only the difference from what the consumer
already has.  The consumer therefore sees one snapshot and then an unbroken
sequence of puts and deletes, never an error and never a second snapshot:
resync is not its problem.  The cache is never emptied because the registry
went away; only a successful list can delete anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import TypeVar

from ..backoff import Backoff
from ..errors import Compacted, RegistryDenied, RegistryUnavailable
from ..outage import Outage
from .events import Delete, Put, Snapshot, WatchEvent
from .store import Store

__all__ = ["Connection", "Decoder", "difference", "watch_prefix"]

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Turns a stored value into a typed item, or None (already logged) when it is invalid.
Decoder = Callable[[str, bytes], T | None]


@dataclass(slots=True)
class Connection:
    """What a watch last learned of its registry: reached or not, why not, and since when (wall clock).

    For those who show it (a dashboard, `/health`): the watch itself needs
    none of it, since it serves the last-known state either way.
    """

    connected: bool = False
    error: str | None = None
    since: float = 0.0

    def reached(self) -> None:
        if not self.connected:
            self.connected, self.error, self.since = True, None, time.time()

    def lost(self, reason: str) -> None:
        if self.connected or self.error is None:
            self.since = time.time()
        self.connected, self.error = False, reason


def _decode_all(raw: dict[str, bytes], decode: Decoder[T]) -> dict[str, T]:
    return {key: item for key, value in raw.items() if (item := decode(key, value)) is not None}


def difference(known: dict[str, T], current: dict[str, T], revision: int) -> list[WatchEvent[T]]:
    """The events that take a consumer holding `known` to `current` (both keyed by full key)."""
    events: list[WatchEvent[T]] = [Delete(key, revision) for key in known.keys() - current.keys()]
    events += [Put(key, item, revision) for key, item in current.items() if known.get(key) != item]
    return events


async def watch_prefix(
    store: Store,
    prefix: str,
    decode: Decoder[T],
    *,
    backoff: Backoff | None = None,
    connection: Connection | None = None,
) -> AsyncGenerator[WatchEvent[T], None]:
    """Snapshot, then changes, of every key under `prefix`, forever; `connection` is kept up to date."""
    backoff = backoff or Backoff(base=0.1, cap=2.0)
    connection = connection or Connection()
    known: dict[str, T] | None = None
    outage = Outage(log, f"watch {store.address} {prefix}*", "serving the last-known state and retrying")
    while True:
        try:
            raw, revision = await store.list(prefix)
        except (RegistryUnavailable, RegistryDenied) as exc:
            outage.failed(exc.reason)
            connection.lost(exc.reason)
            await backoff.sleep()
            continue
        outage.recovered(f"resynced at revision {revision}")
        connection.reached()
        backoff.reset()
        current = _decode_all(raw, decode)
        if known is None:
            yield Snapshot(current, revision)
        else:
            for event in difference(known, current, revision):
                yield event
        known = current

        try:
            async with aclosing(store.stream(prefix, revision)) as changes:
                async for change in changes:
                    item = None if change.value is None else decode(change.key, change.value)
                    if item is None:
                        if known.pop(change.key, None) is not None:
                            yield Delete(change.key, change.revision)
                    else:
                        known[change.key] = item
                        yield Put(change.key, item, change.revision)
            log.info("watch %s %s*: stream ended; listing again", store.address, prefix)
        except Compacted as exc:
            log.info("watch %s %s*: %s; listing again", store.address, prefix, exc)
        except (RegistryUnavailable, RegistryDenied) as exc:
            outage.failed(f"stream lost ({exc.reason})")
            connection.lost(exc.reason)
            await backoff.sleep()
        except Exception:
            log.exception("watch %s %s*: unexpected stream error; listing again", store.address, prefix)
            await backoff.sleep()
