"""The `smmf` command as an operator runs it: a real subprocess against a real registry file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from smmf.registry import open_registry
from tests.support.helpers import record


def smmf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smmf.cli", *args], capture_output=True, text=True, timeout=60)


async def test_ls_shows_registered_instances(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/r.db"
    async with open_registry(url) as registry:
        await registry.register(record("gemma", backend="llama_cpp"), ttl=None)
        await registry.register(record("minilm", kind="embedding"), ttl=None)

    table = smmf("ls", "--registry", url)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["ID", "MODEL", "KIND"] and len(rows) == 2
    assert "llama_cpp" in table.stdout and "embedding" in table.stdout

    only = smmf("ls", "--registry", url, "--model", "minilm", "--json")
    assert only.returncode == 0
    (data,) = json.loads(only.stdout)
    assert data["model"] == "minilm" and data["schema"] == 1


def test_bad_registry_urls_exit_cleanly(tmp_path: Path) -> None:
    unknown = smmf("ls", "--registry", "zk://127.0.0.1:2181")
    assert unknown.returncode == 2 and "supported schemes" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    blocker = tmp_path / "file"
    blocker.write_text("")
    mistyped = smmf("ls", "--registry", f"file://{blocker}/r.db")
    assert mistyped.returncode == 2 and "is not a directory" in mistyped.stderr, mistyped.stderr
    assert "Traceback" not in mistyped.stderr

    (tmp_path / "r.db").mkdir()  # the directory exists; the database cannot be opened
    unreachable = smmf("ls", "--registry", f"file://{tmp_path}/r.db")
    assert unreachable.returncode == 1 and "unavailable" in unreachable.stderr, unreachable.stderr
    assert "Traceback" not in unreachable.stderr
