"""Real etcd processes for the tests: single members and small clusters on free loopback ports.

Each member runs the `etcd` binary from Debian's etcd-server package with a
temporary data dir, is waited for until it serves reads, and is stopped by
its PID.  A stopped member keeps its ports and data, so it can be started
again to test recovery.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from smmf.sidecar.child import dying_with_parent
from tests.support.pki import Pki
from tests.support.processes import stop_process


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EtcdMember:
    def __init__(
        self,
        name: str,
        data_dir: Path,
        client_port: int,
        peer_port: int,
        initial_cluster: str,
        pki: Pki | None = None,
        extra: tuple[str, ...] = (),
        host: str = "127.0.0.1",
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        #: The address it listens on, and the command it runs inside (a test host's `ip netns exec`).
        self.host = host
        self.prefix = prefix
        self.pki = pki
        self.extra = extra
        self.data_dir = data_dir
        self.client_port = client_port
        self.peer_port = peer_port
        self.initial_cluster = initial_cluster
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{name}.log"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    def start(self, cluster_state: str = "new") -> None:
        binary = shutil.which("etcd")
        if binary is None:
            raise RuntimeError("the etcd binary is missing: install the etcd-server package (make test does)")
        client_url = f"{'https' if self.pki else 'http'}://{self.endpoint}"
        peer_url = f"http://{self.host}:{self.peer_port}"
        args = [
            binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", cluster_state,
            "--initial-cluster-token", "smmf-test",
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
            "--log-level", "warn",
            *self.extra,
        ]  # fmt: skip
        if self.pki is not None:
            args += [
                "--cert-file", str(self.pki.cert("server")), "--key-file", str(self.pki.key("server")),
                "--trusted-ca-file", str(self.pki.ca), "--client-cert-auth",
            ]  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed with it
        self.proc = subprocess.Popen(dying_with_parent([*self.prefix, *args]), stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Poll /health until the member answers with a leader elected."""
        deadline = time.monotonic() + timeout
        url = f"{'https' if self.pki else 'http'}://{self.endpoint}/health"
        context = None
        if self.pki is not None:
            context = ssl.create_default_context(cafile=self.pki.ca)
            context.load_cert_chain(self.pki.cert("client"), self.pki.key("client"))
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                log_tail = self.log_path.read_text()[-2000:]
                raise RuntimeError(f"etcd {self.name} exited with {self.proc.returncode}: {log_tail}")
            try:
                with urllib.request.urlopen(url, timeout=1, context=context) as reply:
                    if b'"health":"true"' in reply.read():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"etcd {self.name} not ready after {timeout}s: {self.log_path.read_text()[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop by PID and wait; SIGKILL if it does not go."""
        if self.proc is not None:
            stop_process(self.proc, sig)
        self.proc = None


class EtcdCluster:
    """`size` members on loopback; `url(prefix)` names all of them for smmf."""

    def __init__(
        self,
        base_dir: Path,
        size: int = 1,
        client_ports: list[int] | None = None,
        pki: Pki | None = None,
        extra: tuple[str, ...] = (),
        host: str = "127.0.0.1",
        prefix: tuple[str, ...] = (),
    ) -> None:
        clients = client_ports or [free_port() for _ in range(size)]
        ports = [(client, free_port()) for client in clients]
        initial = ",".join(f"m{i}=http://{host}:{peer}" for i, (_, peer) in enumerate(ports))
        self.members = [
            EtcdMember(f"m{i}", base_dir / f"m{i}", client, peer, initial, pki, extra, host, prefix)
            for i, (client, peer) in enumerate(ports)
        ]

    def start(self) -> EtcdCluster:
        """Start every member and wait until all serve; on failure, stop them all before raising."""
        try:
            for member in self.members:
                member.start()
            for member in self.members:
                member.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def url(self, prefix: str = "/smmf") -> str:
        return "etcd://" + ",".join(m.endpoint for m in self.members) + prefix


def _gateway(member: EtcdMember, path: str, body: dict[str, object]) -> None:
    """One call to etcd's JSON gateway (the v3 API over HTTP), as etcdctl would make it over gRPC."""
    request = urllib.request.Request(
        f"http://{member.endpoint}/v3/{path}", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        reply.read()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def enable_auth(member: EtcdMember, prefix: str, users: dict[str, tuple[str, str]]) -> None:
    """Turn on etcd's auth with a root user and `users` {name: (password, "READ" | "READWRITE")} on `prefix`.

    The roles are those the README advises: one per kind of access, on the
    smmf prefix's key range only.
    """
    start = prefix.rstrip("/") + "/"
    end = start[:-1] + chr(ord("/") + 1)
    _gateway(member, "auth/user/add", {"name": "root", "password": "root-test-only"})
    _gateway(member, "auth/role/add", {"name": "root"})
    _gateway(member, "auth/user/grant", {"user": "root", "role": "root"})
    for name, (password, access) in users.items():
        role = f"smmf-{name}"
        _gateway(member, "auth/role/add", {"name": role})
        permission = {"permType": access, "key": _b64(start), "range_end": _b64(end)}
        _gateway(member, "auth/role/grant", {"name": role, "perm": permission})
        _gateway(member, "auth/user/add", {"name": name, "password": password})
        _gateway(member, "auth/user/grant", {"user": name, "role": role})
    _gateway(member, "auth/enable", {})
