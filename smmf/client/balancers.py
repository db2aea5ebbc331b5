"""Balancing: which of a model's available peers gets this request.

Each policy only picks; it never learns what exists (the cache does) nor
what happened (peers do).  Policies that keep state (round robin) keep it
per model.  A policy derives whatever it needs from the request itself (the
`affinity` policy its key), so the front ends know nothing of policies.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from typing import Protocol

from ..errors import UsageError
from .peer import Peer
from .request import Request

__all__ = [
    "AFFINITY_PREFIX",
    "Affinity",
    "Balancer",
    "LeastLoaded",
    "PeakEwma",
    "SmoothRoundRobin",
    "WeightedRandom",
    "affinity_key",
    "make",
    "policies",
    "register_policy",
]


class Balancer(Protocol):
    def pick(self, candidates: Sequence[Peer], request: Request) -> Peer:
        """One of `candidates` (never empty) for `request`."""
        ...


class WeightedRandom:
    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def pick(self, candidates: Sequence[Peer], request: Request) -> Peer:
        return self.rng.choices(candidates, weights=[c.record.weight for c in candidates])[0]


class SmoothRoundRobin:
    """nginx's smooth weighted round robin: exact shares, interleaved (5,1,1 gives a a b a c a a)."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}

    def pick(self, candidates: Sequence[Peer], request: Request) -> Peer:
        total = 0.0
        best: Peer | None = None
        for peer in candidates:
            weight = peer.record.weight
            total += weight
            self.current[peer.id] = self.current.get(peer.id, 0.0) + weight
            if best is None or self.current[peer.id] > self.current[best.id]:
                best = peer
        assert best is not None
        self.current[best.id] -= total
        return best


class _PowerOfTwo:
    """Pick two distinct candidates at random and keep the cheaper; `tie` settles equal costs."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def cost(self, peer: Peer) -> float:
        raise NotImplementedError

    def tie(self, a: Peer, b: Peer) -> Peer:
        return a if self.rng.random() < 0.5 else b

    def pick(self, candidates: Sequence[Peer], request: Request) -> Peer:
        if len(candidates) == 1:
            return candidates[0]
        a, b = self.rng.sample(candidates, 2)
        cost_a, cost_b = self.cost(a), self.cost(b)
        if cost_a == cost_b:
            return self.tie(a, b)
        return a if cost_a < cost_b else b


#: How much slower (mean latency) an instance must have been for `least_loaded` to break a tie against it.
CLEARLY_SLOWER = 1.5


class LeastLoaded(_PowerOfTwo):
    """Power of two choices on in-flight plus others' load (`Peer.load`), per unit of weight.

    Ties (most often two idle instances) go to the one that has been
    answering clearly faster, and are random otherwise.  A random tie-break
    sends half of the idle-versus-idle choices to a slow machine the weights
    do not know about.  In the balance benchmark's setting (one of four
    instances 3x slower) that alone puts p99 about 1.4x above an oracle
    that sees every queue; breaking ties by latency brings it back to
    within a few per cent (`bench/balance_model.py`).  Instances of similar
    speed still split ties at random, so weights keep their shares.
    """

    def cost(self, peer: Peer) -> float:
        return peer.load

    def tie(self, a: Peer, b: Peer) -> Peer:
        if a.mean_latency > CLEARLY_SLOWER * b.mean_latency:
            return b
        if b.mean_latency > CLEARLY_SLOWER * a.mean_latency:
            return a
        return super().tie(a, b)


class PeakEwma(_PowerOfTwo):
    def cost(self, peer: Peer) -> float:
        return peer.cost


#: How much of a prompt the `affinity` policy hashes when no session key is given.
AFFINITY_PREFIX = 512


def affinity_key(request: Request) -> str | None:
    """The request's session key, else the start of its prompt (chat messages, prompt or input); None if empty."""
    if request.session_key is not None:
        return request.session_key
    body = request.body
    if "messages" in body:
        text = "".join(str(m.get("content", "")) for m in body["messages"] if isinstance(m, dict))
    else:
        text = str(body.get("prompt", body.get("input", "")))
    return text[:AFFINITY_PREFIX] or None


class Affinity:
    """Rendezvous (highest-random-weight) hashing of a session key or prompt prefix, weighted.

    The same key lands on the same instance while it stays available, and
    only keys of a removed instance move.  When the preferred instance is
    loaded above `threshold` times the pool's mean load (plus one request),
    the request goes to the least loaded instead.
    """

    def __init__(self, threshold: float = 1.5, fallback: Balancer | None = None) -> None:
        self.threshold = threshold
        self.fallback = fallback or LeastLoaded()

    @staticmethod
    def _score(key: str, peer: Peer) -> float:
        digest = hashlib.blake2b(f"{key}\0{peer.id}".encode(), digest_size=8).digest()
        unit = (int.from_bytes(digest, "big") + 1) / 2**64
        return -peer.record.weight / math.log(unit)

    def pick(self, candidates: Sequence[Peer], request: Request) -> Peer:
        key = affinity_key(request)
        if key is None:
            return self.fallback.pick(candidates, request)
        preferred = max(candidates, key=lambda c: self._score(key, c))
        mean = sum(c.load for c in candidates) / len(candidates)
        if preferred.load > self.threshold * mean + 1:
            return self.fallback.pick(candidates, request)
        return preferred


_FACTORIES: dict[str, Callable[[], Balancer]] = {
    "weighted_random": WeightedRandom,
    "round_robin": SmoothRoundRobin,
    "least_loaded": LeastLoaded,
    "peak_ewma": PeakEwma,
    "affinity": Affinity,
}


def policies() -> tuple[str, ...]:
    """The policy names `make` accepts, those added with `register_policy` included."""
    return tuple(_FACTORIES)


def register_policy(name: str, factory: Callable[[], Balancer]) -> None:
    """Add a policy of your own; `factory` makes one balancer per model."""
    _FACTORIES[name] = factory


def make(policy: str) -> Balancer:
    factory = _FACTORIES.get(policy)
    if factory is None:
        raise UsageError(f"unknown policy {policy!r}; choose one of {', '.join(policies())}")
    return factory()
