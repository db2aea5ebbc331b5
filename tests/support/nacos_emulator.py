"""A Nacos 2.x server's gRPC API in one `grpc.aio` process, for the tests: the subset smmf's driver uses.

No Nacos server can be installed on the test machines (it needs a JVM and
is in neither Debian nor PyPI), so the Nacos driver is tested against this.
It speaks the protocol with the proto nacos-sdk-python ships
(`Payload{metadata{type, clientIp, headers}, body: Any}`, JSON bodies) on
the server's gRPC port (HTTP port + 1000), and follows the Nacos server's
source (alibaba/nacos, 3.x branch) as cited on each piece below.
`tests/test_nacos_emulator.py` checks it with nacos-sdk-python driven
directly, without smmf's driver.

Covered:

- connections (`core/remote/grpc/GrpcRequestAcceptor.java`,
  `GrpcBiStreamRequestAcceptor.java`): `ServerCheckRequest` answers the
  connection id of the caller's transport; `ConnectionSetupRequest` on the
  bi-stream registers the connection and is answered by `SetupAckRequest`;
  any other request on a connection that is not registered gets
  `ErrorResponse` 301; an unknown type gets 302; the end of the bi-stream
  unregisters the connection;
- `HealthCheckRequest`; the ejector (`core/remote/NacosRuntimeConnectionEjector.java`):
  every 3 s, connections idle for 20 s (`--keep-alive`) are sent
  `ClientDetectionRequest` and dropped when no answer comes within 5 s;
- naming (`naming/remote/rpc/handler/*RequestHandler.java`,
  `core/v2/service/impl/EphemeralClientOperationServiceImpl.java`):
  `InstanceRequest` (register, deregister), `BatchInstanceRequest`,
  `SubscribeServiceRequest`, `ServiceQueryRequest`, `ServiceListRequest`; a
  connection publishes one instance, or one batch, per service, and a
  deregistration removes what it published there; ephemeral instances go
  with their connection; empty services are cleaned after 60 s
  (`EmptyServiceAutoCleaner`);
- what queries return (`core/v2/index/ServiceStorage.java`): the service's
  data as of its last push, computed on the first query; so a query right
  after a change can be up to a push delay old, as on the server;
- pushes (`push/v2/task/PushDelayTaskExecuteEngine.java`, `PushExecuteTask.java`):
  `NotifySubscriberRequest` 500 ms after a change, changes merged, with a
  strictly increasing `lastRefTime`, acknowledged by request id; a push not
  acknowledged within 5 s is retried after 1 s;
- parameter checks (`common/paramcheck/DefaultParamChecker.java`,
  `core/remote/grpc/RemoteParamCheckFilter.java`): service, group, cluster,
  ip, port, and metadata over 1,024 characters (keys and values together)
  answer error 400 "Param check invalid:...";
- configuration (`config/server/remote/Config*RequestHandler.java`,
  `RpcConfigChangeNotifier.java`): `ConfigQueryRequest` (300 when absent),
  `ConfigPublishRequest` (with `casMd5`: a mismatch fails, an absent config
  is inserted, as `insertOrUpdateCas` does), `ConfigRemoveRequest`,
  `ConfigBatchListenRequest` (answers the contexts whose md5 differs), and
  `ConfigChangeNotifyRequest` to every listening connection on a change;
- namespaces: `""` and `public` are the same (`NamespaceUtil`);
- auth: with `--user-env USER --password-env PASS`, `POST
  /nacos/v1/auth/users/login` on the HTTP port answers an `accessToken`, and
  every gRPC request without it (header `accessToken`) gets 403.

Not Nacos's, for tests only, on the HTTP port: `GET /_emulator/connections`
lists connections, and `POST /_emulator/drop?service=NAME` unregisters the
connections publishing in a service (as the server does with one that
stopped answering), ending their bi-streams.

    python -m tests.support.nacos_emulator --port 8848 [--keep-alive 20] [--user-env U --password-env P]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.any_pb2 import Any as AnyBody
from v2.nacos.transport.grpcauto.nacos_grpc_service_pb2 import Metadata, Payload
from v2.nacos.transport.grpcauto.nacos_grpc_service_pb2_grpc import (
    BiRequestStreamServicer,
    RequestServicer,
    add_BiRequestStreamServicer_to_server,
    add_RequestServicer_to_server,
)

from tests.support.nacos import GRPC_OFFSET  # the HTTP port plus this (`Constants.SDK_GRPC_PORT_DEFAULT_OFFSET`)

PUSH_DELAY = 0.5
PUSH_TIMEOUT = 5.0
PUSH_RETRY_DELAY = 1.0
EJECT_PERIOD = 3.0
DETECTION_TIMEOUT = 5.0
EMPTY_SERVICE_EXPIRY = 60.0
EMPTY_SERVICE_CHECK = 20.0
MAX_METADATA_LENGTH = 1024

# Error codes of `com.alibaba.nacos.api.exception.NacosException`.
INVALID_PARAM = 400
NO_RIGHT = 403
SERVER_ERROR = 500
UN_REGISTER = 301
NO_HANDLER = 302
CONFIG_NOT_FOUND = 300

# Patterns of `ParamCheckRule`.
_SERVICE = re.compile(r"^(?!@).((?!@@)[^\u4E00-\u9FA5\s])*$")
_GROUP = re.compile(r"^[a-zA-Z0-9-_:\.]*$")
_DATA_ID = _GROUP
_CLUSTER = re.compile(r"^[0-9a-zA-Z-_]+$")
_IP = re.compile(r"^[^\u4E00-\u9FA5\s]*$")
_NAMESPACE = re.compile(r"^[\w-]+")


def _java_length(text: str) -> int:
    """A Java string's length: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _namespace(value: str | None) -> str:
    """`NamespaceUtil.processNamespaceParameter`: blank means public."""
    return value.strip() if value and value.strip() else "public"


