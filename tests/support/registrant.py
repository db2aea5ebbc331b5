"""A separate OS process that registers one record and keeps it alive until killed.

Usage: python -m tests.support.registrant REGISTRY_URL MODEL ID TTL — prints "registered" once the record is written.
"""

from __future__ import annotations

import asyncio
import sys

from smmf.instance import Instance
from smmf.registry import open_registry


async def main(url: str, model: str, instance_id: str, ttl: float) -> None:
    async with open_registry(url) as registry:
        record = Instance(id=instance_id, model=model, endpoint="http://127.0.0.1:9/v1", backend="sim")
        lease = await registry.register(record, ttl)
        print("registered", flush=True)
        await lease.keepalive()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
