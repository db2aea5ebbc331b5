"""What a client accepts from records it did not write, and which of its own credentials it sends where.

A registry record is data written by whoever can write the registry.  It
can say where an instance is; it can never decide which of the caller's
secrets are sent, or to whom.  So the caller binds each credential to a host
(`credentials={"api.example.com": "EXAMPLE_API_KEY"}`), and a template
record can at most name the variable its API needs: the key is sent only
when the record's URL is on that very host.  A record that asks for a
credential the caller has not bound to its host is never routed to.

`allow` narrows further where requests may go at all: host names (exact, or
`*.example.com`), IP addresses and networks (`10.0.0.0/8`).  Host names are
compared as written in the record, never resolved, so a name cannot smuggle
in an address outside the allowed networks.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from ..errors import UsageError
from ..instance import Instance
from ..template import HttpTemplate

__all__ = ["Trust"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _host_port(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    return (parts.hostname or "").lower(), parts.port


class Trust:
    def __init__(self, credentials: Mapping[str, str] | None = None, allow: Iterable[str] | None = None) -> None:
        self.credentials: dict[tuple[str, int | None], str] = {}
        for host, variable in (credentials or {}).items():
            bound = _host_port(f"//{host}")
            if not bound[0] or not variable.isidentifier():
                raise UsageError(f"credential binding {host!r}={variable!r}: want host[:port]=ENVIRONMENT_VARIABLE")
            self.credentials[bound] = variable
        self.names: list[str] = []
        self.networks: list[Network] = []
        self.restricted = allow is not None
        for entry in allow or ():
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.append(entry.lower())

    def _allowed(self, host: str) -> bool:
        if not self.restricted:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return any(host == name or (name.startswith("*.") and host.endswith(name[1:])) for name in self.names)
        return any(address in network for network in self.networks)

    def _bound(self, template: HttpTemplate) -> bool:
        """Whether the variable the template names is the one this client binds to its URL's host."""
        host, port = _host_port(template.url)
        binding = self.credentials.get((host, port)) or self.credentials.get((host, None))
        return binding == template.api_key_env

    def refusal(self, record: Instance) -> str | None:
        """Why this client must not send requests to `record`; None when it may."""
        urls = [record.endpoint] + ([record.template.url] if record.template is not None else [])
        for url in urls:
            host = _host_port(url)[0]
            if not self._allowed(host):
                return f"its host {host} is not among this client's allowed hosts and networks"
        template = record.template
        if template is not None and template.api_key_env and not self._bound(template):
            host = _host_port(template.url)[0]
            return (
                f"it asks for the credential {template.api_key_env}, which this client does not bind to {host} "
                "(bind it with credentials={host: variable})"
            )
        return None

    def api_key(self, record: Instance) -> str | None:
        """The key for a template record's API: the caller's own binding for its host, when the record names it."""
        template = record.template
        if template is None or not template.api_key_env or not self._bound(template):
            return None
        key = os.environ.get(template.api_key_env)
        if not key:
            raise KeyError(
                f"environment variable {template.api_key_env} (bound to {_host_port(template.url)[0]}) is not set"
            )
        return key
