"""Registry drivers: one protocol (`Registry`) over pluggable backends (`Store`).

async with open_registry("etcd://127.0.0.1:2379/smmf") as registry:
    lease = await registry.register(record, ttl=10)
    keepalive = asyncio.create_task(lease.keepalive())
    async for event in registry.watch():
        ...
"""

from .base import (
    AdminAction,
    AdminState,
    Compacted,
    Delete,
    LeaseNotFound,
    Put,
    RawEvent,
    RegistryError,
    RegistryUnavailable,
    Snapshot,
    Store,
    UnsupportedRegistry,
    WatchEvent,
)
from .registry import Lease, Listing, Registry
from .urls import DRIVERS, ENV_VAR, default_url, open_registry

__all__ = [
    "DRIVERS",
    "ENV_VAR",
    "AdminAction",
    "AdminState",
    "Compacted",
    "Delete",
    "Lease",
    "LeaseNotFound",
    "Listing",
    "Put",
    "RawEvent",
    "Registry",
    "RegistryError",
    "RegistryUnavailable",
    "Snapshot",
    "Store",
    "UnsupportedRegistry",
    "WatchEvent",
    "default_url",
    "open_registry",
]
