"""`RecentCounts`: decayed counts of a caller's picks, and the shares `affinity` places keys by."""

from __future__ import annotations

from smmf.client.shares import RecentCounts

WINDOW_KEEP = 1 - 1 / 300


def test_a_name_that_stopped_coming_leaves_the_shares_before_its_count_fades() -> None:
    counts = RecentCounts(WINDOW_KEEP, least=100)
    for i in range(600):
        counts.add("old" if i % 2 else "steady")
    for _ in range(40):
        counts.add("steady")
    assert counts.count("old") > 100, "its decayed count is still large"
    assert counts.forget_gone()
    shares = counts.hottest(10)
    assert "old" not in shares, shares
    assert shares["steady"] > 0.99, "the gone name's picks no longer dilute the others' shares"


def test_one_quiet_name_among_many_is_not_forgotten() -> None:
    """A rare name's quiet spell: gone by its own gaps, but too small a share to be a change of names."""
    counts = RecentCounts(WINDOW_KEEP, least=100)
    for i in range(600):
        counts.add("rare" if i % 20 == 0 else "common")
    for _ in range(200):
        counts.add("common")
    assert not counts.forget_gone()
    assert "rare" in counts.hottest(10)