def _payload(kind: str, body: dict[str, Any]) -> Payload:
    """A payload as the server writes it: Jackson with `NON_NULL` inclusion (`JacksonUtils`) leaves nulls out."""
    return Payload(
        metadata=Metadata(type=kind, clientIp="127.0.0.1"),
        body=AnyBody(value=json.dumps({k: v for k, v in body.items() if v is not None}).encode()),
    )


def _response(kind: str, **fields: Any) -> Payload:
    return _payload(kind, {"resultCode": 200, "errorCode": 0, **fields})


#: The primitive fields of a response class, which Jackson writes even on a failure (nulls it leaves out).
_PRIMITIVES: dict[str, dict[str, Any]] = {"ServiceListResponse": {"count": 0}}


def _failure(kind: str, code: int, message: str) -> Payload:
    """`Response.setErrorInfo` on the handler's response: result FAIL (500) with the error code and message."""
    return _payload(kind, {"resultCode": 500, "errorCode": code, "message": message, **_PRIMITIVES.get(kind, {})})


class Rejected(Exception):
    """A request refused with an error code, answered in the handler's own response type."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


ServiceKey = tuple[str, str, str]  # namespace, group, name
ConfigKey = tuple[str, str, str]  # namespace, group, data id


@dataclass
class Connection:
    id: str
    labels: dict[str, str]
    outbox: asyncio.Queue[Payload | None] = field(default_factory=asyncio.Queue)
    last_active: float = field(default_factory=time.monotonic)
    published: dict[ServiceKey, list[dict[str, Any]]] = field(default_factory=dict)
    subscribed: set[ServiceKey] = field(default_factory=set)
    listening: dict[ConfigKey, str] = field(default_factory=dict)  # key → the tenant the client listens with
    waiting: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class Config:
    content: str
    md5: str
    modified: int


class Server:
    def __init__(self, keep_alive: float, credentials: tuple[str, str] | None) -> None:
        self.keep_alive = keep_alive
        self.credentials = credentials
        self.tokens: set[str] = set()
        self.peers: dict[str, str] = {}  # transport peer → connection id (what `CONTEXT_KEY_CONN_ID` holds)
        self.connections: dict[str, Connection] = {}
        self.services: dict[ServiceKey, float | None] = {}  # key → when it became empty (None: has instances)
        self.storage: dict[ServiceKey, dict[str, Any]] = {}
        self.pending: dict[ServiceKey, set[str] | None] = {}  # push targets (None: every subscriber)
        self.configs: dict[ConfigKey, Config] = {}
        self._ref_time = 0
        self._request_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    # -- connections -------------------------------------------------------

    def connection_id(self, peer: str) -> str:
        """One id per transport, as Nacos's transport filter assigns it: time, remote ip and port."""
        if peer not in self.peers:
            address = peer.split(":", 1)[-1]
            ip, _, port = address.rpartition(":")
            self.peers[peer] = f"{int(time.time() * 1000)}_{ip}_{port}"
        return self.peers[peer]

    def unregister(self, connection_id: str) -> None:
        """`ConnectionManager.unregister`: the client goes, and with it its instances and subscriptions."""
        connection = self.connections.pop(connection_id, None)
        if connection is None:
            return
        for key in connection.published:
            self.changed(key)
        connection.outbox.put_nowait(None)
        for future in connection.waiting.values():
            future.cancel()

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ask(self, connection: Connection, kind: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send a request down a connection's bi-stream and wait for the response with its request id."""
        request_id = str(next(self._request_ids))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        connection.waiting[request_id] = future
        connection.outbox.put_nowait(_payload(kind, {"requestId": request_id, "headers": {}, **body}))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            connection.waiting.pop(request_id, None)

    async def eject(self) -> None:
        """`NacosRuntimeConnectionEjector.ejectOutdatedConnection`, every 3 s."""
        while True:
            await asyncio.sleep(EJECT_PERIOD)
            now = time.monotonic()
            idle = [c for c in self.connections.values() if now - c.last_active >= self.keep_alive]
            answers = await asyncio.gather(
                *(self.ask(c, "ClientDetectionRequest", {"module": "internal"}, DETECTION_TIMEOUT) for c in idle),
                return_exceptions=True,
            )
            for connection, answer in zip(idle, answers, strict=True):
                if isinstance(answer, dict) and answer.get("resultCode") == 200:
                    connection.last_active = time.monotonic()
                else:
                    self.unregister(connection.id)

    # -- naming ------------------------------------------------------------

    def next_ref_time(self) -> int:
        self._ref_time = max(self._ref_time + 1, int(time.time() * 1000))
        return self._ref_time

    def push_data(self, key: ServiceKey) -> dict[str, Any]:
        """`ServiceStorage.getPushData`: the instances every connection publishes, now; kept for queries."""
        _, group, name = key
        hosts = [instance for connection in self.connections.values() for instance in connection.published.get(key, [])]
        data = {
            "name": name,
            "groupName": group,
            "clusters": "",
            "cacheMillis": 10000,
            "hosts": hosts,
            "lastRefTime": self.next_ref_time(),
            "checksum": "",
            "allIPs": False,
            "reachProtectionThreshold": False,
            "valid": True,
        }
        self.storage[key] = data
        return data

    def data(self, key: ServiceKey) -> dict[str, Any]:
        """`ServiceStorage.getData`: the data of the last push, or computed now on the first query."""
        return self.storage.get(key) or self.push_data(key)

    def changed(self, key: ServiceKey, target: str | None = None) -> None:
        """Schedule a push 500 ms from now, merged with one already scheduled (`PushDelayTask.merge`)."""
        if key in self.services:
            has_hosts = any(key in c.published for c in self.connections.values())
            self.services[key] = None if has_hosts else (self.services[key] or time.monotonic())
        if key in self.pending:
            targets = self.pending[key]
            if targets is not None:
                self.pending[key] = None if target is None else targets | {target}
            return
        self.pending[key] = None if target is None else {target}
        self.spawn(self._push_later(key, PUSH_DELAY))

    async def _push_later(self, key: ServiceKey, delay: float) -> None:
        await asyncio.sleep(delay)
        targets = self.pending.pop(key, set())
        data = self.push_data(key)
        for connection in list(self.connections.values()):
            if key in connection.subscribed and (targets is None or connection.id in targets):
                self.spawn(self._push(connection, key, data))

    async def _push(self, connection: Connection, key: ServiceKey, data: dict[str, Any]) -> None:
        namespace, group, name = key
        body = {
            "namespace": namespace,
            "serviceName": name,
            "groupName": group,
            "module": "naming",
            "serviceInfo": data,
        }
        try:
            await self.ask(connection, "NotifySubscriberRequest", body, PUSH_TIMEOUT)
        except (TimeoutError, asyncio.CancelledError):
            if connection.id in self.connections:  # `ServicePushCallback.onFail`: push again after 1 s
                await asyncio.sleep(PUSH_RETRY_DELAY)
                self.changed(key, connection.id)

    def clean_empty_services(self) -> None:
        now = time.monotonic()
        for key, empty_since in list(self.services.items()):
            if empty_since is not None and now - empty_since >= EMPTY_SERVICE_EXPIRY:
                del self.services[key]
                self.storage.pop(key, None)

    # -- configuration -----------------------------------------------------

    def config_changed(self, key: ConfigKey) -> None:
        """`RpcConfigChangeNotifier`: tell every connection listening to the key."""
        _, group, data_id = key
        for connection in list(self.connections.values()):
            if key in connection.listening:
                body = {"dataId": data_id, "group": group, "tenant": connection.listening[key], "module": "config"}
                self.spawn(self._notify(connection, body))

    async def _notify(self, connection: Connection, body: dict[str, Any]) -> None:
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await self.ask(connection, "ConfigChangeNotifyRequest", body, PUSH_TIMEOUT)


# -- parameter checks ------------------------------------------------------


def _check_service(request: dict[str, Any]) -> None:
    name = request.get("serviceName") or ""
    group = request.get("groupName") or ""
    namespace = request.get("namespace") or ""
    if namespace and (len(namespace) > 64 or not _NAMESPACE.match(namespace)):
        raise Rejected(
            INVALID_PARAM,
            "Param check invalid:Param 'namespaceId' is illegal, illegal characters should not appear in the param.",
        )
    if not name or len(name) > 512 or not _SERVICE.match(name):
        raise Rejected(
            INVALID_PARAM,
            "Param check invalid:Param 'serviceName' is illegal, illegal characters should not appear in the param.",
        )
    if len(group) > 128 or not _GROUP.match(group):
        raise Rejected(
            INVALID_PARAM,
            "Param check invalid:Param 'group' is illegal, illegal characters should not appear in the param.",
        )


def _check_instance(instance: dict[str, Any]) -> None:
    cluster = instance.get("clusterName") or "DEFAULT"
    if len(cluster) > 64 or not _CLUSTER.match(cluster):
        raise Rejected(
            INVALID_PARAM,
            "Param check invalid:Param 'cluster' is illegal, illegal characters should not appear in the param.",
        )
    ip = str(instance.get("ip") or "")
    if len(ip) > 128 or not _IP.match(ip):
        raise Rejected(
            INVALID_PARAM,
            "Param check invalid:Param 'ip' is illegal, illegal characters should not appear in the param.",
        )
    port = instance.get("port")
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise Rejected(
            INVALID_PARAM, "Param check invalid:Param 'port' is illegal, the value should be between 0 and 65535."
        )
    metadata = instance.get("metadata") or {}
    total = sum(_java_length(str(k)) for k in metadata if str(k).strip())
    total += sum(_java_length(str(v)) for v in metadata.values() if str(v).strip())
    if total > MAX_METADATA_LENGTH:
        raise Rejected(
            INVALID_PARAM,
            "Param check invalid:Param 'Metadata' is illegal, "
            f"the param length should not exceed {MAX_METADATA_LENGTH}.",
        )


def _published(instance: dict[str, Any], key: ServiceKey) -> dict[str, Any]:
    """`InstanceUtil.parseToApiInstance`: the instance as subscribers see it, with the server's instance id."""
    _, group, name = key
    cluster = instance.get("clusterName") or "DEFAULT"
    return {
        "instanceId": f"{instance['ip']}#{instance['port']}#{cluster}#{group}@@{name}",
        "ip": instance["ip"],
        "port": instance["port"],
        "weight": float(instance.get("weight", 1.0)),
        "healthy": bool(instance.get("healthy", True)),
        "enabled": bool(instance.get("enabled", True)),
        "ephemeral": True,
        "clusterName": cluster,
        "serviceName": f"{group}@@{name}",
        "metadata": {str(k): str(v) for k, v in (instance.get("metadata") or {}).items()},
        "instanceHeartBeatInterval": 5000,
        "instanceHeartBeatTimeOut": 15000,
        "ipDeleteTimeout": 30000,
        "instanceIdGenerator": "simple",
    }


def _service_key(request: dict[str, Any]) -> ServiceKey:
    return _namespace(request.get("namespace")), request.get("groupName") or "DEFAULT_GROUP", request["serviceName"]


def _config_key(request: dict[str, Any]) -> ConfigKey:
    data_id = request.get("dataId") or ""
    group = request.get("group") or ""
    if not data_id or len(data_id) > 256 or not _DATA_ID.match(data_id):
        raise Rejected(INVALID_PARAM, "invalid dataId : " + data_id)
    if not group or len(group) > 128 or not _GROUP.match(group):
        raise Rejected(INVALID_PARAM, "invalid group : " + group)
    return _namespace(request.get("tenant")), group, data_id


# -- handlers --------------------------------------------------------------


def instance_request(server: Server, connection: Connection, request: dict[str, Any]) -> Payload:
    """`InstanceRequestHandler`: register or deregister this connection's instance of a service."""
    _check_service(request)
    key = _service_key(request)
    instance = request.get("instance") or {}
    if request.get("type") == "registerInstance":
        _check_instance(instance)
        server.services.setdefault(key, None)
        connection.published[key] = [_published(instance, key)]
    elif request.get("type") == "deregisterInstance":
        if key not in server.services or connection.published.pop(key, None) is None:
            return _response("InstanceResponse", type=request.get("type"))
    else:
        raise Rejected(INVALID_PARAM, f"Unsupported request type {request.get('type')}")
    server.changed(key)
    return _response("InstanceResponse", type=request.get("type"))


def batch_instance_request(server: Server, connection: Connection, request: dict[str, Any]) -> Payload:
    """`BatchInstanceRequestHandler`: this connection's instances of a service become exactly these."""
    _check_service(request)
    key = _service_key(request)
    instances = request.get("instances") or []
    for instance in instances:
        _check_instance(instance)
    if request.get("type") != "batchRegisterInstance":
        raise Rejected(INVALID_PARAM, f"Unsupported request type {request.get('type')}")
    server.services.setdefault(key, None)
    connection.published[key] = [_published(i, key) for i in instances]
    server.changed(key)
    return _response("BatchInstanceResponse", type=request.get("type"))


def subscribe_request(server: Server, connection: Connection, request: dict[str, Any]) -> Payload:
    """`SubscribeServiceRequestHandler`: the data now, and pushes from now on (or no more)."""
    _check_service(request)
    key = _service_key(request)
    info = server.data(key)
    if request.get("subscribe", True):
        connection.subscribed.add(key)
        server.changed(key, connection.id)  # `ServiceSubscribedEvent`: push to this subscriber
    else:
        connection.subscribed.discard(key)
    return _response("SubscribeServiceResponse", serviceInfo=info)


def query_request(server: Server, connection: Connection, request: dict[str, Any]) -> Payload:
    """`ServiceQueryRequestHandler`: the service's data from `ServiceStorage`, as of its last push."""
    _check_service(request)
    info = dict(server.data(_service_key(request)))
    if request.get("healthyOnly"):
        info["hosts"] = [h for h in info["hosts"] if h["healthy"]]
    return _response("QueryServiceResponse", serviceInfo=info)


def service_list_request(server: Server, connection: Connection, request: dict[str, Any]) -> Payload:
    """`ServiceListRequestHandler`: one page of the service names of a namespace and group."""
    namespace = _namespace(request.get("namespace"))
    group = request.get("groupName") or "DEFAULT_GROUP"
    names = sorted(name for ns, g, name in server.services if ns == namespace and g == group)
    page, size = max(int(request.get("pageNo") or 1), 1), int(request.get("pageSize") or 10)
    return _response("ServiceListResponse", count=len(names), serviceNames=names[(page - 1) * size : page * size])


def config_query(server: Server, connection: Connection, request: dict[str, Any]) -> Payload:
    config = server.configs.get(_config_key(request))
    if config is None:
        return _failure("ConfigQueryResponse", CONFIG_NOT_FOUND, "config data not exist")
    return _response(
        "ConfigQueryResponse",
        content=config.content,
        md5=config.md5,
        lastModified=config.modified,
        contentType="text",
        encryptedDataKey=None,
        isBeta=False,
        tag=None,
    )


def config_publish(server: Server, connection: Connection, request: dict[str, Any]) -> Payload:
    """`ConfigPublishRequestHandler`: with `casMd5`, only over that content (an absent config is inserted)."""
    key = _config_key(request)
    content = request.get("content") or ""
    if not content.strip():
        return _failure("ConfigPublishResponse", INVALID_PARAM, "invalid content")
    cas = request.get("casMd5") or ""
    current = server.configs.get(key)
    if cas and current is not None and current.md5 != cas:
        return _failure("ConfigPublishResponse", SERVER_ERROR, "Cas publish fail, server md5 may have changed.")
    server.configs[key] = Config(content, hashlib.md5(content.encode()).hexdigest(), int(time.time() * 1000))
    server.config_changed(key)
    return _response("ConfigPublishResponse")


def config_remove(server: Server, connection: Connection, request: dict[str, Any]) -> Payload:
    key = _config_key(request)
    if server.configs.pop(key, None) is not None:
        server.config_changed(key)
    return _response("ConfigRemoveResponse")


def config_listen(server: Server, connection: Connection, request: dict[str, Any]) -> Payload:
    """`ConfigChangeBatchListenRequestHandler`: listen (or stop); answer the keys whose md5 differs."""
    changed = []
    for context in request.get("configListenContexts") or []:
        key = (_namespace(context.get("tenant")), context.get("group") or "", context.get("dataId") or "")
        if request.get("listen", True):
            connection.listening[key] = context.get("tenant") or ""
            config = server.configs.get(key)
            if (config.md5 if config else "") != (context.get("md5") or ""):
                changed.append({"group": key[1], "dataId": key[2], "tenant": context.get("tenant") or ""})
        else:
            connection.listening.pop(key, None)
    return _response("ConfigChangeBatchListenResponse", changedConfigs=changed)


HANDLERS = {
    "InstanceRequest": (instance_request, "InstanceResponse"),
    "BatchInstanceRequest": (batch_instance_request, "BatchInstanceResponse"),
    "SubscribeServiceRequest": (subscribe_request, "SubscribeServiceResponse"),
    "ServiceQueryRequest": (query_request, "QueryServiceResponse"),
    "ServiceListRequest": (service_list_request, "ServiceListResponse"),
    "ConfigQueryRequest": (config_query, "ConfigQueryResponse"),
    "ConfigPublishRequest": (config_publish, "ConfigPublishResponse"),
    "ConfigRemoveRequest": (config_remove, "ConfigRemoveResponse"),
    "ConfigBatchListenRequest": (config_listen, "ConfigChangeBatchListenResponse"),
    "HealthCheckRequest": (lambda s, c, r: _response("HealthCheckResponse"), "HealthCheckResponse"),
}


class RequestService(RequestServicer):
    """`GrpcRequestAcceptor.request`."""

    def __init__(self, server: Server) -> None:
        self.server = server

    async def request(self, payload: Payload, context: grpc.aio.ServicerContext) -> Payload:  # type: ignore[override]
        kind = payload.metadata.type
        connection_id = self.server.connection_id(context.peer())
        if kind == "ServerCheckRequest":
            return _response("ServerCheckResponse", connectionId=connection_id, supportAbilityNegotiation=True)
        handler = HANDLERS.get(kind)
        if handler is None:
            return _failure("ErrorResponse", NO_HANDLER, "RequestHandler Not Found")
        connection = self.server.connections.get(connection_id)
        if connection is None:
            return _failure("ErrorResponse", UN_REGISTER, "Connection is unregistered.")
        try:
            request = json.loads(payload.body.value)
        except ValueError as exc:
            return _failure("ErrorResponse", 502, str(exc))
        connection.last_active = time.monotonic()
        function, response_kind = handler
        if self.server.credentials and kind != "HealthCheckRequest":
            token = dict(payload.metadata.headers).get("accessToken") or (request.get("headers") or {}).get(
                "accessToken"
            )
            if token not in self.server.tokens:
                return _failure(response_kind, NO_RIGHT, "user not found!")
        try:
            return function(self.server, connection, request)
        except Rejected as exc:
            return _failure(response_kind, exc.code, exc.message)


class BiStreamService(BiRequestStreamServicer):
    """`GrpcBiStreamRequestAcceptor.requestBiStream`: set-up, responses to server requests, and the end."""

    def __init__(self, server: Server) -> None:
        self.server = server

    async def requestBiStream(  # type: ignore[override]
        self, requests: AsyncIterator[Payload], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Payload]:
        server = self.server
        connection_id = server.connection_id(context.peer())
        connection: Connection | None = None
        set_up = asyncio.Event()

        async def read() -> None:
            nonlocal connection
            try:
                async for payload in requests:
                    body = json.loads(payload.body.value or b"{}")
                    if payload.metadata.type == "ConnectionSetupRequest":
                        connection = Connection(connection_id, body.get("labels") or {})
                        server.connections[connection_id] = connection
                        set_up.set()
                        if body.get("abilityTable") is not None:
                            connection.outbox.put_nowait(
                                _payload("SetupAckRequest", {"abilityTable": {}, "module": "internal", "headers": {}})
                            )
                    elif connection is not None and payload.metadata.type.endswith("Response"):
                        connection.last_active = time.monotonic()
                        future = connection.waiting.get(str(body.get("requestId")))
                        if future is not None and not future.done():
                            future.set_result(body)
            finally:
                server.unregister(connection_id)
                if connection is not None:
                    connection.outbox.put_nowait(None)  # ends the writer even when it was unregistered before
                set_up.set()

        reader = asyncio.ensure_future(read())
        try:
            await set_up.wait()
            while connection is not None:
                item = await connection.outbox.get()
                if item is None:
                    break
                yield item
        finally:
            reader.cancel()
            server.unregister(connection_id)


# -- HTTP: login and the test hooks ---------------------------------------


async def login(request: web.Request) -> web.Response:
    server: Server = request.app["server"]
    form = await request.post()
    query = request.query
    user = form.get("username") or query.get("username")
    password = form.get("password") or query.get("password")
    if server.credentials is None or (user, password) != server.credentials:
        return web.Response(status=403, text="unknown user!")
    token = secrets.token_urlsafe(24)
    server.tokens.add(token)
    return web.json_response({"accessToken": token, "tokenTtl": 18000, "globalAdmin": False})


async def connections(request: web.Request) -> web.Response:
    server: Server = request.app["server"]
    return web.json_response(
        {
            cid: {"labels": c.labels, "services": sorted("@@".join(k[1:]) for k in c.published)}
            for cid, c in server.connections.items()
        }
    )


async def drop(request: web.Request) -> web.Response:
    server: Server = request.app["server"]
    service = request.query.get("service", "")
    doomed = [cid for cid, c in server.connections.items() if any(k[2] == service for k in c.published)]
    for cid in doomed:
        server.unregister(cid)
    return web.json_response({"dropped": doomed})


async def housekeeping(server: Server) -> None:
    async def clean() -> None:
        while True:
            await asyncio.sleep(EMPTY_SERVICE_CHECK)
            server.clean_empty_services()

    await asyncio.gather(server.eject(), clean())


async def serve(port: int, keep_alive: float, credentials: tuple[str, str] | None) -> None:
    server = Server(keep_alive, credentials)
    grpc_server = grpc.aio.server()
    add_RequestServicer_to_server(RequestService(server), grpc_server)
    add_BiRequestStreamServicer_to_server(BiStreamService(server), grpc_server)
    grpc_server.add_insecure_port(f"127.0.0.1:{port + GRPC_OFFSET}")
    app = web.Application()
    app["server"] = server
    app.router.add_post("/nacos/v1/auth/users/login", login)
    app.router.add_post("/nacos/v1/auth/login", login)
    app.router.add_get("/_emulator/connections", connections)
    app.router.add_post("/_emulator/drop", drop)
    runner = web.AppRunner(app)
    await runner.setup()
    await grpc_server.start()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await housekeeping(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8848)
    parser.add_argument("--keep-alive", type=float, default=20.0, help="idle seconds before a client is probed")
    parser.add_argument("--user-env", help="environment variable holding the one user's name (turns auth on)")
    parser.add_argument("--password-env", help="environment variable holding that user's password")
    args = parser.parse_args()
    credentials = None
    if args.user_env:
        credentials = (os.environ[args.user_env], os.environ[args.password_env])
    asyncio.run(serve(args.port, args.keep_alive, credentials))


if __name__ == "__main__":
    main()
