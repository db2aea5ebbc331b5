"""The Consul emulator (`consul_emulator.py`) as a separate process on a free loopback port, stopped by its PID.

A stopped emulator keeps its port and can be started again, empty: as a
Consul agent restarted without its data.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.etcd import free_port
from tests.support.processes import ServerProcess


class ConsulEmulator(ServerProcess):
    name = "Consul emulator"

    def __init__(
        self,
        log_dir: Path,
        *,
        port: int | None = None,
        token_env: str | None = None,
        reaper_speedup: float = 1.0,
    ) -> None:
        port = port or free_port()
        super().__init__(port, log_dir / f"consul-{port}.log")
        self.token_env = token_env
        self.reaper_speedup = reaper_speedup

    def url(self, prefix: str = "/smmf", **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"consul://{self.address}{prefix}" + (f"?{query}" if query else "")

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "tests.support.consul_emulator", "--port", str(self.port)]
        command += ["--reaper-speedup", str(self.reaper_speedup)]
        if self.token_env:
            command += ["--token-env", self.token_env]
        return command

    def answers(self) -> bool:
        try:
            self.call("GET", "/v1/catalog/services")
        except urllib.error.HTTPError:
            return True  # it answers (403 with ACLs on)
        except OSError:
            return False
        return True

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """One HTTP call, as curl would make it; the decoded JSON answer (None for an empty one)."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(f"http://{self.address}{path}", data=data, method=method)
        if token:
            request.add_header("X-Consul-Token", token)
        with urllib.request.urlopen(request, timeout=10) as reply:
            raw = reply.read()
        return json.loads(raw) if raw else None

    def reset_index(self) -> None:
        self.call("PUT", "/_emulator/reset-index")
