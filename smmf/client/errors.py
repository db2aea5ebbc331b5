"""Errors the client raises; all are `APIError`s, so one `except` catches every failed call."""

from __future__ import annotations


class APIError(Exception):
    """A call failed.  `instance_id` names the instance that failed it, when one did."""

    def __init__(self, message: str, *, status: int | None = None, instance_id: str | None = None, body: object = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.instance_id = instance_id
        self.body = body


class APIStatusError(APIError):
    """An instance answered with an error status (after any retries)."""


class APIConnectionError(APIError):
    """No instance could be reached (after any retries)."""


class StreamInterrupted(APIError):
    """A stream broke after its first byte: the part already received cannot be retried elsewhere."""


class NoInstanceAvailable(APIError):
    """The model has no eligible instance (none registered, or all draining or offline)."""

    def __init__(self, model: str, known: list[str]) -> None:
        listing = ", ".join(sorted(known)) or "none"
        super().__init__(f"no instance of model {model!r} is available; known models: {listing}", status=None)
        self.model = model
        self.known = known
