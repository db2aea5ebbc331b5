"""The Consul emulator, checked with two clients smmf did not write: py-consul's synchronous client and npm's `consul`.

Both run one scenario (register with a TTL check, health, catalog, KV, check passes, a blocking query); their
answers are compared with each other and with the shapes Consul's HTTP API documentation gives.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import consul
import pytest

from tests.support.consul import ConsulEmulator

NODE_SCENARIO = Path(__file__).parent / "node" / "consul_scenario.js"

# Consul's documentation: /health/service/:service's sample response, /agent/check, /kv.
HEALTH_ENTRY = {"Node", "Service", "Checks"}
NODE_FIELDS = {"ID", "Node", "Address", "Datacenter", "TaggedAddresses", "Meta", "CreateIndex", "ModifyIndex"}
SERVICE_FIELDS = {"ID", "Service", "Tags", "Address", "Meta", "Port", "Weights", "EnableTagOverride"}
SERVICE_FIELDS |= {"CreateIndex", "ModifyIndex"}
CHECK_FIELDS = {"Node", "CheckID", "Name", "Status", "Notes", "Output", "ServiceID", "ServiceName", "ServiceTags"}
KV_FIELDS = {"CreateIndex", "ModifyIndex", "LockIndex", "Key", "Flags", "Value"}


def _node_scenario(emulator: ConsulEmulator) -> dict[str, Any]:
    node_modules = NODE_SCENARIO.parent / "node_modules" / "consul"
    assert node_modules.is_dir(), "the npm consul package is missing: `make node` installs it"
    done = subprocess.run(
        ["node", str(NODE_SCENARIO)],
        env={**os.environ, "CONSUL_PORT": str(emulator.port)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _python_scenario(emulator: ConsulEmulator) -> dict[str, Any]:
    client = consul.Consul(host="127.0.0.1", port=emulator.port)
    out: dict[str, Any] = {}
    client.agent.service.register(
        "web",
        service_id="web-1",
        address="10.0.0.1",
        port=8080,
        tags=["smmf", "v1"],
        meta={"model": "Web/One"},
        check={"TTL": "10s", "Status": "passing", "DeregisterCriticalServiceAfter": "90s"},
    )
    _, out["health"] = client.health.service("web", passing=True)
    _, out["catalog"] = client.catalog.services()
    out["kvSet"] = client.kv.put("smmf/admin/web-1", "offline")
    out["kvCreateAgain"] = client.kv.put("smmf/admin/web-1", "x", cas=0)
    _, entry = client.kv.get("smmf/admin/web-1")
    out["kvGet"] = entry | {"Value": entry["Value"].decode()}
    _, entries = client.kv.get("smmf/", recurse=True)
    out["kvRecurse"] = [e | {"Value": e["Value"].decode()} for e in entries]
    _, out["kvKeys"] = client.kv.get("smmf/", keys=True)
    _, out["kvMissing"] = client.kv.get("smmf/none")
    client.agent.check.ttl_pass("service:web-1")
    out["passUnknown"] = client.agent.check.ttl_pass("service:nope")  # py-consul answers a 404 with False
    index, first = client.health.service("web")
    woken = threading.Timer(
        0.5, lambda: client.agent.service.register("web", service_id="web-2", check={"TTL": "10s", "Status": "passing"})
    )
    woken.start()
    started = time.monotonic()
    after, second = client.health.service("web", index=index, wait="5s")
    out["blocking"] = [
        {"index": index, "ids": sorted(e["Service"]["ID"] for e in first)},
        {"index": after, "ids": sorted(e["Service"]["ID"] for e in second)},
    ]
    out["blockedFor"] = time.monotonic() - started
    out["kvDelete"] = client.kv.delete("smmf/", recurse=True)
    client.agent.service.deregister("web-1")
    client.agent.service.deregister("web-2")
    _, out["after"] = client.health.service("web")
    return out


def _without_indexes(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_indexes(v) for k, v in data.items() if k not in ("CreateIndex", "ModifyIndex")}
    if isinstance(data, list):
        return [_without_indexes(item) for item in data]
    return data


@pytest.mark.parametrize("client", ["py-consul", "npm consul"])
def test_the_emulator_answers_as_consul_documents(start_consul: Any, client: str) -> None:
    emulator: ConsulEmulator = start_consul()
    out = _python_scenario(emulator) if client == "py-consul" else _node_scenario(emulator)

    (entry,) = out["health"]
    assert set(entry) == HEALTH_ENTRY
    assert set(entry["Node"]) >= NODE_FIELDS and set(entry["Service"]) >= SERVICE_FIELDS
    service = entry["Service"]
    assert (service["ID"], service["Service"], service["Address"], service["Port"]) == (
        "web-1",
        "web",
        "10.0.0.1",
        8080,
    )
    assert service["Meta"] == {"model": "Web/One"} and service["Weights"] == {"Passing": 1, "Warning": 1}
    checks = {c["CheckID"]: c for c in entry["Checks"]}
    assert set(checks) == {"serfHealth", "service:web-1"} and all(set(c) >= CHECK_FIELDS for c in checks.values())
    mine = checks["service:web-1"]
    assert (mine["Name"], mine["Status"], mine["ServiceID"]) == ("Service 'web' check", "passing", "web-1")
    assert mine["Definition"]["DeregisterCriticalServiceAfterDuration"] == "1m30s"
    assert out["catalog"] == {"consul": [], "web": ["smmf", "v1"]}

    assert out["kvSet"] is True
    assert set(out["kvGet"]) >= KV_FIELDS and out["kvGet"]["Value"] == "offline"
    assert [e["Key"] for e in out["kvRecurse"]] == ["smmf/admin/web-1"] and out["kvKeys"] == ["smmf/admin/web-1"]
    assert out["kvMissing"] is None
    if client == "py-consul":
        assert out["kvCreateAgain"] is False, "cas=0 writes only a key that does not exist"
        assert out["passUnknown"] is False
    else:
        assert out["passUnknown"]["status"] == 404

    first, second = out["blocking"]
    assert int(second["index"]) > int(first["index"]) >= 1
    assert (first["ids"], second["ids"]) == (["web-1"], ["web-1", "web-2"]), "the write woke the blocked query"
    assert out["kvDelete"] is True and out["after"] == []


def test_both_clients_see_the_same_answers(start_consul: Any) -> None:
    python = _python_scenario(start_consul())
    node = _node_scenario(start_consul())
    for step in ("health", "catalog", "kvGet", "kvRecurse", "kvKeys", "after"):
        assert _without_indexes(python[step]) == _without_indexes(node[step]), step
