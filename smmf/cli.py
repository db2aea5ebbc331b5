"""The `smmf` command: a thin layer over the packages.

Every subcommand takes `--registry` (default: `$SMMF_REGISTRY`, else the
embedded file registry).  Errors are one clear line on stderr and a non-zero
exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence

from . import __version__
from .instance import Instance
from .registry_drivers import RegistryError, UnsupportedRegistry, open_registry


def _table(records: list[Instance]) -> str:
    headers = ("ID", "MODEL", "KIND", "ENDPOINT", "BACKEND", "STATE", "WEIGHT", "INFLIGHT", "QUEUED", "LOAD AGE")
    now = time.time()
    rows = [
        (
            r.id,
            r.model,
            r.kind.value,
            r.endpoint,
            r.backend,
            r.state.value,
            f"{r.weight:g}",
            str(r.load.inflight),
            str(r.load.queued),
            f"{max(0.0, now - r.load.updated_at):.0f}s",
        )
        for r in sorted(records, key=lambda r: (r.model, r.id))
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in [headers, *rows]
    ]
    return "\n".join(lines)


async def _ls(args: argparse.Namespace) -> int:
    async with open_registry(args.registry) as registry:
        listing = await registry.list(args.model)
    if args.json:
        print(json.dumps([r.model_dump(mode="json", by_alias=True) for r in listing.records], indent=2))
    else:
        print(_table(listing.records))
    return 0


def _worker(args: argparse.Namespace) -> int:
    from .worker.app import Worker
    from .worker.server import run

    try:
        backend = args.backend_class.from_args(args)
        worker = Worker(
            backend,
            args.model,
            max_concurrency=args.max_concurrency,
            max_queue=args.max_queue,
            max_body_bytes=args.max_body_bytes,
        )
    except ValueError as exc:
        print(f"smmf worker: {exc}", file=sys.stderr)
        return 2
    return run(worker, args.host, args.port)


def _add_worker(commands: argparse._SubParsersAction) -> None:
    from .worker.backends import BACKENDS, backend_class

    worker = commands.add_parser("worker", help="serve one model over the OpenAI API")
    backends = worker.add_subparsers(dest="backend", required=True, metavar="BACKEND")
    for name in BACKENDS:
        cls = backend_class(name)
        summary = (sys.modules[cls.__module__].__doc__ or name).strip().splitlines()[0]
        sub = backends.add_parser(name, help=summary, description=summary)
        sub.add_argument("--model", required=True, help="the model name clients ask for")
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed as the first line)")
        sub.add_argument("--max-concurrency", type=int, default=4, help="generations running at once")
        sub.add_argument("--max-queue", type=int, default=64, help="requests waiting; beyond that, 429")
        sub.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024, help="larger bodies get 413")
        cls.add_arguments(sub)
        sub.set_defaults(sync_run=_worker, backend_class=cls)


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--label takes KEY=VALUE, got {pair!r}")
        labels[key] = value
    return labels


def _sidecar(args: argparse.Namespace) -> int:
    from .instance import Kind
    from .sidecar.agent import Sidecar, SidecarConfig
    from .sidecar.upstream import UpstreamType

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        config = SidecarConfig(
            model=args.model,
            upstream=args.upstream,
            registry=args.registry,
            kind=Kind(args.kind) if args.kind else None,
            weight=args.weight,
            labels=_labels(args.label),
            ttl=args.ttl,
            probe_interval=args.probe_interval,
            load_interval=args.load_interval,
            advertise=args.advertise,
            upstream_type=UpstreamType(args.upstream_type),
            drain_timeout=args.drain_timeout,
            command=command,
        )
        sidecar = Sidecar(config)
    except (ValueError, RegistryError) as exc:
        print(f"smmf sidecar: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(sidecar.run())


def _add_sidecar(commands: argparse._SubParsersAction) -> None:
    from .instance import Kind
    from .sidecar.upstream import UpstreamType

    sidecar = commands.add_parser(
        "sidecar",
        help="register a model server in the registry and keep its record true",
        usage="smmf sidecar --model NAME --upstream URL [options] [-- COMMAND ARGS...]",
    )
    sidecar.add_argument("--model", required=True, help="the model name clients ask for")
    sidecar.add_argument("--upstream", required=True, help="root URL of the server (its /health, /metrics, /v1)")
    sidecar.add_argument("--registry", help="registry URL (default: $SMMF_REGISTRY or the embedded file registry)")
    sidecar.add_argument(
        "--kind", choices=[k.value for k in Kind], help="default: what an smmf worker reports, else llm"
    )
    sidecar.add_argument("--weight", type=float, default=1.0, help="relative capacity")
    sidecar.add_argument("--label", action="append", default=[], metavar="K=V", help="repeatable")
    sidecar.add_argument("--ttl", type=float, default=10.0, help="lease seconds: how soon a dead sidecar disappears")
    sidecar.add_argument("--probe-interval", type=float, default=2.0, help="seconds between health probes")
    sidecar.add_argument(
        "--load-interval", type=float, default=1.0, help="at most one load write per this many seconds"
    )
    sidecar.add_argument("--advertise", help="root URL clients should call, when it differs from --upstream")
    sidecar.add_argument(
        "--upstream-type", choices=[t.value for t in UpstreamType], default="smmf", help="how to probe and read load"
    )
    sidecar.add_argument("--drain-timeout", type=float, default=30.0, help="longest wait for in-flight work")
    sidecar.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS: start and supervise the server")
    sidecar.set_defaults(sync_run=_sidecar)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smmf", description="service-oriented multi-model management")
    parser.add_argument("--version", action="version", version=f"smmf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    ls = commands.add_parser("ls", help="list registered instances")
    ls.add_argument("--registry", help="registry URL (default: $SMMF_REGISTRY or the embedded file registry)")
    ls.add_argument("--model", help="only this model's instances")
    ls.add_argument("--json", action="store_true", help="print the records as JSON")
    ls.set_defaults(run=_ls)

    _add_worker(commands)
    _add_sidecar(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if hasattr(args, "sync_run"):
        return args.sync_run(args)
    try:
        return asyncio.run(args.run(args))
    except UnsupportedRegistry as exc:
        print(f"smmf: {exc}", file=sys.stderr)
        return 2
    except RegistryError as exc:
        print(f"smmf: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
