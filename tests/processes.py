"""smmf processes for the tests: started as real OS processes, read for their URL, stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class SmmfProcess:
    """`python -m smmf.cli ARGS...`; stdout's first line is read as the URL when `url_line` is set."""

    def __init__(
        self,
        args: list[str],
        log_dir: Path,
        *,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        cpus: str | None = None,
    ):
        self.args = args
        #: Pinned to these CPUs (taskset's list syntax) when given and taskset exists: benchmarks keep the
        #: server and the load generator on different cores.
        self.prefix = ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []
        self.log_path = log_dir / f"smmf-{args[0]}-{time.monotonic_ns()}.log"
        self.python = python
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, url_timeout: float = 60.0, expect_url: bool = True) -> SmmfProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, self.python, "-m", "smmf.cli", *self.args],
                stdout=subprocess.PIPE if expect_url else log, stderr=log, env=self.env, cwd=ROOT,
            )  # fmt: skip
        if not expect_url:
            return self
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(url_timeout)
        if not line or not line[0].startswith(b"http"):
            self.stop()
            raise RuntimeError(f"{self.args[:2]} printed no URL: {self.log()[-3000:]}")
        self.url = line[0].decode().strip()
        return self

    def wait_healthy(self, timeout: float = 60.0) -> SmmfProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"not healthy after {timeout}s: {self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def children(self) -> list[int]:
        """PIDs of this process's direct children (from /proc)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []
