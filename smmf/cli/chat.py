"""`smmf chat`: one request through the client library, saying which instance answered."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..client import ModelClient
from .options import Commands, add_client_options, add_registry_option, client_options


async def _chat(args: argparse.Namespace) -> int:
    async with ModelClient(args.registry, **client_options(args)) as client:
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
    chat.add_argument("--max-tokens", type=int, default=128)
    add_client_options(chat)
    add_registry_option(chat)
    chat.set_defaults(run=lambda args: asyncio.run(_chat(args)))
