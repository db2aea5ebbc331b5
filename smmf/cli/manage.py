"""`smmf offline|online|drain|restart|register|deregister`: change what runs, through the registry."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys

from pydantic import ValidationError

from ..admin import AdminAction
from ..errors import AlreadyRegistered, UnknownInstance, UsageError
from ..instance import Instance, Load, Protocol
from ..management import control, find, settled
from ..registry import open_registry
from ..template.options import add_template_arguments, template_from_args
from .options import Commands, add_registry_option, instance_id


async def _control(args: argparse.Namespace) -> int:
    async with open_registry(args.registry) as registry:
        state = await control(registry, args.id, AdminAction(args.command), timeout=args.timeout)
        record = await settled(registry, args.id, state)
    now = f"; now {record.state}" if record is not None else "; not running"
    print(f"{args.id}: {args.command} done{now}")
    return 0


async def _register(args: argparse.Namespace) -> int:
    template = template_from_args(args)
    try:
        record = Instance(
            id=args.id or f"tpl-{secrets.token_hex(4)}",
            model=args.model,
            endpoint=template.url,
            protocol=Protocol.TEMPLATE,
            backend="external",
            weight=args.weight,
            load=Load(reported=False),
            template=template,
        )
    except ValidationError as exc:
        raise UsageError("; ".join(f"--{err['loc'][0]}: {err['msg']}" for err in exc.errors())) from None
    async with open_registry(args.registry) as registry:
        try:
            await registry.register(record, ttl=None, exclusive=True)
        except AlreadyRegistered:
            raise UsageError(f"an instance {record.id!r} is already registered; deregister it first") from None
    print(record.id)
    return 0


async def _deregister(args: argparse.Namespace) -> int:
    async with open_registry(args.registry) as registry:
        record = await find(registry, args.id)
        removed = await registry.remove(args.id)
    if not removed:
        raise UnknownInstance(args.id)
    print(f"{args.id}: deregistered (its record and its admin key)")
    if record is not None and record.alive_at is not None:
        print(
            f"note: {args.id} is kept alive by a running sidecar, which registers it again within a probe "
            "interval; to take it out of rotation use `smmf offline`, or stop its sidecar",
            file=sys.stderr,
        )
    return 0


def add_commands(commands: Commands) -> None:
    for action, what in (
        ("offline", "withdraw an instance (it stays withdrawn until `smmf online`)"),
        ("online", "put a withdrawn instance back"),
        ("drain", "stop new requests, wait for in-flight work, then withdraw"),
        ("restart", "drain, restart the worker, register again"),
    ):
        sub = commands.add_parser(action, help=what)
        sub.add_argument("id", help="instance id (see `smmf ls`)")
        sub.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the sidecar to act")
        add_registry_option(sub)
        sub.set_defaults(run=lambda args: asyncio.run(_control(args)))

    register = commands.add_parser("register", help="register a third-party API through a request template")
    register.add_argument("--model", required=True)
    register.add_argument("--weight", type=float, default=1.0)
    register.add_argument("--id", type=instance_id, help="the record's id (default: tpl- and a random suffix)")
    add_template_arguments(register)
    add_registry_option(register)
    register.set_defaults(run=lambda args: asyncio.run(_register(args)))

    deregister = commands.add_parser("deregister", help="remove a registered record by id")
    deregister.add_argument("id")
    add_registry_option(deregister)
    deregister.set_defaults(run=lambda args: asyncio.run(_deregister(args)))
