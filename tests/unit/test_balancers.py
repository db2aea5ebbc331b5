"""Each balancing policy on its own, over real `Peer` objects."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from smmf.client.balancers import (
    LEAST_PICKS,
    PLACED_KEYS,
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
from smmf.client.placement import place, ranked
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


#: A bound too loose to matter, and no key spread: the ring alone.
UNBOUNDED = {"epsilon": 100.0, "spread": math.inf}


def test_affinity_keeps_each_key_on_one_instance_and_spreads_keys() -> None:
    candidates = peers(1, 1, 1)
    balancer = Affinity()
    picked: dict[str, set[str]] = {}
    for _ in range(10):
        for i in range(60):
            picked.setdefault(f"user-{i}", set()).add(balancer.pick(candidates, request(f"user-{i}")).id)
    assert all(len(ids) == 1 for ids in picked.values()), picked
    assert len(set().union(*picked.values())) == 3


def test_affinity_moves_only_the_keys_of_a_removed_instance() -> None:
    candidates = peers(1, 1, 1)
    balancer = Affinity(**UNBOUNDED)
    before = {i: balancer.pick(candidates, request(f"k{i}")).id for i in range(200)}
    gone = candidates[0]
    after = {i: balancer.pick(candidates[1:], request(f"k{i}")).id for i in range(200)}
    assert all(after[i] == before[i] for i in before if before[i] != gone.id)


def test_a_bounded_placement_moves_few_other_keys_when_an_instance_leaves() -> None:
    candidates = peers(1, 1, 1, 1, 1)
    shares = {f"k{i}": 1 / 200 for i in range(200)}
    before = place(shares, candidates, epsilon=0.25).places
    after = place(shares, candidates[1:], epsilon=0.25).places
    stayed = [key for key, where in before.items() if candidates[0] not in where]
    moved = [key for key in stayed if after[key] != before[key]]
    assert len(moved) <= 0.05 * len(stayed), (len(moved), len(stayed))


def test_a_placement_bounds_the_keys_each_instance_holds() -> None:
    """40 keys of one share over 4 instances: at most ceil(1.25 x 10) = 13 each, where the ring alone gives one more."""
    candidates = peers(1, 1, 1, 1)

    def keys(prefix: int) -> list[str]:
        return [f"p{prefix}k{i}" for i in range(40)]

    # a key set whose ring puts more than 13 keys on one instance, so the bound has work to do
    prefix = next(p for p in range(200) if max(Counter(ranked(candidates, k)[0].id for k in keys(p)).values()) > 13)
    placement = place(dict.fromkeys(keys(prefix), 1 / 40), candidates, epsilon=0.25)
    assert all(len(where) == 1 for where in placement.places.values())
    assert max(Counter(where[0].id for where in placement.places.values()).values()) <= 13


def test_a_placement_is_the_same_whatever_order_the_keys_came_in() -> None:
    candidates = peers(1, 1, 2, 4)
    rng = random.Random(2)
    shares = {f"k{i}": rng.random() / 30 for i in range(30)} | {"hot": 0.3}
    shuffled = list(shares.items())
    rng.shuffle(shuffled)
    first, second = place(shares, candidates, 0.25), place(dict(shuffled), candidates, 0.25)
    assert {k: [c.id for c in v] for k, v in first.places.items()} == {
        k: [c.id for c in v] for k, v in second.places.items()
    }


def test_two_callers_place_the_keys_they_both_see_alike() -> None:
    """Each its own balancer and its own random draws of one popularity: the placements agree."""
    candidates = peers(1, 1, 1, 1)
    keys = [f"tenant{i}" for i in range(16)]
    weights = [1 / (rank + 1) for rank in range(16)]
    placements = []
    for seed in (1, 2):
        balancer, rng = Affinity(), random.Random(seed)
        for _ in range(1000):
            balancer.pick(candidates, request(rng.choices(keys, weights)[0]))
        placements.append({k: {c.id for c in balancer.placed(candidates).of(k, candidates)} for k in keys})
    agree = [k for k in keys if placements[0][k] == placements[1][k]]
    assert len(agree) >= 14, placements


def test_new_prompts_are_placed_within_the_caps_while_the_old_ones_fade() -> None:
    """A caller whose tenants all change: the old keys leave the placement, the new ones keep the key bound."""
    candidates = peers(1, 1, 1, 1)
    balancer, rng = Affinity(), random.Random(7)
    weights = [1 / (rank + 1) for rank in range(16)]
    for prefix, picks in (("old", 1000), ("new", 300)):
        keys = [f"{prefix}{i}" for i in range(16)]
        for _ in range(picks):
            balancer.pick(candidates, request(rng.choices(keys, weights)[0]))
    hottest = balancer.keys.hottest(PLACED_KEYS)
    assert not [k for k in hottest if k.startswith("old")], hottest
    placement = balancer.placed(candidates)
    held = {c.id: sum(c in places for places in placement.places.values()) for c in candidates}
    assert max(held.values()) <= 6, held  # 19 places (3 for the hottest key, 2 for the next) x 1.25 / 4, rounded up


def test_affinity_spreads_a_hot_key_over_the_instances_its_share_needs() -> None:
    """One key with a fifth of the requests: more than half a mean instance's share, so two instances; others one.

    A cold key can still move when noise in the shares moves its instance
    across a cap at a new placement (9 moves in 2,000 picks here), so it
    is held to 97% of its picks on one instance, not all.
    """
    candidates = peers(1, 1, 1, 1)
    balancer = Affinity()
    rng = random.Random(3)
    picked: dict[str, Counter[str]] = {}
    for n in range(3000):
        key = "hot" if rng.random() < 0.2 else f"k{rng.randrange(30)}"
        chosen = balancer.pick(candidates, request(key)).id
        if n >= 1000:
            picked.setdefault(key, Counter())[chosen] += 1
    assert len(picked["hot"]) == 2, picked["hot"]
    assert min(picked["hot"].values()) > 0.3 * sum(picked["hot"].values())
    cold = [where for key, where in picked.items() if key != "hot"]
    assert sum(max(where.values()) for where in cold) >= 0.97 * sum(sum(where.values()) for where in cold)


def test_affinity_passes_a_full_instances_requests_to_the_keys_next_instance() -> None:
    candidates = peers(1, 1, 1, 1)
    balancer = Affinity(spread=math.inf)  # the hot key stays on one instance, so its bound must act
    first, second, *_ = ranked(candidates, "hot")
    picked = Counter(balancer.pick(candidates, request("hot")).id for _ in range(400))
    # One key, all the traffic: its instance fills to the bound, the rest goes to the key's next instances in turn.
    assert picked[first.id] <= 1.3 * 400 / 4 and picked[second.id] > 0, picked


def test_affinity_passes_over_an_instance_far_above_the_mean_load() -> None:
    candidates = peers(1, 1, 1, 1)
    balancer = Affinity()
    first, second, *_ = ranked(candidates, "k")
    for _ in range(4):  # mean 1, most allowed 1.25 x 1 + 2: four is over
        first.begin()
    assert balancer.pick(candidates, request("k")).id == second.id


def test_affinity_keeps_a_key_where_two_are_in_flight_on_an_idle_fleet() -> None:
    """Two in flight where the others are idle is ordinary at low load: a miss elsewhere costs more than waiting."""
    candidates = peers(1, 1, 1, 1)
    balancer = Affinity()
    first = ranked(candidates, "k")[0]
    first.begin()
    first.begin()  # mean 0.5, most allowed 1.25 x 0.5 + 2
    assert balancer.pick(candidates, request("k")).id == first.id


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
        before = {c.id: balancer.recent.count(c.id) for c in candidates}
        chosen = balancer.pick(candidates, request(key))
        bound = (1 + epsilon) * max(LEAST_PICKS, sum(before.values()) + 1) * chosen.record.weight / sum(weights)
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
