"""`smmf chat`: one request through the client library, saying which instance answered."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..client import ModelClient
from .options import Commands, add_registry_option, parse_pairs


async def _chat(args: argparse.Namespace) -> int:
    credentials = dict(parse_pairs(args.credential, "--credential", "HOST=VARIABLE"))
    async with ModelClient(args.registry, policy=args.policy, credentials=credentials, allow=args.allow) as client:
        messages = [{"role": "user", "content": args.prompt}]
        if args.stream:
            stream = await client.chat.completions.create(
                model=args.model, messages=messages, stream=True, max_tokens=args.max_tokens
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    print(chunk.choices[0].delta.content, end="", flush=True)
            print()
            instance = stream.instance_id
        else:
            reply = await client.chat.completions.create(
                model=args.model, messages=messages, max_tokens=args.max_tokens
            )
            print(reply.choices[0].message.content)
            instance = reply.instance_id or "?"
    print(f"[answered by {instance}]", file=sys.stderr)
    return 0


def add_commands(commands: Commands) -> None:
    chat = commands.add_parser("chat", help="send one chat request through the client library")
    chat.add_argument("prompt")
    chat.add_argument("--model", required=True)
    chat.add_argument("--stream", action="store_true")
    chat.add_argument("--policy", default="least_loaded")
    chat.add_argument("--max-tokens", type=int, default=128)
    chat.add_argument(
        "--credential", action="append", default=[], metavar="HOST=VARIABLE",
        help="send the key in environment variable VARIABLE to HOST, for template records that name VARIABLE",
    )  # fmt: skip
    chat.add_argument(
        "--allow", action="append", metavar="HOST|NETWORK",
        help="send requests only to these hosts (*.example.com) and networks (10.0.0.0/8); repeatable",
    )  # fmt: skip
    add_registry_option(chat)
    chat.set_defaults(run=lambda args: asyncio.run(_chat(args)))
