"""What a watch yields: one `Snapshot`, then `Put` and `Delete` events, each carrying a revision.

Events are keyed by the registry key (relative to the driver's prefix), not
by the id a record claims: only the key says what a delete removes, and two
keys can never be confused however their values are written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .keys import key_id

__all__ = ["Delete", "Put", "Snapshot", "WatchEvent"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Snapshot(Generic[T]):
    """First event of every watch: the whole current state, by key."""

    items: dict[str, T] = field(default_factory=dict)
    revision: int = 0

    @property
    def values(self) -> list[T]:
        """What this event says exists now (every event has `values`, so a watcher need not ask which it got)."""
        return list(self.items.values())

    @property
    def ids(self) -> set[str]:
        return {key_id(key) for key in self.items}


@dataclass(frozen=True, slots=True)
class Put(Generic[T]):
    key: str
    value: T
    revision: int

    @property
    def id(self) -> str:
        return key_id(self.key)

    @property
    def values(self) -> list[T]:
        return [self.value]


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    revision: int

    @property
    def id(self) -> str:
        return key_id(self.key)

    @property
    def values(self) -> list[Any]:
        return []


WatchEvent = Snapshot[T] | Put[T] | Delete
