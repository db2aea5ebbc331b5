"""The desired state of an instance: what operators ask of it, and what its sidecar confirms.

Management tools write an `AdminState` under `admin/<id>` and sidecars obey
it.  It is kept apart from the instance record because it outlives any one
lease: an instance taken offline must stay offline across its sidecar's
restarts, and a record that a sidecar rewrites every second must not be
where an operator's request could be overwritten.
"""

from __future__ import annotations

import time
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AdminAction", "AdminState"]


class AdminAction(StrEnum):
    OFFLINE = "offline"
    ONLINE = "online"
    DRAIN = "drain"
    RESTART = "restart"


class AdminState(BaseModel):
    """The value under `admin/<id>`.

    `requested_at` makes a repeated action a new event.  The sidecar writes the
    same state back with `acked_at` once it has acted, so a management tool
    can wait for that, and a one-shot action (`restart`) is never redone.
    """

    model_config = ConfigDict(extra="ignore")

    action: AdminAction
    requested_at: float = Field(default_factory=time.time)
    requested_by: str | None = None
    acked_at: float | None = None
