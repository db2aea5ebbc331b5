"""How a peer ages the load others put on an instance: toward the usual load, at the instance's pace."""

from __future__ import annotations

import time

import pytest

from smmf.client.peer import Peer
from smmf.instance import Instance, Load


def peer(latency: float = 0.01) -> Peer:
    """A peer whose record published nothing yet (a load of long ago), with `latency` as its mean."""
    p = Peer(Instance(id="h:1-x", model="m", endpoint="http://h:1/v1", load=Load(updated_at=0)))
    p.succeeded(latency)
    return p


def steady(others: int) -> tuple[Peer, float]:
    """A peer at 10 ms a request that heard others keep `others` requests there for ten seconds, and its now."""
    p = peer(latency=0.01)
    now = time.time()
    for tenth in range(100, 0, -1):
        p.report(inflight=others, queued=0, at=now - tenth / 10)
    return p, now


def test_a_fresh_report_counts_others_load_less_this_clients_own() -> None:
    p = peer()
    p.count(+1)
    p.count(+1)  # two of ours in flight, one of them the request being answered
    p.report(inflight=5, queued=1)
    assert p.load == pytest.approx(2 + 5 + 1 - 1, abs=0.1)


def test_a_burst_above_the_usual_load_ages_down_at_the_instances_pace() -> None:
    p, now = steady(0)
    p.report(inflight=8, queued=0, at=now - 0.05)  # five mean latencies ago
    assert p.load == pytest.approx(3, abs=0.5)
    p.report(inflight=8, queued=0, at=now - 1.0)
    assert p.load < 0.5


def test_a_figure_below_the_usual_load_rises_to_it_at_the_instances_pace() -> None:
    """Others keep sending to an instance caught empty: sixteen callers that heard it was empty all send there."""
    p, now = steady(4)
    p.report(inflight=0, queued=0, at=now - 0.02)  # two mean latencies ago
    assert p.load == pytest.approx(2, abs=0.5)
    p.report(inflight=0, queued=0, at=now - 1.0)
    assert p.load == pytest.approx(p.usual) and p.usual > 3.5


def test_one_burst_after_a_silence_moves_the_usual_load_a_fifth_of_the_way_at_most() -> None:
    p = peer()
    now = time.time()
    p.report(inflight=0, queued=0, at=now - 60)
    p.report(inflight=10, queued=0, at=now)
    assert p.usual == pytest.approx(2)


def test_load_that_stays_is_not_drained_away_by_a_pace_learnt_from_short_requests() -> None:
    p = peer(latency=0.005)
    now = time.time()
    for age in (3.0, 2.0, 1.0):
        p.report(inflight=6, queued=0, at=now - age)
    assert p.load == pytest.approx(6)


def test_a_report_older_than_what_the_usual_load_already_holds_does_not_change_it() -> None:
    p = peer()
    now = time.time()
    p.report(inflight=4, queued=0, at=now)
    p.report(inflight=0, queued=0, at=now - 5)
    assert p.usual == pytest.approx(4)
