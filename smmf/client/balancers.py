"""Balancing: which of a model's available peers gets this request.

Each policy only picks; it never learns what exists (the cache does) nor
what happened (peers do).  Policies that keep state (round robin) keep it
per model.  A policy derives whatever it needs from the request itself (the
`affinity` policy its key), so the front ends know nothing of policies.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol

from ..errors import UsageError
from .peer import Peer
from .placement import PLACED_KEYS, SPREAD, Placement, place, ranked
from .request import Request
from .shares import RecentCounts

__all__ = [
    "AFFINITY_PREFIX",
    "BALANCE_FACTOR",
    "LEAST_PICKS",
    "LOAD_SLACK",
    "PLACE_EVERY",
    "SHARE_WINDOW",
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
    """Pick two distinct candidates at random, in proportion to weight, and keep the cheaper; `tie` settles equal costs.

    Drawn uniformly, an instance with half the fleet's weight is in only
    half of the pairs when there are four, and the other half must go to
    the small ones however full they are: in the balance benchmark's
    weights setting (1, 1, 2, 4) that put p99 at 114 ms against 79 ms drawn
    by weight, with one caller (`bench/README.md`).  Drawn by weight, each
    is offered in proportion to what it can take; with equal weights
    nothing changes.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def cost(self, peer: Peer) -> float:
        raise NotImplementedError

    def tie(self, a: Peer, b: Peer) -> Peer:
        return a if self.rng.random() < 0.5 else b

    def pair(self, candidates: Sequence[Peer]) -> tuple[Peer, Peer]:
        """Two distinct candidates, each draw in proportion to weight among those not yet drawn."""
        weights = [c.record.weight for c in candidates]
        first = self.rng.choices(range(len(candidates)), weights=weights)[0]
        weights[first] = 0  # weights are positive (`Instance.weight`), so some other remains
        second = self.rng.choices(range(len(candidates)), weights=weights)[0]
        return candidates[first], candidates[second]

    def pick(self, candidates: Sequence[Peer], request: Request) -> Peer:
        if len(candidates) == 1:
            return candidates[0]
        a, b = self.pair(candidates)
        cost_a, cost_b = self.cost(a), self.cost(b)
        if cost_a == cost_b:
            return self.tie(a, b)
        return a if cost_a < cost_b else b


class LeastLoaded(_PowerOfTwo):
    """Power of two choices on the expected wait: the load ahead of a request (`Peer.load`) at the mean latency.

    Load alone is not enough where instances differ in speed the weights do
    not know about: sent by load, half of the choices between two idle
    instances go to a slow one.  In the balance benchmark's setting (one of
    four instances 3x slower) that put p99 above an oracle that sees every
    queue; weighing load by latency brings it below (`bench/README.md`).
    With several callers, others' load is a figure some requests old, so it
    is aged toward the usual load at the instance's pace (`Peer.aged`).  An
    instance not yet measured costs nothing, so it is tried at once; equal
    costs (two of them) go either way.
    """

    def cost(self, peer: Peer) -> float:
        return peer.wait


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


#: How far above the mean (per unit of weight) `affinity` lets an instance's share, keys and load go.
BALANCE_FACTOR = 0.25
#: How many of its recent picks `affinity` counts shares over (a decaying count).
SHARE_WINDOW = 300
#: Requests in flight beyond (1 + BALANCE_FACTOR) times the mean that `affinity` lets an instance have.
LOAD_SLACK = 2
#: Picks between two placements of the keys (one is made at once when the candidates change).
PLACE_EVERY = 100
#: Shares are taken over at least this many picks: a caller's first picks make no key popular and no instance full.
LEAST_PICKS = 100


