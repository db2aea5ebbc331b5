"""A worker from a command line: the options every backend shares, its own, and the worker they describe.

`smmf worker` and `smmf up` both read them, so a file that `smmf up` accepts
starts workers that start.
"""

from __future__ import annotations

import argparse

from ..errors import ConfigurationError
from .admission import Admission
from .app import BODY_TIMEOUT, DEFAULT_MAX_BODY, DEFAULT_MAX_TOKENS, HEADER_TIMEOUT, Worker
from .backends import Backend

__all__ = ["StrictParser", "add_worker_arguments", "backend_from_args", "port", "worker_from_args"]


def port(text: str) -> int:
    """A `--port` argument: 0 (pick a free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port: use 0 to 65535")
    return value


def add_worker_arguments(parser: argparse.ArgumentParser, backend: type[Backend]) -> None:
    parser.add_argument("--model", required=True, help="the model name clients ask for")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port, default=8000, help="0 picks a free port (printed as the first line)")
    parser.add_argument("--max-concurrency", type=int, default=4, help="generations running at once")
    parser.add_argument("--max-queue", type=int, default=64, help="requests waiting; beyond that, 429")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY, help="larger bodies get 413")
    parser.add_argument(
        "--max-tokens-limit", type=int, metavar="N",
        help=f"largest max_tokens a request may ask (default: the model's context, else {DEFAULT_MAX_TOKENS})",
    )  # fmt: skip
    parser.add_argument(
        "--body-timeout", type=float, default=BODY_TIMEOUT, metavar="S", help="seconds a request body may take"
    )
    parser.add_argument(
        "--header-timeout", type=float, default=HEADER_TIMEOUT, metavar="S",
        help="seconds a connection may sit idle or half-way through its headers",
    )  # fmt: skip
    backend.add_arguments(parser)
    parser.set_defaults(backend_class=backend)


def backend_from_args(args: argparse.Namespace) -> Backend:
    """The backend the options describe, checked as far as it can be without loading a model."""
    Admission(args.max_concurrency, args.max_queue)
    if args.body_timeout <= 0 or args.header_timeout <= 0:
        raise ConfigurationError("--body-timeout and --header-timeout must be positive seconds")
    if args.max_tokens_limit is not None and args.max_tokens_limit < 1:
        raise ConfigurationError("--max-tokens-limit must be at least 1")
    backend: Backend = args.backend_class.from_args(args)
    return backend


def worker_from_args(args: argparse.Namespace) -> Worker:
    return Worker(
        backend_from_args(args),
        args.model,
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        max_tokens=args.max_tokens_limit,
        body_timeout=args.body_timeout,
        header_timeout=args.header_timeout,
    )


class StrictParser(argparse.ArgumentParser):
    """A parser that raises `ConfigurationError` instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigurationError(message)
