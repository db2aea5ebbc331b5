"""`smmf up FILE.yaml`: start the workers and sidecars a file describes, as local processes, and stop them cleanly.

Each instance runs as one sidecar process supervising its worker, so what
runs locally is exactly what runs on a real host.  Their output goes to log
files beside the registry (the terminal shows progress and one table).
Ctrl-C (or SIGTERM) drains and stops every sidecar, which deregisters its
instance and stops its worker.

Everything that can be checked is checked before any process starts
(`Launcher.check`): the file, the registry URL, each worker's options, the
ports.  A worker that still fails to start makes its sidecar give up after
`FAILED_STARTS` tries, and `up` with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigurationError
from .instance import Instance
from .registry import default_url, open_registry
from .worker.backends import BACKENDS, backend_class
from .worker.options import StrictParser, add_worker_arguments, backend_from_args

#: Starts of a worker that exits before becoming healthy after which its sidecar, and `smmf up`, give up.
FAILED_STARTS = 3

__all__ = ["InstanceSpec", "Launcher", "LocalConfig", "SidecarOptions", "load_config", "port_free"]


class SidecarOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl: float = Field(10.0, gt=0)
    probe_interval: float = Field(1.0, gt=0)
    load_interval: float = Field(1.0, gt=0)
    drain_timeout: float = Field(30.0, ge=0)


class InstanceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    model: str = Field(min_length=1)
    backend: str
    port: int = Field(ge=1, le=65535)
    host: str = "127.0.0.1"
    weight: float = Field(1.0, gt=0)
    labels: dict[str, str] = Field(default_factory=dict)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    sidecar: SidecarOptions = Field(default_factory=SidecarOptions)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"unknown backend {value!r}; choose one of {', '.join(BACKENDS)}")
        return value


class LocalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    registry: str | None = None
    instances: list[InstanceSpec] = Field(min_length=1)

    @field_validator("instances")
    @classmethod
    def _unique(cls, value: list[InstanceSpec]) -> list[InstanceSpec]:
        for attr in ("name", "port"):
            seen = [getattr(spec, attr) for spec in value]
            dupes = sorted({str(x) for x in seen if seen.count(x) > 1})
            if dupes:
                raise ValueError(f"two instances share the {attr} {', '.join(dupes)}")
        return value


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), node)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
    return None if node is None else node.start_mark.line + 1


def load_config(path: Path) -> LocalConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"{path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigurationError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    try:
        return LocalConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:5]:
            loc = tuple(err["loc"])
            field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "file"
            line = _line_of(root, loc)
            problems.append(f"{path}:{line or '?'}: {field}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigurationError("\n".join(problems)) from None


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on `host:port` now, binding the way the worker's server does.

    aiohttp sets SO_REUSEADDR, so connections of a server that just stopped
    (in TIME_WAIT) do not keep the port; a check without it would.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class Launcher:
    def __init__(self, config: LocalConfig, registry: str | None = None, log_dir: Path | None = None) -> None:
        self.config = config
        self.registry_url = registry or config.registry or default_url()
        self.log_dir = log_dir or Path.home() / ".smmf" / "logs"
        self.processes: dict[str, asyncio.subprocess.Process] = {}

    def command(self, spec: InstanceSpec) -> list[str]:
        me = [sys.executable, "-m", "smmf.cli"]
        sidecar = [
            *me, "sidecar", "--registry", self.registry_url, "--model", spec.model,
            "--upstream", f"http://{spec.host}:{spec.port}", "--weight", str(spec.weight),
            "--ttl", str(spec.sidecar.ttl), "--probe-interval", str(spec.sidecar.probe_interval),
            "--load-interval", str(spec.sidecar.load_interval), "--drain-timeout", str(spec.sidecar.drain_timeout),
            "--max-failed-starts", str(FAILED_STARTS),
        ]  # fmt: skip
        for key, value in spec.labels.items():
            sidecar += ["--label", f"{key}={value}"]
        return [*sidecar, "--label", f"name={spec.name}", "--", *me, "worker", spec.backend, *self._worker_args(spec)]

    def check(self) -> None:
        """Every configuration error that can be found before a process starts: `ConfigurationError` names it."""
        if urlsplit(self.registry_url).scheme == "memory":
            raise ConfigurationError(
                f"registry {self.registry_url}: a memory registry lives in one process, and `smmf up` runs a "
                "process per sidecar; use a file:// or etcd:// registry"
            )
        open_registry(self.registry_url)  # parses the URL, and checks a file registry's directory exists
        for spec in self.config.instances:
            parser = StrictParser(prog=f"instance {spec.name!r}")
            add_worker_arguments(parser, backend_class(spec.backend))
            try:
                backend_from_args(parser.parse_args(self._worker_args(spec)))
            except ConfigurationError as exc:
                raise ConfigurationError(f"instance {spec.name!r} ({spec.backend}): {exc}") from None
        busy = [s for s in self.config.instances if not port_free(s.host, s.port)]
        if busy:
            names = "; ".join(f"port {s.port} of instance {s.name!r} is already in use" for s in busy)
            raise ConfigurationError(names)

    @staticmethod
    def _worker_args(spec: InstanceSpec) -> list[str]:
        return ["--model", spec.model, "--host", spec.host, "--port", str(spec.port), *spec.args]

    async def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.config.instances:
            log = open(self.log_dir / f"{spec.name}.log", "ab")  # noqa: SIM115 - handed to the child
            self.processes[spec.name] = await asyncio.create_subprocess_exec(
                *self.command(spec), stdout=log, stderr=log, env={**os.environ, **spec.env}, start_new_session=True
            )
            log.close()

    async def wait_registered(self, timeout: float, progress: bool = True) -> list[Instance]:
        """Until every instance is registered; raises with the log of one that exited."""
        deadline = time.monotonic() + timeout
        async with open_registry(self.registry_url) as registry:
            shown = -1
            while True:
                for name, proc in self.processes.items():
                    if proc.returncode is not None:
                        tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-1500:]
                        raise RuntimeError(f"instance {name!r} stopped (exit {proc.returncode}):\n{tail}")
                mine = {r.labels["name"]: r for r in (await registry.list()).records if self._is_mine(r)}
                if progress and len(mine) != shown:
                    shown = len(mine)
                    print(f"  {shown}/{len(self.processes)} instances registered", flush=True)
                if len(mine) == len(self.processes):
                    return [mine[s.name] for s in self.config.instances]
                if time.monotonic() > deadline:
                    missing = sorted(set(self.processes) - set(mine))
                    raise TimeoutError(
                        f"not registered after {timeout:g}s: {', '.join(missing)} (logs in {self.log_dir})"
                    )
                await asyncio.sleep(0.25)

    def _is_mine(self, record: Instance) -> bool:
        spec = next((s for s in self.config.instances if s.name == record.labels.get("name")), None)
        return spec is not None and record.endpoint == f"http://{spec.host}:{spec.port}/v1"

    async def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM every sidecar (it drains, deregisters and stops its worker); SIGKILL what is left."""
        for proc in self.processes.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        waits = [asyncio.wait_for(proc.wait(), timeout) for proc in self.processes.values()]
        for name, result in zip(self.processes, await asyncio.gather(*waits, return_exceptions=True), strict=True):
            if isinstance(result, TimeoutError):
                print(f"  {name} did not stop within {timeout:g}s; killing it", file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.processes[name].pid, signal.SIGKILL)
                await self.processes[name].wait()
