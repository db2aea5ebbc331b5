"""The seam between smmf and a registry backend: the `Store` primitives and the raw change they report.

A driver implements nine small primitives over a revisioned key space
(grant/refresh/revoke a lease, put/create/get/delete a key, list a prefix,
stream changes after a revision).  Everything else — record validation, keepalive
loops, re-registration, resync after errors — is written once above it
(`lease.py`, `watch.py`, `registry.py`), so every driver behaves the same
way and one conformance suite covers them all.

Keys are relative to the driver's prefix: `instances/<model>/<id>` and
`admin/<id>` (see `keys.py`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass

__all__ = ["RawEvent", "Store"]


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One change in the key space; `value is None` is a delete."""

    key: str
    value: bytes | None
    revision: int


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
    async def create(self, key: str, value: bytes, lease: int | None = None) -> int:
        """Write a key that must not exist yet, atomically; the new revision.

        Raises `AlreadyRegistered` when the key exists, `LeaseNotFound` when `lease` is gone.
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
    def stream(self, prefix: str, after: int) -> AsyncGenerator[RawEvent, None]:
        """Changes under `prefix` with revision > `after`, in order, until an error.

        Raises `Compacted` when `after` is older than the kept history.
        """

    async def close(self) -> None:  # noqa: B027 - optional: a store holding nothing has nothing to release
        """Release connections and threads."""
