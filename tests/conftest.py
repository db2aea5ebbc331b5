"""Fixtures: registries of every driver, and real etcd servers started per session or per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from etcd_server import EtcdCluster
from processes import SmmfProcess
from smmf.registry_drivers import Registry, open_registry

DRIVERS = ["memory", "file", "etcd"]


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One real etcd member shared by the tests that only read and write keys (each under its own prefix)."""
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def start_etcd(tmp_path: Path) -> Iterator[Callable[..., EtcdCluster]]:
    """Start a private etcd cluster for a test that stops or kills members; all are stopped at teardown."""
    clusters: list[EtcdCluster] = []

    def start(size: int = 1, client_ports: list[int] | None = None) -> EtcdCluster:
        cluster = EtcdCluster(tmp_path / f"etcd{len(clusters)}", size, client_ports)
        clusters.append(cluster)
        return cluster.start()

    yield start
    for cluster in clusters:
        cluster.stop()


def registry_url_for(driver: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    name = uuid.uuid4().hex[:8]
    if driver == "memory":
        return f"memory://{name}"
    if driver == "file":
        return f"file://{tmp_path}/registry.db"
    return request.getfixturevalue("etcd").url(f"/t-{name}")


@pytest.fixture(params=DRIVERS)
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return registry_url_for(request.param, tmp_path, request)


@pytest.fixture(params=["file", "etcd"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A registry that separate processes can share: the embedded file, or real etcd (under its own prefix)."""
    if request.param == "file":
        return f"file://{tmp_path}/registry.db"
    return request.getfixturevalue("etcd").url(f"/t-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def registry(registry_url: str) -> AsyncIterator[Registry]:
    async with open_registry(registry_url) as reg:
        yield reg


@pytest.fixture
def start_smmf(tmp_path: Path) -> Iterator[Callable[..., SmmfProcess]]:
    """Start `smmf ...` processes (workers print their URL first); all are stopped by PID at teardown."""
    started: list[SmmfProcess] = []

    def start(
        *args: str, healthy: bool = True, expect_url: bool = True, timeout: float = 60.0, **kwargs: object
    ) -> SmmfProcess:
        process = SmmfProcess(list(args), tmp_path, **kwargs)  # type: ignore[arg-type]
        started.append(process)
        process.start(url_timeout=timeout, expect_url=expect_url)
        return process.wait_healthy(timeout) if healthy else process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def start_worker(start_smmf: Callable[..., SmmfProcess]) -> Callable[..., SmmfProcess]:
    """`start_worker("sim", "--model", "m", ...)`: a worker on a free loopback port, healthy."""

    def start(backend: str, *args: str, **kwargs: object) -> SmmfProcess:
        return start_smmf("worker", backend, "--port", "0", *args, **kwargs)

    return start
