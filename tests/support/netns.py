"""Test hosts built out of Linux network namespaces: one bridge, one namespace per host, removed afterwards.

Each host is a namespace with one veth link to a bridge in the test's own
namespace, and an address in 198.18.0.0/15 (set aside for network tests,
RFC 2544) that the test makes and removes itself.  The bridge has an address
too, so the test process can watch the registry as an observer.  Cutting a
host's link (`cut`) takes its veth's bridge end down; a partition between
two hosts (`partition`) is a pair of blackhole routes, so each still reaches
everyone else.  Needs root; `available()` says why not where it cannot.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import dataclass

__all__ = ["Host", "Network", "available"]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def available() -> str | None:
    """None when namespaces can be made here; otherwise why not, for a skip message."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    probe = f"smmf-probe-{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    #: The veth end on the bridge, which `cut` takes down.
    link: str

    @property
    def run(self) -> list[str]:
        """The prefix that runs a command on this host."""
        return ["ip", "netns", "exec", self.namespace]


class Network:
    def __init__(self) -> None:
        self.subnet = random.randrange(256)  # 198.18.<subnet>.0/24, so two runs on one machine do not meet
        self.tag = f"{os.getpid() % 10000:04d}{self.subnet:02x}"
        self.bridge = f"sb{self.tag}"
        self.hosts: dict[str, Host] = {}
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.address(254)}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def address(self, last: int) -> str:
        return f"198.18.{self.subnet}.{last}"

    @property
    def observer(self) -> str:
        """The test process's own address on the bridge."""
        return self.address(254)

    def add(self, name: str) -> Host:
        number = len(self.hosts) + 1
        host = Host(name, f"smmf-{self.tag}-{name}", self.address(number), f"sv{self.tag}{number}")
        inside = f"si{self.tag}{number}"
        _ip("netns", "add", host.namespace)
        self.hosts[name] = host
        _ip("link", "add", host.link, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", host.namespace)
        _ip("link", "set", host.link, "master", self.bridge, "up")
        _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", inside)
        _ip("-n", host.namespace, "link", "set", inside, "up")
        _ip("-n", host.namespace, "link", "set", "lo", "up")
        return host

    def cut(self, host: Host) -> None:
        _ip("link", "set", host.link, "down")

    def restore(self, host: Host) -> None:
        _ip("link", "set", host.link, "up")

    def partition(self, a: Host, b: Host) -> None:
        """a and b no longer reach each other; both still reach every other host."""
        _ip("-n", a.namespace, "route", "add", "blackhole", f"{b.address}/32")
        _ip("-n", b.namespace, "route", "add", "blackhole", f"{a.address}/32")

    def heal(self, a: Host, b: Host) -> None:
        _ip("-n", a.namespace, "route", "del", "blackhole", f"{b.address}/32", check=False)
        _ip("-n", b.namespace, "route", "del", "blackhole", f"{a.address}/32", check=False)

    def close(self) -> None:
        """Remove every namespace (their veths go with them) and the bridge."""
        for host in self.hosts.values():
            _ip("netns", "del", host.namespace, check=False)
            _ip("link", "del", host.link, check=False)
        _ip("link", "del", self.bridge, check=False)
