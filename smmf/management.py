"""What operators do to instances: find them, change their desired state, and wait until it took effect.

The `smmf` command is a thin layer over this.  An instance run by a sidecar
is controlled through its admin key, and the wait ends when the sidecar
writes the action back with `acked_at`; the key stays, so the sidecar still
obeys it after a restart.  A template record has no sidecar: its state is
changed in the record itself, and an action that needs a server (restart)
is refused.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing

from .admin import AdminAction, AdminState
from .errors import NotConfirmed, RegistryError, UnknownInstance, UsageError
from .instance import Instance, Protocol, State
from .registry import Registry

__all__ = ["control", "find", "model_summary", "settled"]


async def find(registry: Registry, instance_id: str) -> Instance | None:
    return next((r for r in (await registry.list()).records if r.id == instance_id), None)


async def control(
    registry: Registry, instance_id: str, action: AdminAction, *, timeout: float = 60.0, requested_by: str = "smmf-cli"
) -> AdminState:
    """Ask for `action` and wait until it has been carried out; `NotConfirmed` after `timeout` seconds."""
    record = await find(registry, instance_id)
    if record is None and await registry.get_admin(instance_id) is None:
        raise UnknownInstance(instance_id)
    if record is not None and record.protocol is Protocol.TEMPLATE:
        return await _control_template(registry, record, action, requested_by)
    await registry.put_admin(instance_id, action, requested_by=requested_by)
    requested = await registry.get_admin(instance_id)
    assert requested is not None
    try:
        return await asyncio.wait_for(_acknowledged(registry, instance_id, requested), timeout)
    except TimeoutError:
        raise NotConfirmed(
            f"{instance_id} did not confirm {action} within {timeout:g}s; its sidecar may be down"
        ) from None


#: The state each action leaves a served instance in (a restart ends as it began).
_LEAVES = {AdminAction.OFFLINE: State.OFFLINE, AdminAction.DRAIN: State.OFFLINE, AdminAction.ONLINE: State.UP}


async def settled(registry: Registry, instance_id: str, state: AdminState, within: float = 3.0) -> Instance | None:
    """The record once it shows the state `state`'s action leaves it in, waiting at most `within` seconds.

    The sidecar rewrites its record before it acknowledges, but a registry's
    reads can lag its writes (Nacos answers queries from its last push, up to
    500 ms old), so the record read right after the acknowledgement may be
    the one from before.  After `within` seconds the record is taken as it is.
    """
    deadline = time.monotonic() + within
    expected = _LEAVES.get(state.action)
    while True:
        record = await find(registry, instance_id)
        if record is None or expected is None or record.state is expected or time.monotonic() >= deadline:
            return record
        await asyncio.sleep(0.1)


async def _control_template(registry: Registry, record: Instance, action: AdminAction, requested_by: str) -> AdminState:
    """A third-party API has no server to restart and no in-flight count to wait for: a drain is offline at once."""
    if action is AdminAction.RESTART:
        raise UsageError(f"{record.id} is a template record for a third-party API: there is no server to restart")
    state = State.UP if action is AdminAction.ONLINE else State.OFFLINE
    await registry.register(record.model_copy(update={"state": state}), ttl=None)
    request = AdminState(action=action, requested_by=requested_by)
    await registry.ack_admin(record.id, request)
    return request


async def _acknowledged(registry: Registry, instance_id: str, requested: AdminState) -> AdminState:
    """The admin key once the sidecar has written `requested` back as done (the watch's snapshot included)."""
    async with aclosing(registry.watch_admin(instance_id)) as events:
        async for event in events:
            for state in event.values:
                if state.requested_at == requested.requested_at and state.acked_at is not None:
                    return state
    raise RegistryError("the admin watch ended")  # a watch never ends on its own


def model_summary(records: list[Instance]) -> dict[str, dict[str, int]]:
    """Per model: how many instances, and how many in each state."""
    summary: dict[str, dict[str, int]] = {}
    for record in records:
        counts = summary.setdefault(record.model, {"instances": 0, **{s.value: 0 for s in State}})
        counts["instances"] += 1
        counts[record.state.value] += 1
    return summary
