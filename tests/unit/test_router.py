"""The router's attempt loop and retry budget, over the in-memory registry and a scripted transport.

The transport is the client's seam for reaching an instance; here a script
decides what each instance answers, so every branch of the loop is reached
without a process.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from smmf.client.cache import InstanceCache
from smmf.client.peer import Peer
from smmf.client.request import Request
from smmf.client.router import RetryBudget, Router
from smmf.client.transport import Response, Retryable
from smmf.errors import APIConnectionError, APIStatusError, NoInstanceAvailable
from smmf.instance import Instance
from smmf.registry import open_registry

MODEL = "m"

Answer = Callable[[Peer], Response]


def ok(peer: Peer) -> Response:
    return Response(peer.id, 200, {"content-type": "application/json"}, content=b"{}")


def refused(peer: Peer) -> Response:
    raise Retryable(APIConnectionError(f"{peer.id}: refused", instance_id=peer.id))


def busy(retry_after: float) -> Answer:
    def answer(peer: Peer) -> Response:
        raise Retryable(APIStatusError(f"{peer.id}: busy", status=429, instance_id=peer.id), retry_after)

    return answer


def bad_request(peer: Peer) -> Response:
    raise APIStatusError(f"{peer.id}: bad request", status=400, instance_id=peer.id)


@dataclass
class ScriptedTransport:
    """Answers each instance by its script (default: success) and records the order of attempts."""

    scripts: dict[str, Answer] = field(default_factory=dict)
    attempts: list[str] = field(default_factory=list)

    async def send(self, peer: Peer, request: Request) -> Response:
        self.attempts.append(peer.id)
        return self.scripts.get(peer.id, ok)(peer)

    async def aclose(self) -> None:
        pass


@pytest.fixture
async def cache() -> AsyncIterator[InstanceCache]:
    async with open_registry(f"memory://{uuid.uuid4().hex}") as registry:
        for name in ("a", "b", "c"):
            record = Instance(id=name, model=MODEL, endpoint=f"http://{name}:1/v1")
            await registry.register(record, ttl=None)
        instances = InstanceCache(registry)
        await instances.start()
        yield instances
        await instances.close()


def request() -> Request:
    return Request(MODEL, "/completions", {"model": MODEL, "prompt": "x"}, policy="round_robin")


def inflight(cache: InstanceCache) -> dict[str, int]:
    return {peer.id: peer.inflight for peer in cache.peers(MODEL)}


async def test_a_retryable_failure_goes_to_another_instance(cache: InstanceCache) -> None:
    transport = ScriptedTransport({"a": refused})
    response = await Router(cache, transport, "round_robin").send(request())
    assert transport.attempts[0] == "a" and response.instance_id == transport.attempts[1] != "a"
    assert inflight(cache) == {"a": 0, "b": 0, "c": 0}


async def test_retries_stop_at_max_retries_with_the_last_error(cache: InstanceCache) -> None:
    transport = ScriptedTransport(dict.fromkeys("abc", refused))
    with pytest.raises(APIConnectionError) as failed:
        await Router(cache, transport, "round_robin", max_retries=1).send(request())
    assert len(transport.attempts) == 2 and len(set(transport.attempts)) == 2
    assert failed.value.instance_id == transport.attempts[-1]
    assert inflight(cache) == {"a": 0, "b": 0, "c": 0}


async def test_when_every_instance_failed_the_last_error_is_raised_not_no_instance(cache: InstanceCache) -> None:
    transport = ScriptedTransport(dict.fromkeys("abc", refused))
    with pytest.raises(APIConnectionError):
        await Router(cache, transport, "round_robin", max_retries=5).send(request())
    assert sorted(transport.attempts) == ["a", "b", "c"]


async def test_a_final_error_is_not_retried(cache: InstanceCache) -> None:
    transport = ScriptedTransport({"a": bad_request})
    with pytest.raises(APIStatusError) as failed:
        await Router(cache, transport, "round_robin").send(request())
    assert failed.value.status == 400 and transport.attempts == ["a"]


async def test_the_retry_budget_caps_retries(cache: InstanceCache) -> None:
    transport = ScriptedTransport(dict.fromkeys("abc", refused))
    router = Router(cache, transport, "round_robin", max_retries=2)
    router.budget = RetryBudget(ratio=0.2, floor=0.1, window=10)
    with pytest.raises(APIConnectionError):
        await router.send(request())
    assert len(transport.attempts) == 2, "the floor paid for one retry"
    transport.attempts.clear()
    with pytest.raises(APIConnectionError):
        await router.send(request())
    assert len(transport.attempts) == 1, "nothing left in the budget: no retry"


def test_the_budget_earns_a_fifth_of_a_retry_per_request() -> None:
    budget = RetryBudget(ratio=0.2, floor=0.1, window=10)
    assert budget.withdraw() and not budget.withdraw()
    for _ in range(5):
        budget.deposit()
    assert budget.withdraw() and not budget.withdraw()


def test_the_default_budget_retries_a_crashed_instance_s_whole_queue() -> None:
    """Issue 12, finding 7: a worker killed with 13 requests in flight, and the budget paid for 10 retries only."""
    budget = RetryBudget()
    for _ in range(13):
        budget.deposit()
    assert all(budget.withdraw() for _ in range(13))


async def test_spent_retries_age_out_of_the_window() -> None:
    budget = RetryBudget(ratio=0.0, floor=1.0, window=1)
    assert budget.withdraw() and not budget.withdraw()
    await asyncio.sleep(1.1)
    assert budget.withdraw()


async def test_an_instance_that_sent_retry_after_cools_down(cache: InstanceCache) -> None:
    transport = ScriptedTransport({"a": busy(30.0)})
    router = Router(cache, transport, "round_robin")
    await router.send(request())
    transport.attempts.clear()
    for _ in range(6):
        await router.send(request())
    assert "a" not in transport.attempts


async def test_consecutive_failures_eject_but_never_the_last_available_instance(cache: InstanceCache) -> None:
    transport = ScriptedTransport(dict.fromkeys("abc", bad_request))
    router = Router(cache, transport, "round_robin")
    for _ in range(12):
        with pytest.raises(APIStatusError):
            await router.send(request())
    ejected = {peer.id for peer in cache.peers(MODEL) if peer.ejections}
    (kept,) = {"a", "b", "c"} - ejected
    assert len(ejected) == 2 and transport.attempts[-3:] == [kept] * 3


async def test_an_unknown_model_names_the_known_ones(cache: InstanceCache) -> None:
    with pytest.raises(NoInstanceAvailable) as missing:
        await Router(cache, ScriptedTransport()).send(Request("gpt-9", "/completions", {}))
    assert missing.value.model == "gpt-9" and missing.value.known == [MODEL]
