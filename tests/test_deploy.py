"""deploy/: the Kubernetes manifests, the systemd units and the Dockerfile, checked as far as these machines allow.

- Kubernetes: each kustomization rendered by `kubectl kustomize` (Debian's
  kubernetes-client, or whatever kubectl is on PATH), every document
  validated strictly against the Kubernetes API's schemas by
  `kubernetes-validate`, offline; then what the sidecar pattern needs, and
  every smmf command line parsed by smmf's own parser, so a renamed flag
  fails here and not in a cluster.
- systemd: `systemd-analyze verify` on each unit, which must print nothing.
- Dockerfile: no Docker engine runs here, so it is checked, not built.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from smmf.cli import parser
from tests.support.processes import ROOT

DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = ["kubernetes", *(f"kubernetes/overlays/{name}" for name in ("llama-cpp", "vllm", "proxy"))]
#: The oldest Kubernetes release the manifests are checked against, and the newest the validator knows.
VERSIONS = ["1.29.0", latest_version()]
RBAC = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ServiceAccount"}


def render(path: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl not found: `make packages` installs Debian's kubernetes-client"
    done = subprocess.run([kubectl, "kustomize", str(DEPLOY / path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def smmf_args(args: list[str], values: dict[str, str] | None = None) -> Any:
    """Parse a container's or unit's smmf arguments as the `smmf` command would; SystemExit on a bad flag.

    `$(VAR)` and `${VAR}` take their value from `values`, else an address (a pod's IP, say).
    """
    known = values or {}
    substituted = [
        re.sub(r"\$\((\w+)\)|\$\{(\w+)\}", lambda m: known.get(m.group(1) or m.group(2), "10.0.0.9"), arg)
        for arg in args
    ]
    return parser().parse_args(substituted)


def unit_examples() -> dict[str, str]:
    """The variables the example environment files next to the units set."""
    values: dict[str, str] = {}
    for example in (DEPLOY / "systemd").glob("*.env.example"):
        for line in example.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                name, value = line.split("=", 1)
                values[name] = value
    return values


@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_document_validates_against_the_kubernetes_schemas(rendered: list[dict[str, Any]], version: str) -> None:
    assert rendered
    for document in rendered:
        kubernetes_validate.validate(document, version, strict=True)


def _pods(rendered: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [
        d["spec"]["template"]["spec"]
        for d in rendered
        if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["labels"]["app.kubernetes.io/name"] == name
    ]


def test_nothing_needs_rbac_or_a_service_account_token(rendered: list[dict[str, Any]]) -> None:
    assert not {d["kind"] for d in rendered} & RBAC
    for document in rendered:
        if document["kind"] in ("Deployment", "StatefulSet"):
            assert document["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_model_pods_follow_the_sidecar_pattern(rendered: list[dict[str, Any]]) -> None:
    for pod in _pods(rendered, "smmf-model"):
        containers = {c["name"]: c for c in pod["containers"]}
        assert set(containers) == {"worker", "sidecar"}
        sidecar, worker = containers["sidecar"], containers["worker"]
        env = {e["name"]: e for e in sidecar["env"]}
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert env["SMMF_REGISTRY"]["valueFrom"]["configMapKeyRef"]["name"] == "smmf-registry"

        args = smmf_args(sidecar["args"])
        assert args.command == "sidecar" and args.advertise == "http://10.0.0.9:8080"
        assert args.upstream == "http://127.0.0.1:8080" and args.status_address == ("0.0.0.0", 9090)
        assert args.drain_timeout + 10 <= pod["terminationGracePeriodSeconds"]
        assert sidecar["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 9090}
        assert "readinessProbe" not in worker, "the sidecar decides readiness"
        for container in (sidecar, worker):
            assert container["lifecycle"]["preStop"]["httpGet"] == {"path": "/drain", "port": 9090}

        if worker.get("command", ["smmf"])[0] == "vllm":
            assert args.upstream_type == "vllm" and worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
        else:
            worker_args = smmf_args(worker["args"])
            assert worker_args.command == "worker" and worker_args.port == 8080 and worker_args.model == args.model
            if worker_args.backend == "proxy":
                key = {e["name"]: e for e in worker["env"]}[worker_args.api_key_env]
                assert set(key) == {"name", "valueFrom"} and "secretKeyRef" in key["valueFrom"]


def test_the_gateway_and_etcd(rendered: list[dict[str, Any]]) -> None:
    for pod in _pods(rendered, "smmf-gateway"):
        (container,) = pod["containers"]
        args = smmf_args(container["args"])
        assert args.command == "gateway" and args.host == "0.0.0.0"
        token = {e["name"]: e for e in container["env"]}[args.admin_token_env]
        assert "secretKeyRef" in token["valueFrom"]
    for pod in _pods(rendered, "smmf-etcd"):
        flags = dict(arg.split("=", 1) for arg in pod["containers"][0]["command"][1:])
        assert len(flags["--initial-cluster"].split(",")) == 3
    (statefulset,) = [d for d in rendered if d["kind"] == "StatefulSet"] or [None]
    if statefulset is not None:
        assert statefulset["spec"]["replicas"] == 3
        (registry,) = [d for d in rendered if d["kind"] == "ConfigMap"]
        assert registry["data"]["url"].count("smmf-etcd-") == 3


UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_units_verify(unit: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found: `make packages` installs systemd"
    smmf = str(Path(sys.executable).parent / "smmf")
    # The units name /usr/local/bin/smmf, where an install puts it; verify needs an executable there.
    name = unit.name.replace("@.service", "@example.service")
    (tmp_path / name).write_text(unit.read_text().replace("/usr/local/bin/smmf", smmf))
    done = subprocess.run([analyze, "verify", str(tmp_path / name)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), done.stderr + done.stdout

    service = dict(
        line.split("=", 1) for line in unit.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    assert service["Restart"] in ("always", "on-failure")
    assert "EnvironmentFile" in service
    if "smmf" in service["ExecStart"]:
        values = unit_examples()
        command = shlex.split(service["ExecStart"].replace("$SMMF_WORKER_ARGS ", values["SMMF_WORKER_ARGS"] + " "))
        args = smmf_args(command[1:], values)
        assert args.command in ("sidecar", "gateway")
        if args.command == "sidecar":
            separator, binary, *worker = args.command_line
            worker_args = smmf_args(worker, values)
            assert (separator, binary) == ("--", "/usr/local/bin/smmf") and worker_args.command == "worker"
            assert worker_args.model == args.model == values["SMMF_MODEL"]
        if args.command == "gateway":
            assert args.admin_token_env and "TOKEN=" not in service["ExecStart"]


def test_the_dockerfile_builds_from_files_that_exist() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
    assert "pip wheel" in text and '".[${EXTRAS}]"' in text and '"smmf[${EXTRAS}]"' in text
    assert re.search(r"^ENTRYPOINT \[\"smmf\"\]$", text, flags=re.M) and re.search(r"^USER \d+$", text, flags=re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".cache" in ignored
