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

    def hottest(self, most: int) -> dict[str, float]:
        """The `most` names with the largest counts, and their shares of the picks."""
        counts = {name: self.count(name) for name in self._counts}
        total = max(self.least, self.picks)
        return {name: counts[name] / total for name in heapq.nlargest(most, counts, key=counts.__getitem__)}
