"""Registry access control against real etcd: users and roles (`--auth`), and TLS with client certificates.

Issue 12, finding 3: credentials in a URL were printed in the error, etcd
with auth on made `smmf ls` die with a traceback, and TLS options were
silently ignored, leaving the connection in plaintext.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from smmf.admin import AdminAction
from smmf.client import ModelClient
from smmf.errors import RegistryDenied, RegistryUnavailable, UnsupportedRegistry
from smmf.registry import open_registry
from tests.support.etcd import EtcdCluster, enable_auth
from tests.support.helpers import Mirror, eventually, record
from tests.support.pki import Pki

StartEtcd = Callable[..., EtcdCluster]

WRITER_PASSWORD = "writer-pw-7f3a"
READER_PASSWORD = "reader-pw-91c2"


def smmf(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smmf.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.fixture
def users(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "W_USER": "writer", "W_PASS": WRITER_PASSWORD, "R_USER": "reader", "R_PASS": READER_PASSWORD,
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)


async def test_a_read_only_user_routes_but_cannot_steer_or_register(start_etcd: StartEtcd, users: None) -> None:
    cluster = start_etcd(extra=("--auth-token-ttl", "2"))
    enable_auth(
        cluster.members[0], "/sec", {"writer": (WRITER_PASSWORD, "READWRITE"), "reader": (READER_PASSWORD, "READ")}
    )
    base = cluster.url("/sec")
    async with (
        open_registry(f"{base}?user_env=W_USER&password_env=W_PASS") as writer,
        open_registry(f"{base}?user_env=R_USER&password_env=R_PASS") as reader,
    ):
        rec = record("m")
        lease = await writer.register(rec, 5.0)
        keepalive = asyncio.create_task(lease.keepalive())
        try:
            assert [r.id for r in (await reader.list()).records] == [rec.id]
            async with ModelClient(reader) as client:
                assert [r.id for r in client.models()["m"]] == [rec.id], "a reader watches and routes"
            with pytest.raises(RegistryDenied, match="permission denied") as denied:
                await reader.put_admin(rec.id, AdminAction.OFFLINE)
            assert "'reader'" in str(denied.value) and READER_PASSWORD not in str(denied.value)
            with pytest.raises(RegistryDenied):
                await reader.register(record("m"), None)
            await asyncio.sleep(3)  # past the token's TTL: both authenticate again by themselves
            assert [r.id for r in (await reader.list()).records] == [rec.id]
            await writer.put_admin(rec.id, AdminAction.OFFLINE)
            assert lease.reacquired == 0
        finally:
            keepalive.cancel()
            await lease.revoke()

    listed = smmf("ls", "--registry", f"{base}?user_env=R_USER&password_env=R_PASS")
    assert listed.returncode == 0 and listed.stdout.startswith("ID"), listed.stderr
    anonymous = smmf("ls", "--registry", base)
    assert anonymous.returncode == 1 and "Traceback" not in anonymous.stderr
    assert "user name is empty" in anonymous.stderr and "user_env=" in anonymous.stderr
    wrong = smmf("ls", "--registry", f"{base}?user_env=R_USER&password_env=W_USER")
    assert wrong.returncode == 1 and "authentication failed" in wrong.stderr and "Traceback" not in wrong.stderr


def test_credentials_in_a_registry_url_are_refused_without_being_shown(etcd: EtcdCluster) -> None:
    host = etcd.members[0].endpoint
    result = smmf("ls", "--registry", f"etcd://writer:{WRITER_PASSWORD}@{host}/sec")
    assert result.returncode == 2 and WRITER_PASSWORD not in result.stderr and "user_env" in result.stderr
    with pytest.raises(UnsupportedRegistry) as refused:
        open_registry(f"etcd://writer:{WRITER_PASSWORD}@{host}/sec")
    assert WRITER_PASSWORD not in str(refused.value)
    missing = smmf("ls", "--registry", f"etcd://{host}/sec?user_env=NO_SUCH_VAR&password_env=NO_SUCH_PASS")
    assert missing.returncode == 2 and "NO_SUCH_VAR" in missing.stderr and "Traceback" not in missing.stderr


async def test_etcd_over_tls_with_a_client_certificate(start_etcd: StartEtcd, tmp_path: Path) -> None:
    pki = Pki.make(tmp_path / "pki")
    cluster = start_etcd(pki=pki)
    host = cluster.members[0].endpoint
    tls = f"etcd://{host}/tls?cacert={pki.ca}&cert={pki.cert('client')}&key={pki.key('client')}"
    async with open_registry(tls) as registry:
        mirror = Mirror(registry.watch())
        rec = record("m")
        lease = await registry.register(rec, 5.0)
        await eventually(lambda: mirror.holds(rec.id), 10)
        await mirror.close()
        await lease.revoke()
    async with open_registry(f"etcd://{host}/tls?timeout=1") as plaintext:
        with pytest.raises(RegistryUnavailable):
            await plaintext.list()
    async with open_registry(f"etcd://{host}/tls?timeout=1&cacert={pki.ca}") as no_certificate:
        with pytest.raises(RegistryUnavailable):
            await no_certificate.list()
    with pytest.raises(UnsupportedRegistry, match="cacrt"):
        open_registry(f"etcd://{host}/tls?cacrt={pki.ca}")
    with pytest.raises(UnsupportedRegistry, match="key="):
        open_registry(f"etcd://{host}/tls?cacert={pki.ca}&cert={pki.cert('client')}")
