"""The seam between smmf and a registry backend: the `Store` primitives and the types they trade.

A driver implements eight small primitives over a revisioned key space
(grant/refresh/revoke a lease, put/get/delete a key, list a prefix, stream
changes after a revision).  Everything else — record validation, keepalive
loops, re-registration, resync after errors — is written once in
`registry.py` and `resync.py`, so every driver behaves the same way and one
conformance suite covers them all.

Keys are relative to the driver's prefix: `instances/<model>/<id>` and
`admin/<id>` (see `keys.py`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AdminAction",
    "AdminState",
    "Compacted",
    "Delete",
    "LeaseNotFound",
    "Put",
    "RawEvent",
    "RegistryError",
    "RegistryUnavailable",
    "Snapshot",
    "Store",
    "UnsupportedRegistry",
    "WatchEvent",
]

T = TypeVar("T")


class RegistryError(Exception):
    """Base class of every error a registry raises."""


class RegistryUnavailable(RegistryError):
    """The registry could not be reached; the message names the address tried."""

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"registry {address} is unavailable: {reason}")


class UnsupportedRegistry(RegistryError, ValueError):
    """A registry URL that no driver understands."""


class Compacted(RegistryError):
    """History before the requested revision is gone; the watcher must list again."""

    def __init__(self, revision: int, compacted: int) -> None:
        self.revision = revision
        self.compacted = compacted
        super().__init__(f"revision {revision} is compacted (history starts after {compacted})")


class LeaseNotFound(RegistryError):
    """The lease named in a write no longer exists (expired or revoked)."""


class AdminAction(StrEnum):
    """Desired state that management tools write and sidecars obey."""

    OFFLINE = "offline"
    ONLINE = "online"
    DRAIN = "drain"
    RESTART = "restart"


class AdminState(BaseModel):
    """The value under `admin/<id>`.

    `requested_at` makes a repeated action a new event.  The sidecar writes the
    same state back with `acked_at` once it has acted, so a management tool
    can wait for that, and a one-shot action (`restart`) is never redone.
    """

    model_config = ConfigDict(extra="ignore")

    action: AdminAction
    requested_at: float = Field(default_factory=time.time)
    requested_by: str | None = None
    acked_at: float | None = None


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One change in the key space; `value is None` is a delete."""

    key: str
    value: bytes | None
    revision: int


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


class Store(ABC):
    """A revisioned key-value space with leases: what each backend provides.

    Implementations translate their own connection errors into
    `RegistryUnavailable` and their history-loss errors into `Compacted`;
    nothing else may escape for a reachable backend.
    """

    #: Shown in errors and logs: where this store lives.
    address: str

    @abstractmethod
    async def grant(self, ttl: float) -> int:
        """Create a lease of `ttl` seconds and return its id."""

    @abstractmethod
    async def refresh(self, lease: int) -> bool:
        """Extend a lease; False when it no longer exists."""

    @abstractmethod
    async def revoke(self, lease: int) -> None:
        """Delete a lease and every key attached to it; a missing lease is not an error."""

    @abstractmethod
    async def put(self, key: str, value: bytes, lease: int | None = None) -> int:
        """Write a key (attached to `lease` when given) and return the new revision.

        Raises `LeaseNotFound` when `lease` is gone.
        """

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """Read one key."""

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Delete one key; False when it did not exist."""

    @abstractmethod
    async def list(self, prefix: str) -> tuple[dict[str, bytes], int]:
        """All keys under `prefix` and the revision the snapshot was taken at."""

    @abstractmethod
    def stream(self, prefix: str, after: int) -> AsyncIterator[RawEvent]:
        """Changes under `prefix` with revision > `after`, in order, until an error.

        Raises `Compacted` when `after` is older than the kept history.
        """

    async def close(self) -> None:  # noqa: B027 - optional: a store holding nothing has nothing to release
        """Release connections and threads."""
