"""What `least_loaded` compares: the load others put on an instance, aged with time, at each one's latency.

The end-to-end behaviour (traffic leaving a busy or slow instance) is tested
against real sim workers in `test_client.py`; these pin down the two rules
the balance benchmark rests on, on real `Peer` objects.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from smmf.client.balancers import LeastLoaded
from smmf.client.peer import Peer
from smmf.client.request import Request
from smmf.instance import Instance, Load, State

#: A latency long enough that nothing drains while a test runs.
LONG = 600.0


def approx(load: float) -> object:
    """Equal but for what drains in the microseconds a test takes."""
    return pytest.approx(load, abs=1e-3)


REQUEST = Request("m", "/completions", {"model": "m", "prompt": "x"})


def record(load: Load | None = None, *, id: str = "h:1-a", state: State = State.UP) -> Instance:
    return Instance(id=id, model="m", endpoint="http://h:1/v1", state=state, load=load or Load(updated_at=0))


def test_published_load_counts_other_clients_not_this_one() -> None:
    peer = Peer(record())
    first, second = peer.begin(), peer.begin()
    figure = Load(inflight=2, queued=1, updated_at=time.time())  # read while our two and one other were there
    peer.update(record(figure))
    assert peer.load == approx(3)  # not 5: our two are not counted twice
    first.end(ok=True, latency=LONG)
    assert peer.load == approx(2)  # ours: 1, the other client's: 1 (as of the figure)
    peer.update(record(figure, state=State.DRAINING))  # the record rewritten for another reason
    assert peer.load == approx(2)
    second.end(ok=True, latency=LONG)
    peer.update(record(Load(inflight=1, updated_at=time.time())))
    assert peer.load == approx(1)  # the other client's, none of ours


def test_a_figure_read_before_our_requests_counts_none_of_them() -> None:
    peer = Peer(record())
    before = time.time() - 1
    tickets = [peer.begin() for _ in range(3)]
    peer.update(record(Load(inflight=2, updated_at=before)))  # two requests of another client
    assert peer.load == approx(5)
    for ticket in tickets:
        ticket.end(ok=False)
    assert peer.inflight == 0 and peer.load == 2


def test_a_figure_from_a_clock_ahead_of_ours_is_taken_as_of_now() -> None:
    peer = Peer(record())
    peer.begin()
    peer.update(record(Load(inflight=1, updated_at=time.time() + 60)))
    assert peer.load == approx(1)


def test_a_load_report_on_a_response_counts_others_and_ages_against_the_published_load() -> None:
    peer = Peer(record(Load(inflight=7, updated_at=time.time() - 5)))
    answered, other = peer.begin(), peer.begin()
    peer.report(inflight=3, queued=1)  # not counting the request it answers; our other one is among the four
    assert peer.load == approx(2 + 3)  # ours: 2 in flight here; others': 4 less our other one
    answered.end(ok=True, latency=LONG)
    assert peer.load == approx(1 + 3)
    peer.update(record(Load(inflight=2, updated_at=time.time() + 1)))  # a newer published figure wins
    assert peer.load == approx(1 + 1)
    peer.report(inflight=0, queued=0, at=time.time() + 2)
    assert peer.load == approx(1)
    other.end(ok=True)


def test_a_report_that_counts_fewer_than_ours_leaves_others_at_zero() -> None:
    peer = Peer(record())
    tickets = [peer.begin() for _ in range(3)]
    peer.report(inflight=0, queued=0)  # our others had not reached it yet
    assert peer.load == approx(3)
    for ticket in tickets:
        ticket.end(ok=True)


def picks(fast_latency: float, slow_latency: float, n: int = 400) -> Counter[str]:
    a, b = Peer(record(id="h:1-a")), Peer(record(id="h:2-b"))
    a.mean_latency, b.mean_latency = fast_latency, slow_latency
    balancer = LeastLoaded(random.Random(1))
    return Counter(balancer.pick([a, b], REQUEST).id for _ in range(n))


def test_between_idle_instances_the_faster_wins() -> None:
    assert picks(0.03, 0.09) == Counter({"h:1-a": 400})


def test_between_idle_instances_of_one_speed_the_choice_is_random() -> None:
    counts = picks(0.03, 0.03)
    assert 150 <= counts["h:1-a"] <= 250, counts  # binomial(400, 0.5): 4.5 sigma either side


def test_an_instance_not_yet_measured_is_tried_first() -> None:
    """So a new instance gets tried, and learned, at once."""
    assert picks(0.0, 0.03) == Counter({"h:1-a": 400})


def test_the_shorter_expected_wait_wins() -> None:
    a, b = Peer(record(id="h:1-a")), Peer(record(id="h:2-b"))
    a.mean_latency, b.mean_latency = 0.03, 0.05
    a.begin()  # a: two requests' time at 30 ms, 60 ms; b: one at 50 ms
    assert {LeastLoaded(random.Random(2)).pick([a, b], REQUEST).id for _ in range(50)} == {"h:2-b"}
    b.mean_latency = 0.3  # b: 300 ms
    assert {LeastLoaded(random.Random(2)).pick([a, b], REQUEST).id for _ in range(50)} == {"h:1-a"}


def test_others_load_ages_at_the_instances_pace() -> None:
    """A figure from a while ago counts only what the instance cannot have finished since, down to the usual load."""
    peer = Peer(record())
    peer.mean_latency = 0.1  # ten requests a second
    peer.report(inflight=0, queued=0, at=time.time() - 20)  # others usually put nothing here
    peer.report(inflight=4, queued=2, at=time.time() - 0.3)
    assert 2.9 <= peer.load <= 3.0  # six then, three finished since (a little more by the time it is read)
    peer.report(inflight=4, queued=2, at=time.time() - 5)
    assert peer.load == approx(peer.usual) and peer.usual < 2  # the one burst moved the usual load a fifth of the way
    peer.update(record(Load(inflight=5, updated_at=time.time() - 0.2)))
    assert 2.9 <= peer.load <= 3.0  # the published figure is newer: five, two finished since
    peer.report(inflight=1, queued=0, at=time.time() - 10)
    assert 2.9 <= peer.load <= 3.0  # a report older than the published figure does not replace it
