"""`smmf worker`, `smmf sidecar` and `smmf up`: the long-running processes."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..instance import Kind
from ..sidecar.probe import UpstreamType
from ..worker.backends import BACKENDS, backend_class
from ..worker.options import add_worker_arguments, worker_from_args
from .options import Commands, add_registry_option, host_port, instance_id, parse_pairs
from .tables import instance_table

if TYPE_CHECKING:
    from ..launcher import Launcher


def _worker(args: argparse.Namespace) -> int:
    from ..worker.server import run

    return run(worker_from_args(args), args.host, args.port)


def _sidecar(args: argparse.Namespace) -> int:
    from ..sidecar.agent import Sidecar, SidecarConfig

    command = args.command_line[1:] if args.command_line[:1] == ["--"] else args.command_line
    config = SidecarConfig(
        model=args.model,
        upstream=args.upstream,
        registry=args.registry,
        kind=Kind(args.kind) if args.kind else None,
        weight=args.weight,
        labels=parse_pairs(args.label, "--label"),
        ttl=args.ttl,
        probe_interval=args.probe_interval,
        load_interval=args.load_interval,
        advertise=args.advertise,
        upstream_type=UpstreamType(args.upstream_type),
        drain_timeout=args.drain_timeout,
        command=command,
        id=args.id,
        max_failed_starts=args.max_failed_starts,
        status_address=args.status_address,
    )
    return asyncio.run(Sidecar(config).run())


def _up(args: argparse.Namespace) -> int:
    from ..launcher import Launcher, load_config

    config = load_config(Path(args.file))
    launcher = Launcher(config, args.registry, Path(args.log_dir) if args.log_dir else None)
    launcher.check()
    return asyncio.run(_run_up(launcher, args.timeout))


async def _run_up(launcher: Launcher, timeout: float) -> int:
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
            print(instance_table(records), flush=True)
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


def _add_worker(commands: Commands) -> None:
    worker = commands.add_parser("worker", help="serve one model over the OpenAI API")
    backends = worker.add_subparsers(dest="backend", required=True, metavar="BACKEND")
    for name in BACKENDS:
        cls = backend_class(name)
        summary = (sys.modules[cls.__module__].__doc__ or name).strip().splitlines()[0]
        sub = backends.add_parser(name, help=summary, description=summary)
        add_worker_arguments(sub, cls)
        sub.set_defaults(run=_worker)


def _add_sidecar(commands: Commands) -> None:
    sidecar = commands.add_parser(
        "sidecar",
        help="register a model server in the registry and keep its record true",
        usage="smmf sidecar --model NAME --upstream URL [options] [-- COMMAND ARGS...]",
    )
    sidecar.add_argument("--model", required=True, help="the model name clients ask for")
    sidecar.add_argument("--upstream", required=True, help="root URL of the server (its /health, /metrics, /v1)")
    add_registry_option(sidecar)
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
    sidecar.add_argument(
        "--id", type=instance_id, help="the instance id (default: host:port of --advertise/--upstream and a model hash)"
    )
    sidecar.add_argument(
        "--max-failed-starts", type=int, default=0, metavar="N",
        help="exit 1 after the server exited N times in a row without becoming healthy (default 0: never)",
    )  # fmt: skip
    sidecar.add_argument(
        "--status-address", type=host_port, metavar="HOST:PORT",
        help="serve /ready, /live and /drain here, for an orchestrator's probes and preStop hook",
    )  # fmt: skip
    sidecar.add_argument(
        "command_line", nargs=argparse.REMAINDER, metavar="COMMAND", help="-- COMMAND ARGS: start and supervise it"
    )
    sidecar.set_defaults(run=_sidecar)


def _add_up(commands: Commands) -> None:
    up = commands.add_parser("up", help="start the workers and sidecars a YAML file describes, in the foreground")
    up.add_argument("file")
    up.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every instance to register")
    up.add_argument("--log-dir", help="where instance logs go (default ~/.smmf/logs)")
    add_registry_option(up)
    up.set_defaults(run=_up)


def add_commands(commands: Commands) -> None:
    _add_up(commands)
    _add_worker(commands)
    _add_sidecar(commands)
