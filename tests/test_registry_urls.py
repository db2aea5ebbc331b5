"""Opening registries by URL: drivers, defaults and the errors a mistyped URL gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from smmf.registry import ENV_VAR, UnsupportedRegistry, default_url, open_registry
from smmf.registry.drivers.consul import ConsulStore
from smmf.registry.drivers.etcd import EtcdStore
from smmf.registry.drivers.file import FileStore
from smmf.registry.drivers.memory import MemoryStore
from smmf.registry.drivers.nacos import NacosStore


def test_unknown_scheme_lists_the_supported_ones() -> None:
    with pytest.raises(UnsupportedRegistry) as err:
        open_registry("zookeeper://127.0.0.1:2181")
    assert "zookeeper://" in str(err.value)
    for scheme in ("memory://", "file://", "etcd://"):
        assert scheme in str(err.value)


def test_default_is_the_embedded_file_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert default_url() == "file://" + str(Path.home() / ".smmf" / "registry.db")
    registry = open_registry()
    assert isinstance(registry.store, FileStore) and registry.store.path == Path.home() / ".smmf" / "registry.db"


def test_environment_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "memory://from-env")
    registry = open_registry()
    assert isinstance(registry.store, MemoryStore) and registry.store.address == "memory://from-env"
    assert isinstance(open_registry("memory://explicit").store, MemoryStore)


def test_etcd_urls() -> None:
    store = open_registry("etcd://10.0.0.1:2379,10.0.0.2:2379/team-a?timeout=1.5").store
    assert isinstance(store, EtcdStore)
    assert store.endpoints == [("10.0.0.1", 2379), ("10.0.0.2", 2379)]
    assert store.prefix == "/team-a/" and store.timeout == 1.5
    assert open_registry("etcd://127.0.0.1:2379").store.prefix == "/smmf/"  # type: ignore[attr-defined]


def test_consul_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAM_TOKEN", "t")
    store = open_registry("consul://10.0.0.1:8500,10.0.0.2:8500/team-a?dc=eu1&token_env=TEAM_TOKEN&wait=30").store
    assert isinstance(store, ConsulStore) and store.address == "consul://10.0.0.1:8500,10.0.0.2:8500/team-a"
    assert open_registry("consul://127.0.0.1:8500").store.address == "consul://127.0.0.1:8500/smmf"


def test_nacos_urls() -> None:
    store = open_registry("nacos://10.0.0.1:8848,10.0.0.2:8848?namespace=prod&group=team-a&timeout=2").store
    assert isinstance(store, NacosStore)
    assert store.address == "nacos://10.0.0.1:8848,10.0.0.2:8848?namespace=prod&group=team-a"
    assert open_registry("nacos://127.0.0.1:8848").store.address == "nacos://127.0.0.1:8848?namespace=public&group=smmf"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nacos://", "no endpoint given"),
        ("nacos://127.0.0.1:8848/smmf", "no path"),
        ("nacos://127.0.0.1:8848?password=abc", "unknown option password"),
        ("nacos://127.0.0.1:8848?group=a/b", "group="),
        ("nacos://127.0.0.1:8848?namespace=a b", "namespace="),
        ("nacos://127.0.0.1:8848?poll=0", "positive seconds"),
        ("nacos://127.0.0.1:8848?username_env=SMMF_UNSET_FOR_TEST&password_env=X", "SMMF_UNSET_FOR_TEST"),
        ("nacos://127.0.0.1:8848?username_env=HOME", "must both name"),
        ("nacos://nacos:s3cret@127.0.0.1:8848", "username_env=VAR"),
        ("consul:///smmf", "no endpoint given"),
        ("consul://127.0.0.1:8500/smmf?token=abc", "unknown option token"),
        ("consul://127.0.0.1:8500/smmf?scheme=ftp", "http or https"),
        ("consul://127.0.0.1:8500/smmf?ca=/etc/ca.pem", "add scheme=https"),
        ("consul://127.0.0.1:8500/smmf?wait=-1", "positive seconds"),
        ("consul://127.0.0.1:8500/smmf?token_env=SMMF_UNSET_FOR_TEST", "SMMF_UNSET_FOR_TEST"),
        ("consul://me:s3cret@127.0.0.1:8500/smmf", "token_env=VAR"),
        ("etcd:///smmf", "no endpoint given"),
        ("etcd://127.0.0.1/smmf", "host:port"),
        ("etcd://127.0.0.1:2379/smmf?timeout=soon", "timeout= must be a number"),
        ("file://", "needs a path"),
        ("file:///tmp/r.db?poll=fast", "poll= must be a number"),
    ],
)
def test_malformed_urls_get_clear_errors(url: str, message: str) -> None:
    with pytest.raises(UnsupportedRegistry, match=message):
        open_registry(url)
