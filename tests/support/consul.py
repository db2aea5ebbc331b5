"""The Consul emulator (`consul_emulator.py`) as a separate process on a free loopback port, stopped by its PID.

A stopped emulator keeps its port and can be started again, empty: as a
Consul agent restarted without its data.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.etcd import free_port
from tests.support.processes import start_server, stop_process


class ConsulEmulator:
    def __init__(
        self,
        log_dir: Path,
        *,
        port: int | None = None,
        token_env: str | None = None,
        reaper_speedup: float = 1.0,
    ) -> None:
        self.port = port or free_port()
        self.token_env = token_env
        self.reaper_speedup = reaper_speedup
        self.log_path = log_dir / f"consul-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, prefix: str = "/smmf", **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"consul://{self.address}{prefix}" + (f"?{query}" if query else "")

    def start(self, timeout: float = 30.0) -> ConsulEmulator:
        command = [sys.executable, "-m", "tests.support.consul_emulator", "--port", str(self.port)]
        command += ["--reaper-speedup", str(self.reaper_speedup)]
        if self.token_env:
            command += ["--token-env", self.token_env]
        self.proc = start_server(command, self.log_path, self._answers, "Consul emulator", timeout)
        return self

    def _answers(self) -> bool:
        try:
            self.call("GET", "/v1/catalog/services")
        except urllib.error.HTTPError:
            return True  # it answers (403 with ACLs on)
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """Kill it: an agent that is gone answers nothing more, not even the queries it was blocking."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGKILL)
        self.proc = None

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
