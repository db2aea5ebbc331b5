"""`smmf gateway` and `smmf dashboard`: the stateless gateway, and a loopback one whose page is the point."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..gateway import Gateway, serve
from .options import Commands, add_client_options, add_registry_option, client_options


def _run(args: argparse.Namespace, host: str, path: str = "") -> int:
    options = client_options(args)
    gateway = Gateway(args.registry, host=host, admin_token_env=args.admin_token_env, **options)
    try:
        asyncio.run(serve(gateway, host, args.port, path=path))
    except OSError as exc:
        print(f"smmf {args.command}: cannot listen on {host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _add_common(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument("--port", type=int, default=port, help=f"port (default {port}; 0 picks a free one)")
    parser.add_argument(
        "--admin-token-env", metavar="VAR",
        help="environment variable holding the admin token that write endpoints require (Authorization: Bearer)",
    )  # fmt: skip
    add_client_options(parser)
    add_registry_option(parser)


def add_commands(commands: Commands) -> None:
    gateway = commands.add_parser(
        "gateway", help="serve the OpenAI API, the management API and the dashboard for callers that cannot embed "
        "the client",
    )  # fmt: skip
    gateway.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    _add_common(gateway, 8000)
    gateway.set_defaults(run=lambda args: _run(args, args.host))

    dashboard = commands.add_parser("dashboard", help="start a loopback gateway and print its dashboard's URL")
    _add_common(dashboard, 0)
    dashboard.set_defaults(run=lambda args: _run(args, "127.0.0.1", "/"))
