"""`RecentCounts`: how often each name (an instance id, a key) came up among a caller's recent picks.

The `affinity` policy bounds instances' shares and spreads popular keys by
the same measure: a count per name, decayed by `keep` at every pick, so
that it covers about `1 / (1 - keep)` picks.  Counts decay lazily, when
read, so counting a pick costs the same however many names are known.
"""

from __future__ import annotations

import heapq

__all__ = ["RecentCounts"]

#: A decayed count below which a name is forgotten (about 4.6 windows of picks without it).
FORGOTTEN = 0.01
#: A name not picked for this many of its usual gaps between picks is taken to have stopped coming.
GONE_GAPS = 4.0
#: The share of the picks that names which stopped coming must have had together for `forget_gone` to forget them.
GONE_SHARE = 0.25
#: Nor is any name taken to have stopped coming before this share of a window of picks without it.
GONE_LEAST = 0.1


class RecentCounts:
    """Decayed counts per name; shares are taken over at least `least` picks.

    The floor keeps a caller's first few picks from looking like a pattern:
    its first key would otherwise have a share of 1 and be spread over every
    instance.  Names long unpicked are forgotten once a window of picks.
    """

    def __init__(self, keep: float, least: float = 1.0) -> None:
        self.keep = keep
        self.least = least
        #: All picks, decayed alike: what the counts of every name ever counted add up to.
        self.picks = 0.0
        self._tick = 0
        self._forget_every = max(1, round(1 / (1 - keep)))
        #: When `forget_gone` last found the names changed wholesale: for a window after, it forgets stragglers too.
        self._changed_at = -self._forget_every
        self._counts: dict[str, tuple[float, int]] = {}

    def count(self, name: str) -> float:
        value, at = self._counts.get(name, (0.0, self._tick))
        return value * self.keep ** (self._tick - at)

    def add(self, name: str) -> None:
        """Count a pick of `name`."""
        self._tick += 1
        self.picks = self.picks * self.keep + 1
        self._counts[name] = (self.count(name) + 1, self._tick)
        if self._tick % self._forget_every == 0:
            for gone in [name for name in self._counts if self.count(name) < FORGOTTEN]:
                del self._counts[gone]

    def forget_gone(self) -> bool:
        """Forget every name that stopped coming, if together they had `GONE_SHARE` of the picks; say if it did.

        When the names change wholesale (new system prompts; each round
        of the prefix benchmark), the old names' counts take windows of
        picks to fade, and `affinity` placing them meanwhile gave their
        room to no one and made the new keys' shares look small, so the
        placement's caps hardly bound.  A name not picked for `GONE_GAPS`
        of its usual gaps, and for at least `GONE_LEAST` of a window, is
        taken to have stopped coming.  For a window of picks after such a
        change, the old names are forgotten as they are found gone,
        whatever their share: a rare one takes longer to look gone.
        Otherwise gone names are left to fade: a quiet spell of a key that
        is still coming would drop it from the placement, and every key
        the caps had moved for it would move back.  Without the floor of a
        tenth of a window, the hottest key's quiet spells (four of its
        gaps are 13 picks at 30% of them) were taken for a change of names
        in 7 of 60 one-caller layouts of the prefix model.

        In the prefix model with balancers carried from one layout to the
        next (`bench.prefix_model --salts 60 --carried`), misses at K = 4
        fell from 0.93% to 0.52% of requests, and at K = 1 from 0.33% to
        0.10%; on fresh balancers they are unchanged.
        """
        gone = {
            name: value * self.keep ** (self._tick - at)
            for name, (value, at) in self._counts.items()
            # `value * (1 - keep)` is the name's rate per pick when it was last picked.
            if (self._tick - at) * value * (1 - self.keep) > GONE_GAPS
            and self._tick - at > GONE_LEAST * self._forget_every
        }
        if not gone:
            return False
        gone_picks = sum(gone.values())
        if gone_picks >= GONE_SHARE * self.picks:
            self._changed_at = self._tick
        elif self._tick - self._changed_at >= self._forget_every:
            return False
        for name in gone:
            del self._counts[name]
        self.picks -= gone_picks
        return True

    def hottest(self, most: int) -> dict[str, float]:
        """The `most` names with the largest counts, and their shares of the picks."""
        counts = {name: self.count(name) for name in self._counts}
        total = max(self.least, self.picks)
        return {name: counts[name] / total for name in heapq.nlargest(most, counts, key=counts.__getitem__)}
