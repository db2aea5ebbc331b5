"""Jittered exponential backoff, shared by every reconnecting loop.

Jitter keeps a fleet of sidecars and clients from reconnecting in lockstep
after a registry restart; the cap bounds how late a recovered registry is
noticed.
"""

from __future__ import annotations

import asyncio
import random


class Backoff:
    def __init__(self, base: float = 0.1, cap: float = 2.0) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        """Half to all of base*2^n, never above the cap ("equal jitter")."""
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    async def sleep(self) -> None:
        await asyncio.sleep(self.next_delay())

    def reset(self) -> None:
        self.attempt = 0
