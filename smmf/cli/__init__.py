"""The `smmf` command: a thin layer that wires the packages together.

Each module adds its subcommands to the parser: `inventory` (ls, models),
`top`, `manage` (offline, online, drain, restart, register, deregister),
`chat`, `run` (worker, sidecar, up) and `gateway` (gateway, dashboard).  Every subcommand takes `--registry`
(default: `$SMMF_REGISTRY`, else the embedded file registry).  Errors are one
clear line on stderr and an exit code, mapped from smmf's error tree here and
nowhere else: 2 for bad input, 1 for a failure, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from ..errors import APIError, ConfigurationError, SmmfError, UnknownInstance, UsageError
from . import chat, gateway, inventory, manage, run, top

__all__ = ["exit_code", "main"]


def exit_code(error: SmmfError) -> int:
    """2 when the input was wrong (usage, configuration, an unknown id), 1 when something failed."""
    return 2 if isinstance(error, UsageError | ConfigurationError | UnknownInstance) else 1


def _message(error: SmmfError) -> str:
    return error.message if isinstance(error, APIError) else str(error)


class _Parser(argparse.ArgumentParser):
    """Bad arguments get the same one line as every other error, not argparse's usage block; subcommands inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def parser() -> argparse.ArgumentParser:
    root = _Parser(prog="smmf", description="service-oriented multi-model management")
    root.add_argument("--version", action="version", version=f"smmf {__version__}")
    commands = root.add_subparsers(dest="command", required=True)
    for module in (inventory, top, manage, chat, run, gateway):
        module.add_commands(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        code: int = args.run(args)
    except SmmfError as error:
        print(f"smmf {args.command}: {_message(error)}", file=sys.stderr)
        return exit_code(error)
    except KeyboardInterrupt:
        return 130
    return code
