"""What a watch yields: one `Snapshot`, then `Put` and `Delete` events, each carrying a revision."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["Delete", "Put", "Snapshot", "WatchEvent"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Snapshot(Generic[T]):
    """First event of every watch: the whole current state, by id."""

    items: dict[str, T] = field(default_factory=dict)
    revision: int = 0

    @property
    def values(self) -> list[T]:
        """What this event says exists now (every event has `values`, so a watcher need not ask which it got)."""
        return list(self.items.values())


@dataclass(frozen=True, slots=True)
class Put(Generic[T]):
    id: str
    value: T
    revision: int

    @property
    def values(self) -> list[T]:
        return [self.value]


@dataclass(frozen=True, slots=True)
class Delete:
    id: str
    revision: int

    @property
    def values(self) -> list[Any]:
        return []


WatchEvent = Snapshot[T] | Put[T] | Delete
