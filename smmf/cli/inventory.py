"""`smmf ls` and `smmf models`: what the registry holds."""

from __future__ import annotations

import argparse
import asyncio
import json

from ..instance import State
from ..management import model_summary
from ..registry import open_registry
from .options import Commands, add_registry_option
from .tables import columns, instance_table


async def _ls(args: argparse.Namespace) -> int:
    async with open_registry(args.registry) as registry:
        listing = await registry.list(args.model)
    if args.json:
        print(json.dumps([r.model_dump(mode="json", by_alias=True) for r in listing.records], indent=2))
    else:
        print(instance_table(listing.records))
    return 0


async def _models(args: argparse.Namespace) -> int:
    async with open_registry(args.registry) as registry:
        summary = model_summary((await registry.list()).records)
    counted = ["instances", *State]
    headers = [name.upper() for name in counted]
    rows = [[m, *(str(c[k]) for k in counted)] for m, c in sorted(summary.items())]
    headers.insert(0, "MODEL")
    print(columns(headers, rows))
    return 0


def add_commands(commands: Commands) -> None:
    ls = commands.add_parser("ls", help="list registered instances")
    add_registry_option(ls)
    ls.add_argument("--model", help="only this model's instances")
    ls.add_argument("--json", action="store_true", help="print the records as JSON")
    ls.set_defaults(run=lambda args: asyncio.run(_ls(args)))

    models = commands.add_parser("models", help="list models with their instance counts and states")
    add_registry_option(models)
    models.set_defaults(run=lambda args: asyncio.run(_models(args)))
