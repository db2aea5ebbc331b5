"""Who may change the fleet through the gateway: the holder of the admin token, or, without one, loopback only.

The token is read once from the environment variable the operator names
(`--admin-token-env`), never from a flag, and compared in constant time.
Reads and model calls need no token: the registry they show is readable by
every caller anyway, and a model call changes nothing.
"""

from __future__ import annotations

import hmac
import ipaddress
import os

from aiohttp import web

from ..errors import ConfigurationError

__all__ = ["AdminGuard", "is_loopback"]


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class AdminGuard:
    def __init__(self, token_env: str | None, bound_host: str) -> None:
        self.token_env = token_env
        self.bound_host = bound_host
        self._token: bytes | None = None
        if token_env:
            token = os.environ.get(token_env)
            if not token:
                raise ConfigurationError(f"--admin-token-env names {token_env}, which is not set or empty")
            self._token = token.encode()

    @property
    def mode(self) -> str:
        """How writes are guarded, in a few words, for the start-up line and the dashboard."""
        if self._token is not None:
            return f"admin token (${self.token_env})"
        if is_loopback(self.bound_host):
            return "loopback only (no admin token)"
        return "refused (no admin token, and not on loopback)"

    def refusal(self, request: web.Request) -> tuple[int, str] | None:
        """Why this write request may not go ahead (status and message), or None when it may."""
        if self._token is None:
            if is_loopback(self.bound_host) and is_loopback(request.remote):
                return None
            return 403, (
                "writes need an admin token: start the gateway with --admin-token-env VAR "
                "(or on a loopback address, for loopback callers only)"
            )
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return 401, "this write needs the admin token: send Authorization: Bearer <token>"
        if not hmac.compare_digest(presented.strip().encode(), self._token):
            return 401, "the admin token is wrong"
        return None
