"""Options more than one subcommand takes."""

from __future__ import annotations

import argparse

from ..errors import UsageError

__all__ = ["Commands", "add_registry_option", "parse_labels"]

#: The root parser's subcommands, which each module adds its own to.
Commands = argparse._SubParsersAction


def add_registry_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", help="registry URL (default: $SMMF_REGISTRY or the embedded file registry)")


def parse_labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--label takes KEY=VALUE, got {pair!r}")
        labels[key] = value
    return labels
