"""Every error smmf raises, in one tree, so a caller can catch all of them or exactly one kind.

    SmmfError
    ├── UsageError               a command line or call asks for something impossible
    ├── ConfigurationError       a setting that cannot work: a config file, an option, a URL
    │   └── UnsupportedRegistry  a registry URL no driver understands
    ├── RegistryError            the registry failed or refused
    │   ├── RegistryUnavailable  it could not be reached (the message names the address)
    │   ├── RegistryDenied       it refused these credentials, or what they ask to do
    │   ├── Compacted            the history a watch asked for is gone (watches handle it themselves)
    │   ├── LeaseNotFound        a write named a lease that expired or was revoked
    │   ├── AlreadyRegistered    another holder's record has this id
    │   ├── RecordRejected       the registry cannot hold this record as it is (Consul's Meta limits)
    │   ├── UnknownInstance      no record or admin key has that id
    │   └── NotConfirmed         a sidecar did not confirm an admin action in time
    ├── APIError                 a client call failed (`instance_id` names the instance, when one did)
    │   ├── APIStatusError       an instance answered with an error status
    │   ├── APIConnectionError   no instance could be reached
    │   ├── StreamInterrupted    a stream broke after its first byte
    │   └── NoInstanceAvailable  the model has no instance that may take requests
    ├── ModelLoadError           a worker could not load its model
    └── ErrorResponse            what a worker answers a request with when it fails, in OpenAI's shape

The `smmf` command maps this tree to exit codes in one place (`smmf.cli`):
usage and configuration errors and unknown ids exit 2, everything else 1.
`ConfigurationError` and `UsageError` are also `ValueError`s, because that is
what Python code that validates arguments already catches.
"""

from __future__ import annotations

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "AlreadyRegistered",
    "Compacted",
    "ConfigurationError",
    "ErrorResponse",
    "LeaseNotFound",
    "ModelLoadError",
    "NoInstanceAvailable",
    "NotConfirmed",
    "RecordRejected",
    "RegistryDenied",
    "RegistryError",
    "RegistryUnavailable",
    "SmmfError",
    "StreamInterrupted",
    "UnknownInstance",
    "UnsupportedRegistry",
    "UsageError",
]


class SmmfError(Exception):
    """The root of every error smmf raises."""


# -- usage and configuration --------------------------------------------------


class UsageError(SmmfError, ValueError):
    """A command line or call asks for something impossible."""


class ConfigurationError(SmmfError, ValueError):
    """A setting that cannot work: the message names the setting (and, for a file, the line)."""


class UnsupportedRegistry(ConfigurationError):
    """A registry URL that no driver understands, or that lacks what its driver needs."""


# -- the registry -------------------------------------------------------------


class RegistryError(SmmfError):
    """The registry failed or refused an operation."""


class RegistryUnavailable(RegistryError):
    """The registry could not be reached; the message names the address tried."""

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"registry {address} is unavailable: {reason}")


class RegistryDenied(RegistryError):
    """The registry refused the credentials, or the operation they ask for; never names a secret."""

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(f"registry {address} refused: {reason}")


class Compacted(RegistryError):
    """History before the requested revision is gone; the watcher must list again."""

    def __init__(self, revision: int, compacted: int) -> None:
        self.revision = revision
        self.compacted = compacted
        super().__init__(f"revision {revision} is compacted (history starts after {compacted})")


class LeaseNotFound(RegistryError):
    """The lease named in a write no longer exists (expired or revoked)."""


class AlreadyRegistered(RegistryError):
    """A record is already stored under this key: a write that must not replace another holder's was refused."""

    def __init__(self, key: str, detail: str = "") -> None:
        super().__init__(f"{key} is already registered{detail}")
        self.key = key


class RecordRejected(RegistryError, ValueError):
    """A record this registry cannot store as it is; refused whole, never cut to fit.

    `field` names the part of the record that does not fit.
    """

    def __init__(self, model: str, field: str, reason: str) -> None:
        super().__init__(f"cannot store the record of model {model!r}: field {field!r}: {reason}")
        self.model = model
        self.field = field


class UnknownInstance(RegistryError, LookupError):
    """No record and no admin key in the registry has this id."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"no instance {instance_id!r} in the registry (see `smmf ls`)")
        self.instance_id = instance_id


class NotConfirmed(RegistryError, TimeoutError):
    """An admin action was written, but the instance's sidecar did not confirm it in time."""


# -- client calls -------------------------------------------------------------


class APIError(SmmfError):
    """A call failed.  `instance_id` names the instance that failed it, when one did."""

    def __init__(
        self, message: str, *, status: int | None = None, instance_id: str | None = None, body: object = None
    ) -> None:
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
        super().__init__(f"no instance of model {model!r} is available; known models: {listing}")
        self.model = model
        self.known = known


# -- workers ------------------------------------------------------------------


class ModelLoadError(SmmfError):
    """A worker could not load its model; the message says what to fix."""


class ErrorResponse(SmmfError):
    """A failure a worker answers with: an HTTP status and OpenAI's error object.

    Raised anywhere below the worker's HTTP layer, which turns it into the
    response, so the official SDK raises its own class with this message.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after
