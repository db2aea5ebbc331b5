"""Where the `affinity` policy keeps each key: a placement every caller works out alone, and all alike.

Prefix caching pays only where a prefix is found, so what matters is how
many prefixes each instance must hold and how often each is asked for.
Rendezvous hashing alone spreads keys by chance: with 16 prefixes over 4
instances, some instance often gets 8 or more, and a cache sized for a
quarter of them and some spare thrashes.  Consistent hashing with bounded
loads (Mirrokni, Thorup and Zadimoghaddam) fixes that by capping each
instance's keys at (1 + epsilon) times the mean; but assigned as keys
arrive, the result depends on their order, and independent callers see
different orders.  Here the placement is a function of the key set alone:
the (key, instance) pairs are taken in order of their rendezvous score,
each instance taking keys while it is below its caps.  Callers that see
the same popular keys arrive at the same placement, with nothing shared.

Two more caps make the placement balance load as well as cache space: a
key with more than `spread` of a mean instance's share of the requests
is placed on as many instances as that takes, and each instance takes keys
only while their expected share (each key's share over its instances)
stays within (1 + epsilon) times the mean.  Only the `PLACED_KEYS` most
popular keys are placed this way; any other key goes to its first instance
in rank, as do keys first seen since the last placement: among many rare
keys, chance spreads them evenly enough.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .peer import Peer

__all__ = ["PLACED_KEYS", "SPREAD", "Placement", "place", "ranked", "rendezvous"]

#: The share of a mean instance's requests above which a key is placed on more than one instance.
SPREAD = 0.5
#: How many of the most popular keys a placement places; any other key goes to its first instance in rank.
PLACED_KEYS = 256


@functools.lru_cache(maxsize=4096)
def _position(key: str, instance_id: str) -> float:
    """The rendezvous score of `key` on an instance of weight 1; kept, since each placement scores its keys again."""
    digest = hashlib.blake2b(f"{key}\0{instance_id}".encode(), digest_size=8).digest()
    unit = (int.from_bytes(digest, "big") + 1) / 2**64
    return -1 / math.log(unit)


def rendezvous(key: str, peer: Peer) -> float:
    """`peer`'s weighted rendezvous (highest-random-weight) score for `key`: the same in every caller."""
    return peer.record.weight * _position(key, peer.id)


def ranked(candidates: Sequence[Peer], key: str) -> list[Peer]:
    """The candidates in the order `key` tries them."""
    return sorted(candidates, key=lambda c: rendezvous(key, c), reverse=True)


@dataclass
class Placement:
    """Each placed key's instances, best first.

    A key not placed (new since the placement was made, or not among the
    most popular) goes to its first instance in rank: between placements
    no cap is applied, since caps worked out from fewer keys than the
    caller now knows would push keys off their first instance only to
    bring them back at the next placement, a cache miss each way.
    """

    members: frozenset[str]
    places: dict[str, list[Peer]] = field(default_factory=dict)

    def of(self, key: str, candidates: Sequence[Peer]) -> list[Peer]:
        places = self.places.get(key)
        if places is None:
            places = self.places[key] = [max(candidates, key=lambda c: rendezvous(key, c))]
        return places


def place(shares: Mapping[str, float], candidates: Sequence[Peer], epsilon: float, spread: float = SPREAD) -> Placement:
    """Place `shares`' keys on `candidates`: the same placement for the same keys, whatever order they came in."""
    count = len(candidates)
    weight = sum(c.record.weight for c in candidates)
    wanted = {key: min(count, max(1, math.ceil(share * count / spread))) for key, share in shares.items()}
    parts = {c.id: c.record.weight / weight for c in candidates}
    most_keys = {id_: math.ceil((1 + epsilon) * sum(wanted.values()) * part) for id_, part in parts.items()}
    most_share = {id_: (1 + epsilon) * sum(shares.values()) * part for id_, part in parts.items()}
    held: Counter[str] = Counter()
    carried: dict[str, float] = dict.fromkeys(parts, 0.0)
    places: dict[str, list[Peer]] = {key: [] for key in wanted}
    pairs = sorted(((rendezvous(key, c), key, c) for key in wanted for c in candidates), key=lambda p: (-p[0], p[1]))
    for _, key, peer in pairs:
        part = shares[key] / wanted[key]
        fits = held[peer.id] < most_keys[peer.id] and carried[peer.id] + part <= most_share[peer.id]
        if fits and len(places[key]) < wanted[key]:
            places[key].append(peer)
            held[peer.id] += 1
            carried[peer.id] += part
    short = {key for key, chosen in places.items() if len(chosen) < wanted[key]}
    for _, key, peer in pairs if short else ():  # what the share caps left short: the key's best with key room
        chosen = places[key]
        room = held[peer.id] < most_keys[peer.id] or not chosen
        if key in short and room and len(chosen) < wanted[key] and peer not in chosen:
            chosen.append(peer)
            held[peer.id] += 1
    return Placement(frozenset(parts), places)
