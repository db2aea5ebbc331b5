"""Options more than one subcommand takes."""

from __future__ import annotations

import argparse
import re
from typing import Any

from ..errors import UsageError

__all__ = [
    "Commands",
    "add_client_options",
    "add_registry_option",
    "client_options",
    "host_port",
    "instance_id",
    "parse_pairs",
]

#: The root parser's subcommands, which each module adds its own to.
Commands = argparse._SubParsersAction


def add_registry_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", help="registry URL (default: $SMMF_REGISTRY or the embedded file registry)")


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """What a command that embeds `ModelClient` lets its user decide: the policy, and what records may not."""
    parser.add_argument("--policy", default="least_loaded", help="balancing policy (default: least_loaded)")
    parser.add_argument(
        "--credential", action="append", default=[], metavar="HOST=VARIABLE",
        help="send the key in environment variable VARIABLE to HOST, for template records that name VARIABLE",
    )  # fmt: skip
    parser.add_argument(
        "--allow", action="append", metavar="HOST|NETWORK",
        help="send requests only to these hosts (*.example.com) and networks (10.0.0.0/8); repeatable",
    )  # fmt: skip


def client_options(args: argparse.Namespace) -> dict[str, Any]:
    """`ModelClient`'s keyword arguments from `add_client_options`' flags."""
    credentials = parse_pairs(args.credential, "--credential", "HOST=VARIABLE")
    return {"policy": args.policy, "credentials": credentials, "allow": args.allow}


#: What an operator may choose as an instance id: readable in a table, safe in a registry key and a URL.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@\[\]-]{0,127}")


def instance_id(text: str) -> str:
    """An `--id` argument: letters, digits and `._:@[]-`, up to 128 characters."""
    if not _ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an instance id: use letters, digits and ._:@[]- only")
    return text


def host_port(text: str) -> tuple[str, int]:
    """A `HOST:PORT` argument (`[::]:9090` for IPv6)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def parse_pairs(pairs: list[str], option: str, shape: str = "KEY=VALUE") -> dict[str, str]:
    """Repeated `KEY=VALUE` arguments of `option` as a dict; a malformed one is a `UsageError`."""
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} takes {shape}, got {pair!r}")
        parsed[key] = value
    return parsed
