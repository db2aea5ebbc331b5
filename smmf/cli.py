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
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .instance import Instance, Protocol
from .management import NotActed, UnknownInstance, control, model_summary
from .registry_drivers import AdminAction, RegistryError, UnsupportedRegistry, open_registry


class Usage(ValueError):
    """The command line asks for something impossible; exit code 2."""


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
    return _columns(headers, rows)


def _columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
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


def _registry_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", help="registry URL (default: $SMMF_REGISTRY or the embedded file registry)")


async def _models(args: argparse.Namespace) -> int:
    async with open_registry(args.registry) as registry:
        summary = model_summary((await registry.list()).records)
    headers = ["MODEL", "INSTANCES", "UP", "DRAINING", "OFFLINE"]
    rows = [[m, *(str(c[k]) for k in ("instances", "up", "draining", "offline"))] for m, c in sorted(summary.items())]
    print(_columns(headers, rows))
    return 0


async def _control(args: argparse.Namespace) -> int:
    async with open_registry(args.registry) as registry:
        await control(registry, args.id, AdminAction(args.command), timeout=args.timeout)
    print(f"{args.id}: {args.command} done")
    return 0


async def _register(args: argparse.Namespace) -> int:
    from .worker.backends.template import template_from_args

    try:
        template = template_from_args(args)
    except ValueError as exc:
        raise Usage(str(exc)) from None
    record = Instance(
        id=f"tpl-{secrets.token_hex(4)}",
        model=args.model,
        endpoint=template.url,
        protocol=Protocol.TEMPLATE,
        backend="external",
        weight=args.weight,
        template=template,
        api_key_env=args.api_key_env,
    )
    async with open_registry(args.registry) as registry:
        await registry.register(record, ttl=None)
    print(record.id)
    return 0


async def _deregister(args: argparse.Namespace) -> int:
    async with open_registry(args.registry) as registry:
        removed = await registry.remove(args.id)
    if not removed:
        raise UnknownInstance(args.id)
    print(f"{args.id}: deregistered")
    return 0


async def _chat(args: argparse.Namespace) -> int:
    from .client import ModelClient

    async with ModelClient(args.registry, policy=args.policy) as client:
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
            instance = reply.instance_id
    print(f"[answered by {instance}]", file=sys.stderr)
    return 0


def _up(args: argparse.Namespace) -> int:
    from .launcher import ConfigError, Launcher, load_config

    try:
        config = load_config(Path(args.file))
        launcher = Launcher(config, args.registry, Path(args.log_dir) if args.log_dir else None)
        launcher.check_ports()
    except ConfigError as exc:
        print(f"smmf up: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_run_up(launcher, args.timeout))


async def _run_up(launcher: Any, timeout: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"starting {len(launcher.config.instances)} instances; registry {launcher.registry_url}", flush=True)
    print(f"logs in {launcher.log_dir}", flush=True)
    await launcher.start()
    code = 0
    try:
        waiting = asyncio.create_task(launcher.wait_registered(timeout))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if waiting.done():
            records = waiting.result()
            print(_table(records), flush=True)
            print("all instances registered; Ctrl-C drains and stops them", flush=True)
            await stopping
        else:
            waiting.cancel()
    except (RuntimeError, TimeoutError) as exc:
        print(f"smmf up: {exc}", file=sys.stderr)
        code = 1
    finally:
        print("stopping: draining and deregistering every instance ...", flush=True)
        await launcher.stop()
        print("stopped", flush=True)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smmf", description="service-oriented multi-model management")
    parser.add_argument("--version", action="version", version=f"smmf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    ls = commands.add_parser("ls", help="list registered instances")
    _registry_arg(ls)
    ls.add_argument("--model", help="only this model's instances")
    ls.add_argument("--json", action="store_true", help="print the records as JSON")
    ls.set_defaults(run=_ls)

    models = commands.add_parser("models", help="list models with their instance counts and states")
    _registry_arg(models)
    models.set_defaults(run=_models)

    for action, what in (
        ("offline", "withdraw an instance (it stays withdrawn until `smmf online`)"),
        ("online", "put a withdrawn instance back"),
        ("drain", "stop new requests, wait for in-flight work, then withdraw"),
        ("restart", "drain, restart the worker, register again"),
    ):
        sub = commands.add_parser(action, help=what)
        sub.add_argument("id", help="instance id (see `smmf ls`)")
        sub.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the sidecar to act")
        _registry_arg(sub)
        sub.set_defaults(run=_control)

    register = commands.add_parser("register", help="register a third-party API through a request template")
    from .worker.backends.template import add_template_arguments

    register.add_argument("--model", required=True)
    register.add_argument("--weight", type=float, default=1.0)
    add_template_arguments(register)
    _registry_arg(register)
    register.set_defaults(run=_register)

    deregister = commands.add_parser("deregister", help="remove a registered record by id")
    deregister.add_argument("id")
    _registry_arg(deregister)
    deregister.set_defaults(run=_deregister)

    chat = commands.add_parser("chat", help="send one chat request through the client library")
    chat.add_argument("prompt")
    chat.add_argument("--model", required=True)
    chat.add_argument("--stream", action="store_true")
    chat.add_argument("--policy", default="least_loaded")
    chat.add_argument("--max-tokens", type=int, default=128)
    _registry_arg(chat)
    chat.set_defaults(run=_chat)

    up = commands.add_parser("up", help="start the workers and sidecars a YAML file describes, in the foreground")
    up.add_argument("file")
    up.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every instance to register")
    up.add_argument("--log-dir", help="where instance logs go (default ~/.smmf/logs)")
    _registry_arg(up)
    up.set_defaults(sync_run=_up)

    _add_worker(commands)
    _add_sidecar(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if hasattr(args, "sync_run"):
        return args.sync_run(args)
    from .client import APIError

    try:
        return asyncio.run(args.run(args))
    except (UnsupportedRegistry, UnknownInstance, Usage) as exc:
        print(f"smmf {args.command}: {exc}", file=sys.stderr)
        return 2
    except (RegistryError, NotActed) as exc:
        print(f"smmf {args.command}: {exc}", file=sys.stderr)
        return 1
    except APIError as exc:
        print(f"smmf {args.command}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
