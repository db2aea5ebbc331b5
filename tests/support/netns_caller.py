"""The caller host's process in the multi-host tests: steady non-streaming requests through `ModelClient`.

    python -m tests.support.netns_caller REGISTRY_URL MODEL OUT.jsonl [RATE]

Each finished request is one JSON line in OUT.jsonl, flushed at once:
`{"t": started (wall clock), "instance": id}` or `{"t", "error": message}`.
It runs until SIGTERM.  Timeouts are short (1 s to connect, 5 s in all) so
a request to a host whose link is cut fails over instead of waiting.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

from smmf.client import APIError, ModelClient


async def main(url: str, model: str, out: str, rate: float) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks: set[asyncio.Task[None]] = set()
    with open(out, "a", buffering=1) as log:
        async with ModelClient(url, timeout=5.0, connect_timeout=1.0) as client:

            async def one() -> None:
                started = time.time()
                try:
                    reply = await client.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2
                    )
                    line = {"t": started, "instance": reply.instance_id}
                except APIError as exc:
                    line = {"t": started, "error": exc.message}
                log.write(json.dumps(line) + "\n")

            while not stop.is_set():
                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                await asyncio.sleep(1 / rate)
            await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) > 4 else 20.0))
