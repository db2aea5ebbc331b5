"""The Nacos emulator, checked with a client smmf did not write: nacos-sdk-python's `v2.nacos`, driven directly.

If the emulator strayed from the protocol the SDK speaks with a real Nacos
server (payload types, JSON field names, the connection set-up, pushes and
their acknowledgements, config listening), these fail before any smmf test
could pass against it by accident.  A raw gRPC call with the SDK's proto
checks what the SDK hides: a request on a connection that never set up.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.any_pb2 import Any as AnyBody
from v2.nacos import (
    ClientConfigBuilder,
    ConfigParam,
    GRPCConfig,
    NacosConfigService,
    NacosException,
    NacosNamingService,
)
from v2.nacos.naming.model.naming_param import (
    BatchRegisterInstanceParam,
    ListInstanceParam,
    RegisterInstanceParam,
    SubscribeServiceParam,
)
from v2.nacos.transport.grpcauto.nacos_grpc_service_pb2 import Metadata, Payload
from v2.nacos.transport.grpcauto.nacos_grpc_service_pb2_grpc import RequestStub

from tests.support.helpers import eventually
from tests.support.nacos import GRPC_OFFSET, NacosEmulator


def _config(emulator: NacosEmulator, tmp: Path, namespace: str = "") -> Any:
    config = (
        ClientConfigBuilder()
        .server_address(emulator.address)
        .namespace_id(namespace)
        .log_dir(str(tmp / "logs"))
        .cache_dir(str(tmp / "cache"))
        .log_level(logging.WARNING)
        .grpc_config(GRPCConfig(grpc_timeout=3000))
        .load_cache_at_start(False)
        .build()
    )
    config.update_cache_when_empty = True
    return config


@pytest.fixture
async def naming(nacos: NacosEmulator, tmp_path: Path) -> AsyncIterator[NacosNamingService]:
    service = await NacosNamingService.create_naming_service(_config(nacos, tmp_path))
    yield service
    await service.shutdown()


def _instance(service: str, port: int, **metadata: str) -> RegisterInstanceParam:
    return RegisterInstanceParam(
        service_name=service, group_name="emu", ip="10.1.1.1", port=port, metadata=metadata or {"k": "v"}
    )


async def _hosts(naming: NacosNamingService, service: str) -> list[int]:
    param = ListInstanceParam(service_name=service, group_name="emu", subscribe=False, healthy_only=None)
    return sorted(i.port for i in await naming.list_instances(param))


async def test_register_subscribe_push_and_deregister_with_the_sdk(
    naming: NacosNamingService, nacos: NacosEmulator, tmp_path: Path
) -> None:
    pushed: list[list[int]] = []

    async def on_push(instances: list[Any]) -> None:
        pushed.append(sorted(i.port for i in instances))

    await naming.subscribe(SubscribeServiceParam(service_name="sdk-a", group_name="emu", subscribe_callback=on_push))
    other = await NacosNamingService.create_naming_service(_config(nacos, tmp_path / "other"))
    try:
        assert await other.register_instance(_instance("sdk-a", 1))
        await eventually(lambda: _async(pushed and pushed[-1] == [1]), 10)
        # One instance per service per connection: registering again replaces it.
        assert await other.register_instance(_instance("sdk-a", 2))
        await eventually(lambda: _async(pushed[-1] == [2]), 10)
        batch = BatchRegisterInstanceParam(
            service_name="sdk-a", group_name="emu", instances=[_instance("sdk-a", 3), _instance("sdk-a", 4)]
        )
        assert await other.batch_register_instances(batch)
        await eventually(lambda: _async(pushed[-1] == [3, 4]), 10)
    finally:
        await other.shutdown()  # its connection goes, and its instances with it
    await eventually(lambda: _async(pushed[-1] == []), 10)
    assert await _hosts(naming, "sdk-a") == []


async def test_metadata_over_1024_characters_is_refused_with_400(naming: NacosNamingService) -> None:
    with pytest.raises(NacosException) as refused:
        await naming.register_instance(_instance("sdk-big", 1, big="x" * 1100))
    assert refused.value.error_code == 400 and "Metadata" in str(refused.value)
    assert await naming.register_instance(_instance("sdk-big", 1, small="x" * 900))


async def test_config_publish_query_listen_cas_and_remove_with_the_sdk(nacos: NacosEmulator, tmp_path: Path) -> None:
    configs = await NacosConfigService.create_config_service(_config(nacos, tmp_path))
    heard: list[str] = []

    async def listener(tenant: str, group: str, data_id: str, content: str) -> None:
        heard.append(content)

    try:
        assert await configs.publish_config(ConfigParam(data_id="d.one", group="emu", content="first"))
        assert await configs.get_config(ConfigParam(data_id="d.one", group="emu")) == "first"
        await configs.add_listener("d.one", "emu", listener)
        await asyncio.sleep(6)  # the SDK sends its listen request on its 5-second tick
        assert await configs.publish_config(ConfigParam(data_id="d.one", group="emu", content="second"))
        await eventually(lambda: _async(heard and heard[-1] == "second"), 10)
        stale = ConfigParam(data_id="d.one", group="emu", content="third", cas_md5="0" * 32)
        with pytest.raises(NacosException, match="Cas publish fail"):
            await configs.publish_config(stale)
        assert await configs.remove_config(ConfigParam(data_id="d.one", group="emu"))
        assert await configs.get_config(ConfigParam(data_id="d.one", group="emu")) == ""
    finally:
        await configs.shutdown()


async def test_blank_and_public_namespaces_are_the_same(nacos: NacosEmulator, tmp_path: Path) -> None:
    blank = await NacosNamingService.create_naming_service(_config(nacos, tmp_path / "blank"))
    public = await NacosNamingService.create_naming_service(_config(nacos, tmp_path / "public", "public"))
    try:
        await blank.register_instance(_instance("sdk-ns", 7))
        await eventually(lambda: _ports_are(public, "sdk-ns", [7]), 10)
    finally:
        await blank.shutdown()
        await public.shutdown()


async def _ports_are(naming: NacosNamingService, service: str, ports: list[int]) -> bool:
    return await _hosts(naming, service) == ports


async def test_a_request_on_a_connection_that_never_set_up_gets_301(nacos: NacosEmulator) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{nacos.port + GRPC_OFFSET}") as channel:
        stub = RequestStub(channel)
        body = {"namespace": "", "groupName": "emu", "serviceName": "x", "headers": {}, "requestId": "1"}
        request = Payload(
            metadata=Metadata(type="ServiceQueryRequest", clientIp="127.0.0.1"),
            body=AnyBody(value=json.dumps(body).encode()),
        )
        answer = await stub.request(request, timeout=10)
        assert answer.metadata.type == "ErrorResponse"
        assert json.loads(answer.body.value)["errorCode"] == 301
        check = Payload(metadata=Metadata(type="ServerCheckRequest"), body=AnyBody(value=b"{}"))
        assert json.loads((await stub.request(check, timeout=10)).body.value)["connectionId"]


async def _async(value: object) -> object:
    return value
