"""smmf processes for the tests: started as real OS processes, read for their URL, stopped by PID.

Every process the suite starts, and every process those start, carries the
run's marker in its environment (`RUN_MARKER`), so the session's end can
find any that a failed or timed-out test left behind (`leftovers`) and stop
them (`reap`).  Each is also started so that Linux stops it if the test
process itself is killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Self

from smmf.sidecar.child import dying_with_parent

ROOT = Path(__file__).resolve().parents[2]

#: The environment variable that marks every process of one test run.
RUN_MARKER = "SMMF_TEST_RUN"


def mark_run() -> str:
    """Mark this process's environment, so every process started from now on inherits the run's marker.

    A pytest-xdist worker inherits its controller's marker and takes its own,
    so its reaper never stops another worker's processes (each worker's own
    `/proc/PID/environ` keeps the controller's marker; its children get the new one).
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ[RUN_MARKER] = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return os.environ.setdefault(RUN_MARKER, f"{os.getpid()}-{uuid.uuid4().hex[:8]}")


def leftovers() -> dict[int, str]:
    """Live processes (not zombies) carrying this run's marker, other than this one: pid → command line."""
    marker = f"{RUN_MARKER}={os.environ.get(RUN_MARKER, '')}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue  # it exited while we looked
    return found


def reap(pids: list[int], grace: float = 10.0) -> None:
    """SIGTERM each, then SIGKILL whatever is still alive after `grace` seconds."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid in leftovers() for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        _signal(pid, signal.SIGKILL)


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    """Send `sig` to a process we started and wait for it; SIGKILL after `timeout` s. Its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class ServerProcess(ABC):
    """A test server run as its own process on loopback, its output in `log_path`, dying with this process.

    `stop()` kills it by PID: a server that is gone answers nothing more, not
    even what it was blocking on.  Started again on the same port it is empty,
    as a server restarted without its data.
    """

    #: Named in errors.
    name = "test server"
    #: Seconds `start()` waits for `answers()`.
    start_timeout = 30.0

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the server."""

    @abstractmethod
    def answers(self) -> bool:
        """Whether it answers yet."""

    def start(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                dying_with_parent(self.command()), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {self.name} exited: {self.log_path.read_text()[-2000:]}")
            if self.answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the {self.name} did not answer within {self.start_timeout}s")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGKILL)
        self.proc = None


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


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
        prefix: list[str] | None = None,
    ):
        self.args = args
        #: Pinned to these CPUs (taskset's list syntax) when given and taskset exists: benchmarks keep the
        #: server and the load generator on different cores.
        self.prefix = ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []
        #: Run inside this command (`ip netns exec NS`: a test host of `tests.support.netns`).
        self.prefix = [*(prefix or []), *self.prefix]
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
                dying_with_parent([*self.prefix, self.python, "-m", "smmf.cli", *self.args]),
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
        code = stop_process(self.proc, sig, timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def children(self) -> list[int]:
        """PIDs of this process's direct children (from /proc)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []
