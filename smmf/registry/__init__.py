"""The registry: one small protocol (`Registry`) over pluggable backends (`Store` drivers).

    async with open_registry("etcd://127.0.0.1:2379/smmf") as registry:
        lease = await registry.register(record, ttl=10)
        keepalive = asyncio.create_task(lease.keepalive())
        async for event in registry.watch():
            ...

`registry.py` is the protocol, `lease.py` keeps one record alive, `watch.py`
is the one list-then-watch loop every watch goes through, `store.py` is the
seam each backend in `drivers/` implements, and `urls.py` picks the driver a
URL names.
"""

from ..admin import AdminAction, AdminState
from ..errors import Compacted, LeaseNotFound, RegistryError, RegistryUnavailable, UnsupportedRegistry
from .events import Delete, Put, Snapshot, WatchEvent
from .lease import Lease
from .registry import Listing, Registry
from .store import RawEvent, Store
from .urls import DRIVERS, ENV_VAR, default_url, open_registry
from .watch import Connection

__all__ = [
    "DRIVERS",
    "ENV_VAR",
    "AdminAction",
    "AdminState",
    "Compacted",
    "Connection",
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
