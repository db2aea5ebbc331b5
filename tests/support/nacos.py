"""The Nacos emulator (`nacos_emulator.py`) as a separate process on free loopback ports, stopped by its PID.

It takes two ports, as Nacos does: HTTP on `port` and gRPC on `port + 1000`.
A stopped emulator keeps its ports and can be started again, empty: as a
Nacos server restarted without its data.
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.processes import ServerProcess

#: A Nacos server's gRPC port is its HTTP port plus this.  Defined here, not in the emulator, because the
#: conftest imports this module in the vLLM environment too, which has no nacos-sdk-python.
GRPC_OFFSET = 1000


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair() -> int:
    """A free port whose neighbour 1000 above is free too."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port + GRPC_OFFSET < 65536 and _free(port + GRPC_OFFSET):
            return port
    raise RuntimeError("no free pair of ports (p, p + 1000) on 127.0.0.1")


class NacosEmulator(ServerProcess):
    name = "Nacos emulator"
    start_timeout = 60.0

    def __init__(
        self,
        log_dir: Path,
        *,
        port: int | None = None,
        keep_alive: float = 20.0,
        user_env: str | None = None,
        password_env: str | None = None,
    ) -> None:
        port = port or free_port_pair()
        super().__init__(port, log_dir / f"nacos-{port}.log")
        self.keep_alive = keep_alive
        self.user_env = user_env
        self.password_env = password_env
        self.log_dir = log_dir

    def url(self, group: str = "smmf", **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"group": group, "dir": str(self.log_dir / "sdk"), **options}.items())
        return f"nacos://{self.address}?{query}"

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "tests.support.nacos_emulator", "--port", str(self.port)]
        command += ["--keep-alive", str(self.keep_alive)]
        if self.user_env and self.password_env:
            command += ["--user-env", self.user_env, "--password-env", self.password_env]
        return command

    def answers(self) -> bool:
        try:
            self.connections()
        except (OSError, urllib.error.URLError):
            return False
        return True

    def _call(self, method: str, path: str) -> Any:
        request = urllib.request.Request(f"http://{self.address}{path}", method=method)
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())

    def connections(self) -> dict[str, Any]:
        """The registered connections: id → labels and the services each publishes in."""
        answer: dict[str, Any] = self._call("GET", "/_emulator/connections")
        return answer

    def publishing(self, service: str) -> bool:
        """Whether any connection publishes instances in `service` (the server's own view, with no push delay)."""
        return any(s.endswith("@@" + service) for c in self.connections().values() for s in c["services"])

    def drop(self, service: str) -> list[str]:
        """Unregister the connections that publish in `service`, as the server does with one that stopped answering."""
        answer: dict[str, list[str]] = self._call("POST", f"/_emulator/drop?service={service}")
        return answer["dropped"]
