"""Fixtures: registries of every driver, real etcd servers and smmf processes; and the run's process reaper.

Every process the suite starts inherits the run's marker (see
`tests.support.processes`).  When the session ends, any such process still
alive was left behind by a test or fixture that did not stop it: it is
stopped, and the run fails with an error naming it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import pytest

from smmf.registry import Registry, open_registry
from tests.support.consul import ConsulEmulator
from tests.support.etcd import EtcdCluster
from tests.support.nacos import NacosEmulator
from tests.support.processes import SmmfProcess, leftovers, mark_run, reap
from tests.support.upstream_app import Upstream

mark_run()

DRIVERS = ["memory", "file", "etcd", "consul", "nacos"]


class _Server(Protocol):
    def start(self) -> Any: ...
    def stop(self) -> None: ...


S = TypeVar("S", bound=_Server)


def _one_for_the_session(server: S) -> Iterator[S]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _each_stopped(make: Callable[..., S]) -> Iterator[Callable[..., S]]:
    """A `start(**options)` for a test's private servers (`make(n, **options)` builds the n-th); all stopped after."""
    started: list[S] = []

    def start(*args: Any, **options: Any) -> S:
        server = make(len(started), *args, **options)
        started.append(server)
        return cast(S, server.start())

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One real etcd member shared by the tests that only read and write keys (each under its own prefix)."""
    yield from _one_for_the_session(EtcdCluster(tmp_path_factory.mktemp("etcd")))


@pytest.fixture(scope="session")
def consul(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulEmulator]:
    """One Consul emulator shared by the tests that only register and read (each under its own prefix)."""
    yield from _one_for_the_session(ConsulEmulator(tmp_path_factory.mktemp("consul")))


@pytest.fixture(scope="session")
def nacos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NacosEmulator]:
    """One Nacos emulator shared by the tests that only register and read (each in its own group)."""
    yield from _one_for_the_session(NacosEmulator(tmp_path_factory.mktemp("nacos")))


@pytest.fixture
def start_consul(tmp_path: Path) -> Iterator[Callable[..., ConsulEmulator]]:
    """Start a private Consul emulator for a test that stops it or sets its clock; all are stopped at teardown."""
    yield from _each_stopped(lambda n, **options: ConsulEmulator(tmp_path, **options))


@pytest.fixture
def start_nacos(tmp_path: Path) -> Iterator[Callable[..., NacosEmulator]]:
    """Start a private Nacos emulator for a test that stops or restarts it; all are stopped at teardown."""
    yield from _each_stopped(lambda n, **options: NacosEmulator(tmp_path / f"nacos{n}", **options))


@pytest.fixture
def start_etcd(tmp_path: Path) -> Iterator[Callable[..., EtcdCluster]]:
    """Start a private etcd cluster for a test that stops or kills members; all are stopped at teardown."""
    yield from _each_stopped(
        lambda n, size=1, client_ports=None, **options: EtcdCluster(
            tmp_path / f"etcd{n}", size, client_ports, **options
        )
    )


def registry_url_for(driver: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    name = uuid.uuid4().hex[:8]
    if driver == "memory":
        return f"memory://{name}"
    if driver == "file":
        return f"file://{tmp_path}/registry.db"
    if driver == "consul":
        return request.getfixturevalue("consul").url(f"/t-{name}")
    if driver == "nacos":
        return request.getfixturevalue("nacos").url(f"t-{name}")
    return request.getfixturevalue("etcd").url(f"/t-{name}")


@pytest.fixture(params=DRIVERS)
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return registry_url_for(request.param, tmp_path, request)


@pytest.fixture(params=["file", "etcd", "consul", "nacos"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A registry that separate processes can share: the embedded file, real etcd, Consul or Nacos (own prefix each)."""
    return registry_url_for(request.param, tmp_path, request)


@pytest.fixture
async def registry(registry_url: str) -> AsyncIterator[Registry]:
    async with open_registry(registry_url) as reg:
        yield reg


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """A small third-party API (`tests.support.upstream_app`) on a free loopback port, for this test."""
    server = await Upstream().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def start_smmf(tmp_path: Path) -> Iterator[Callable[..., SmmfProcess]]:
    """Start `smmf ...` processes (workers print their URL first); all are stopped by PID at teardown.

    Each one's log is printed at teardown, which pytest shows only for a
    failed test: a sidecar's log is what tells why an acknowledgement never
    came, and the test's temporary directory is gone a few runs later.
    """
    started: list[SmmfProcess] = []

    def start(
        *args: str, healthy: bool = True, expect_url: bool = True, timeout: float = 60.0, **kwargs: object
    ) -> SmmfProcess:
        process = SmmfProcess(list(args), tmp_path, **kwargs)  # type: ignore[arg-type]
        started.append(process)
        process.start(url_timeout=timeout, expect_url=expect_url)
        return process.wait_healthy(timeout) if healthy else process

    try:
        yield start
    finally:
        for process in started:
            process.stop()
            print(f"--- smmf {' '.join(process.args[:3])} ... log ---\n{process.log()[-6000:]}")


@pytest.fixture
def start_worker(start_smmf: Callable[..., SmmfProcess]) -> Callable[..., SmmfProcess]:
    """`start_worker("sim", "--model", "m", ...)`: a worker on a free loopback port, healthy."""

    def start(backend: str, *args: str, **kwargs: object) -> SmmfProcess:
        return start_smmf("worker", backend, "--port", "0", *args, **kwargs)

    return start


#: What xdist workers reported left behind (their `workeroutput`), for the controller to report.
_LEFT_IN_WORKERS: list[str] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    _LEFT_IN_WORKERS.extend(getattr(node, "workeroutput", {}).get("leftovers", []))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop every process of this run that is still alive, and fail the run if there was any.

    Under pytest-xdist each worker reaps its own and hands the list to the
    controller, which runs no tests (the processes with its marker are the
    workers) and reports them.
    """
    config = session.config
    if config.pluginmanager.has_plugin("dsession"):
        lines = _LEFT_IN_WORKERS
    else:
        left = leftovers()
        if not left:
            return
        reap(list(left))
        lines = [f"ERROR: {len(left)} process(es) started by the tests were still running at the end; stopped now:"]
        lines += [f"  pid {pid}: {command[:200]}" for pid, command in sorted(left.items())]
        if hasattr(config, "workeroutput"):
            config.workeroutput["leftovers"] = lines
    if not lines:
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        print("\n".join(lines))
    else:
        reporter.ensure_newline()
        reporter.section("processes left behind", red=True)
        for line in lines:
            reporter.write_line(line, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
