"""What Linux's /proc says about local processes: who listens on a TCP port, and a process's descendants.

The sidecar uses it to register only its own server: a health probe that
succeeds counts only if the process listening on the upstream's port is the
child it started, or one of that child's descendants.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["descendants", "listeners"]

PROC = Path("/proc")
_LISTEN = "0A"


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def listeners(port: int) -> set[int] | None:
    """PIDs of the processes with a socket listening on TCP `port` (any address); None where /proc cannot tell."""
    if not (PROC / "net" / "tcp").exists():
        return None
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    pids = set()
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or not inodes:
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                pids.add(int(entry.name))
        except OSError:
            continue  # gone, or not ours to read
    return pids


def descendants(pid: int) -> set[int]:
    """Every process whose parent chain reaches `pid` (not `pid` itself)."""
    parents = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found
