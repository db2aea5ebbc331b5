"""Registry URLs: which driver a URL names, and the default when none is given."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..errors import UnsupportedRegistry
from .registry import Registry
from .store import Store

__all__ = ["DRIVERS", "ENV_VAR", "default_url", "open_registry"]

#: Environment variable that names the registry when no URL is passed.
ENV_VAR = "SMMF_REGISTRY"


#: smmf's own directory: the default registry's, created when needed (any other must exist).
DEFAULT_DIR = Path("~/.smmf").expanduser()


def default_url() -> str:
    """`$SMMF_REGISTRY`, else the embedded file registry in `~/.smmf/registry.db`."""
    return os.environ.get(ENV_VAR) or "file://" + str(DEFAULT_DIR / "registry.db")


def _query_float(url: str, query: dict[str, list[str]], name: str, default: float) -> float:
    try:
        return float(query[name][-1]) if name in query else default
    except ValueError:
        raise UnsupportedRegistry(f"{url}: query parameter {name}= must be a number") from None


def _memory(url: str) -> Store:
    from .drivers.memory import MemoryStore

    return MemoryStore(urlsplit(url).netloc or "default")


def _file(url: str) -> Store:
    from .drivers.file import DEFAULT_HISTORY, DEFAULT_POLL, FileStore

    rest = url[len("file://") :]
    path, _, qs = rest.partition("?")
    if not path:
        raise UnsupportedRegistry(f"{url}: a file registry needs a path, e.g. file:///var/lib/smmf/registry.db")
    directory = Path(path).expanduser().parent
    if directory == DEFAULT_DIR:
        directory.mkdir(parents=True, exist_ok=True)
    elif directory.exists() and not directory.is_dir():
        raise UnsupportedRegistry(f"{url}: {directory} is not a directory")
    elif not directory.is_dir():
        raise UnsupportedRegistry(f"{url}: the directory {directory} does not exist (a mistyped path?)")
    query = parse_qs(qs)
    _options(url, query, {"poll", "history"})
    poll = _query_float(url, query, "poll", DEFAULT_POLL)
    history = int(_query_float(url, query, "history", DEFAULT_HISTORY))
    return FileStore(path, poll=poll, history=history)


def _options(url: str, query: dict[str, list[str]], known: set[str]) -> None:
    """Refuse query parameters the driver does not read: a mistyped `cacert=` must not mean plaintext."""
    unknown = sorted(set(query) - known)
    if unknown:
        raise UnsupportedRegistry(
            f"{url}: unknown option {', '.join(unknown)}; this registry takes {', '.join(sorted(known))}"
        )


def _one(query: dict[str, list[str]], name: str) -> str | None:
    return query[name][-1] if name in query else None


def _etcd(url: str) -> Store:
    from .drivers.etcd import EtcdSecurity, EtcdStore

    parts = urlsplit(url)
    endpoints = _endpoints(url, parts.netloc, "etcd://127.0.0.1:2379/smmf")
    query = parse_qs(parts.query)
    _options(url, query, {"timeout", "user_env", "password_env", "cacert", "cert", "key"})
    timeout = _query_float(url, query, "timeout", 3.0)
    security = EtcdSecurity(*(_one(query, name) for name in ("user_env", "password_env", "cacert", "cert", "key")))
    return EtcdStore(endpoints, parts.path.rstrip("/") or "/smmf", timeout=timeout, security=security)


def _endpoints(url: str, netloc: str, example: str) -> list[tuple[str, int]]:
    """`host:port[,host:port...]`, each checked, for the drivers that take a list of servers."""
    endpoints = []
    for hostport in filter(None, netloc.split(",")):
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise UnsupportedRegistry(f"{url}: endpoints are host:port, comma-separated; got {hostport!r}")
        endpoints.append((host.strip("[]"), int(port)))
    if not endpoints:
        raise UnsupportedRegistry(f"{url}: no endpoint given, e.g. {example}")
    return endpoints


def _consul(url: str) -> Store:
    from .drivers.consul import WAIT, ConsulOptions, ConsulStore

    parts = urlsplit(url)
    endpoints = _endpoints(url, parts.netloc, "consul://127.0.0.1:8500/smmf")
    query = parse_qs(parts.query)
    _options(url, query, {"dc", "token_env", "scheme", "ca", "wait", "timeout"})
    scheme = _one(query, "scheme") or "http"
    if scheme not in ("http", "https"):
        raise UnsupportedRegistry(f"{url}: scheme= is http or https, not {scheme!r}")
    if _one(query, "ca") and scheme != "https":
        raise UnsupportedRegistry(f"{url}: ca= is the CA for TLS; add scheme=https")
    wait = _query_float(url, query, "wait", WAIT)
    timeout = _query_float(url, query, "timeout", 5.0)
    if wait <= 0 or timeout <= 0:
        raise UnsupportedRegistry(f"{url}: wait= and timeout= are positive seconds")
    options = ConsulOptions(
        _one(query, "dc"), _one(query, "token_env"), scheme, _one(query, "ca"), wait=wait, timeout=timeout
    )
    return ConsulStore(endpoints, parts.path, options)


def _nacos(url: str) -> Store:
    from .drivers.nacos import NacosOptions, NacosStore

    parts = urlsplit(url)
    endpoints = _endpoints(url, parts.netloc, "nacos://127.0.0.1:8848?group=smmf")
    if parts.path.strip("/"):
        raise UnsupportedRegistry(f"{url}: a Nacos URL has no path; name the group instead (?group=...)")
    query = parse_qs(parts.query)
    _options(url, query, {"namespace", "group", "username_env", "password_env", "dir", "timeout", "poll"})
    timeout = _query_float(url, query, "timeout", 3.0)
    poll = _query_float(url, query, "poll", 1.0)
    if timeout <= 0 or poll <= 0:
        raise UnsupportedRegistry(f"{url}: timeout= and poll= are positive seconds")
    group = _one(query, "group") or "smmf"
    if not re.fullmatch(r"[a-zA-Z0-9_:.-]{1,128}", group):
        raise UnsupportedRegistry(f"{url}: group= takes letters, digits and _ - . : (at most 128), as Nacos does")
    namespace = _one(query, "namespace") or ""
    if namespace and not re.fullmatch(r"[\w-]{1,64}", namespace):
        raise UnsupportedRegistry(f"{url}: namespace= is a namespace id: letters, digits, _ and - (at most 64)")
    options = NacosOptions(
        namespace,
        group,
        _one(query, "username_env"),
        _one(query, "password_env"),
        _one(query, "dir"),
        timeout=timeout,
        poll=poll,
    )
    return NacosStore(endpoints, options)


DRIVERS: dict[str, Callable[[str], Store]] = {
    "memory": _memory,
    "file": _file,
    "etcd": _etcd,
    "consul": _consul,
    "nacos": _nacos,
}


def open_registry(url: str | None = None) -> Registry:
    """The registry a URL names; `None` means `$SMMF_REGISTRY` or the embedded default.

    Opening does not connect: the first call does, so a registry that is down
    at start-up is reported by the call that needs it, with its address.
    """
    url = url or default_url()
    parts = urlsplit(url)
    if "@" in parts.netloc:
        where = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        raise UnsupportedRegistry(
            f"{where}: credentials do not go in a registry URL, where logs and process lists show them; "
            "name the environment variables that hold them "
            "(etcd: ?user_env=VAR&password_env=VAR; Consul: ?token_env=VAR; Nacos: ?username_env=VAR&password_env=VAR)"
        )
    scheme = parts.scheme
    driver = DRIVERS.get(scheme)
    if driver is None:
        supported = ", ".join(f"{name}://" for name in DRIVERS)
        raise UnsupportedRegistry(f"unsupported registry URL {url!r}: supported schemes are {supported}")
    return Registry(driver(url), url)
