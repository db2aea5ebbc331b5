"""Each balancing policy on its own, over real `Peer` objects."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from smmf.client.balancers import (
    Affinity,
    LeastLoaded,
    PeakEwma,
    SmoothRoundRobin,
    WeightedRandom,
    affinity_key,
    make,
    policies,
    register_policy,
)
from smmf.client.peer import Peer
from smmf.client.request import Request
from smmf.errors import UsageError
from smmf.instance import Instance


def peers(*weights: float) -> list[Peer]:
    return [
        Peer(Instance(id=f"h:{i}-x", model="m", endpoint=f"http://h:{i}/v1", weight=weight))
        for i, weight in enumerate(weights)
    ]


def request(session_key: str | None = None, prompt: str = "hello") -> Request:
    return Request("m", "/completions", {"model": "m", "prompt": prompt}, session_key=session_key)


def test_smooth_round_robin_interleaves_exact_shares() -> None:
    a, b, c = peers(5, 1, 1)
    balancer = SmoothRoundRobin()
    order = [balancer.pick([a, b, c], request()).id for _ in range(7)]
    assert order == [a.id, a.id, b.id, a.id, c.id, a.id, a.id]


def test_weighted_random_follows_the_weights() -> None:
    candidates = peers(1, 3)
    balancer = WeightedRandom(random.Random(3))
    counts = Counter(balancer.pick(candidates, request()).id for _ in range(4000))
    assert abs(counts[candidates[1].id] / 4000 - 0.75) < 0.03  # sd of the share: 0.007


def test_least_loaded_takes_the_lower_in_flight_per_weight() -> None:
    light, heavy = peers(1, 4)
    light.mean_latency = heavy.mean_latency = 0.05
    for _ in range(3):
        heavy.begin()  # 3 / 4 per weight, against 1 / 1 after one on the light one
    light.begin()
    assert {LeastLoaded(random.Random(1)).pick([light, heavy], request()).id for _ in range(20)} == {heavy.id}


@pytest.mark.parametrize("balancer", [LeastLoaded, PeakEwma])
def test_the_two_choices_are_drawn_by_weight(balancer: type[LeastLoaded] | type[PeakEwma]) -> None:
    """The cheapest instance wins every pair it is in; drawn by weight it is in 81% of them, drawn uniformly 50%."""
    candidates = peers(1, 1, 2, 4)
    for peer in candidates:
        peer.mean_latency = peer.ewma = 0.05  # idle: the cost falls with weight, so the weight-4 one is cheapest
    pick = balancer(random.Random(5)).pick
    counts = Counter(pick(candidates, request()).id for _ in range(4000))
    # in a pair: 4/8 first, or second after a 1 (2 x 1/8 x 4/7) or the 2 (2/8 x 4/6): 0.810; sd of the share 0.006
    assert abs(counts[candidates[3].id] / 4000 - 0.810) < 0.03


def test_peak_ewma_avoids_the_slow_instance() -> None:
    fast, slow = peers(1, 1)
    fast.succeeded(0.01)
    slow.succeeded(0.5)
    assert {PeakEwma(random.Random(1)).pick([fast, slow], request()).id for _ in range(20)} == {fast.id}


def test_peak_ewma_counts_a_slow_answer_at_once() -> None:
    (peer,) = peers(1)
    peer.succeeded(0.01)
    peer.succeeded(1.0)
    assert peer.ewma == 1.0


#: A bound too loose to matter: the ring alone.
UNBOUNDED = 100.0


def test_affinity_keeps_a_key_on_one_instance_and_spreads_keys() -> None:
    candidates = peers(1, 1, 1)
    balancer = Affinity(epsilon=UNBOUNDED)
    assert len({balancer.pick(candidates, request("user-1")).id for _ in range(20)}) == 1
    assert len({balancer.pick(candidates, request(f"user-{i}")).id for i in range(60)}) == 3


def test_affinity_moves_only_the_keys_of_a_removed_instance() -> None:
    candidates = peers(1, 1, 1)
    balancer = Affinity(epsilon=UNBOUNDED)
    before = {i: balancer.pick(candidates, request(f"k{i}")).id for i in range(200)}
    gone = candidates[0]
    after = {i: balancer.pick(candidates[1:], request(f"k{i}")).id for i in range(200)}
    assert all(after[i] == before[i] for i in before if before[i] != gone.id)


def test_affinity_passes_a_full_instances_requests_to_the_keys_next_instance() -> None:
    candidates = peers(1, 1, 1, 1)
    balancer = Affinity(epsilon=0.25)
    *firsts, last = balancer.ranked(candidates, "hot")
    picked = Counter(balancer.pick(candidates, request("hot")).id for _ in range(400))
    # One key, all the traffic: the key's first three instances fill to the bound in turn, the last takes the rest.
    assert all(picked[last.id] < picked[peer.id] <= 1.3 * 400 / 4 for peer in firsts), picked


def test_affinity_passes_over_an_instance_far_above_the_mean_load() -> None:
    candidates = peers(1, 1, 1, 1)
    balancer = Affinity()
    first, second, *_ = balancer.ranked(candidates, "k")
    for _ in range(4):  # mean 1, most allowed 1.25 x 1 + 1: four is over
        first.begin()
    assert balancer.pick(candidates, request("k")).id == second.id


@pytest.mark.parametrize("epsilon", [0.1, 0.25, 1.0])
@pytest.mark.parametrize("weights", [(1, 1, 1, 1), (1, 1, 2, 4), (3, 1)])
def test_affinity_never_lets_a_share_pass_its_bound(epsilon: float, weights: tuple[float, ...]) -> None:
    """Skewed keys (one hot prefix): every pick is of an instance below (1 + eps) x its mean share."""
    candidates = peers(*weights)
    balancer = Affinity(epsilon=epsilon)
    rng = random.Random(1)
    picks: Counter[str] = Counter()
    for _ in range(2000):
        key = "hot" if rng.random() < 0.7 else f"k{rng.randrange(20)}"
        before = dict(balancer.recent)
        chosen = balancer.pick(candidates, request(key))
        bound = (1 + epsilon) * (sum(before.values()) + 1) * chosen.record.weight / sum(weights)
        assert before.get(chosen.id, 0.0) < bound
        picks[chosen.id] += 1
    for peer in candidates:  # and over the whole run, within the bound of the long-run mean (plus rounding)
        mean = 2000 * peer.record.weight / sum(weights)
        assert picks[peer.id] <= (1 + epsilon) * mean + 20, picks


def test_the_affinity_key_is_the_session_key_else_the_prompts_start() -> None:
    assert affinity_key(request("s")) == "s"
    assert affinity_key(request(prompt="p" * 600)) == "p" * 512
    chat = Request("m", "/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert affinity_key(chat) == "hi"
    assert affinity_key(request(prompt="")) is None


def test_policies_are_registered_by_name() -> None:
    register_policy("first", lambda: _First())
    assert "first" in policies() and isinstance(make("first"), _First)
    with pytest.raises(UsageError, match="unknown policy 'nope'"):
        make("nope")


class _First:
    def pick(self, candidates: list[Peer], request: Request) -> Peer:
        return candidates[0]