class Affinity:
    """Consistent hashing with bounded loads over a session key or prompt prefix, so caches stay warm.

    Every caller places the keys it sees the same way (`placement.py`:
    weighted rendezvous hashing, each instance holding at most (1 +
    `epsilon`) times the mean number of keys and share of requests, a
    popular key on as many instances as its share needs), so requests
    sharing a prompt prefix meet where it is cached, with no state shared
    between callers.  A request goes to the key's instance with the least
    share of this caller's recent picks that can take it within the bound:
    below (1 + `epsilon`) times the mean share, this request counted, and
    at most `load_slack` requests above (1 + `epsilon`) times the mean load
    (`Peer.load`), so a stuck or slow one is not fed its share regardless.
    When none of the key's instances can, the request goes to the key's
    next instance in rank, not to a random one, so an overflowing prefix
    warms one more cache rather than all of them.

    What is bounded is this caller's share of recent requests: its last
    `window` picks, in a decaying count.  In-flight counts would bound
    nothing at the loads where caching matters most: requests served from
    cache are short, most instances are idle at any instant, and an idle
    instance always has room.  Every caller bounds its own shares, so the
    shares of all callers together are bounded too.  Counted over 100
    picks, an instance due a quarter of them is above a 1.25x bound by
    chance about 7% of the time (a binomial count: sd 4.3 against a mean of
    25), and each time a request goes where its prefix is not; over 300
    picks, about 0.6%.  The load's slack is two
    requests, not one: one instance with two requests in flight while the
    others are idle is ordinary at these loads, and in the prefix
    benchmark's model (`bench/prefix_model.py`) a slack of one passed over
    the key's instances often enough to miss the cache on 1% of requests.
    Some instance always has room for the share (if every share were at its
    bound, the shares would sum to more than their total); when none also
    has room for the load, `fallback` picks.  Requests with no key go to
    `fallback` too.
    """

    def __init__(
        self,
        epsilon: float = BALANCE_FACTOR,
        window: int = SHARE_WINDOW,
        fallback: Balancer | None = None,
        spread: float = SPREAD,
        load_slack: float = LOAD_SLACK,
    ) -> None:
        self.epsilon = epsilon
        self.spread = spread
        self.load_slack = load_slack
        self.keep = 1 - 1 / window
        self.fallback = fallback or LeastLoaded()
        #: This caller's recent picks of each instance, and of each key.
        self.recent = RecentCounts(self.keep)
        self.keys = RecentCounts(self.keep, least=LEAST_PICKS)
        self.placement: Placement | None = None
        self._since_placed = 0

    def within_bound(self, candidates: Sequence[Peer]) -> list[Peer]:
        """The candidates that can take one more request within (1 + epsilon) times the mean share and load."""
        weight = sum(c.record.weight for c in candidates)
        shares = [self.recent.count(c.id) for c in candidates]
        loads = [c.load for c in candidates]  # each a clock read and some arithmetic: once per candidate
        share_per_weight = (1 + self.epsilon) * max(LEAST_PICKS, sum(shares) + 1) / weight
        work = sum(load * c.record.weight for c, load in zip(candidates, loads, strict=True))  # in requests
        most_load = (1 + self.epsilon) * work / weight + self.load_slack
        return [
            c
            for c, share, load in zip(candidates, shares, loads, strict=True)
            if share < share_per_weight * c.record.weight and load <= most_load
        ]

    def placed(self, candidates: Sequence[Peer]) -> Placement:
        """The current placement, made again every `PLACE_EVERY` picks and whenever the candidates change.

        Keys picked only once are placed too: leaving out keys below some
        count made the rare ones near it enter and leave the placement, and
        move each time.  At four callers the prefix benchmark missed 1.64% of
        requests with such keys left out and 0.46% with them placed (a run
        each, same salts); the model, 0.38% against 0.31% over 20 salts.
        """
        self._since_placed += 1
        placement = self.placement
        if (
            placement is None
            or self._since_placed >= PLACE_EVERY
            or len(placement.members) != len(candidates)
            or any(c.id not in placement.members for c in candidates)
        ):
            self.keys.forget_gone()
            placement = self.placement = place(self.keys.hottest(PLACED_KEYS), candidates, self.epsilon, self.spread)
            self._since_placed = 0
        return placement

    def pick(self, candidates: Sequence[Peer], request: Request) -> Peer:
        key = affinity_key(request)
        if key is None:
            return self.fallback.pick(candidates, request)
        self.keys.add(key)
        places = self.placed(candidates).of(key, candidates)
        room = {c.id for c in self.within_bound(candidates)}
        inside = [c for c in places if c.id in room]
        if inside:
            chosen = min(inside, key=lambda c: self.recent.count(c.id) / c.record.weight)
        else:
            overflow = next((c for c in ranked(candidates, key) if c.id in room), None)
            chosen = overflow or self.fallback.pick(candidates, request)
        self.recent.add(chosen.id)
        return chosen


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
