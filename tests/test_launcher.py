"""`smmf up`: a local deployment from a YAML file, and Ctrl-C leaving nothing behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from smmf.sidecar.procfs import descendants
from tests.support.etcd import free_port


def sim_config(tmp_path: Path, ports: list[int]) -> Path:
    lines = ["instances:"]
    for i, port in enumerate(ports):
        lines += [
            f"  - name: sim-{i}",
            "    model: local-sim",
            "    backend: sim",
            f"    port: {port}",
            '    args: ["--ttft-ms", "0", "--tpot-ms", "1"]',
            "    sidecar: {ttl: 3, probe_interval: 0.5}",
        ]
    path = tmp_path / "local.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def smmf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smmf.cli", *args], capture_output=True, text=True, timeout=60)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_up_registers_everything_and_ctrl_c_leaves_nothing_twice_in_a_row(tmp_path: Path, url: str) -> None:
    ports = [free_port() for _ in range(3)]
    config = sim_config(tmp_path, ports)
    for _ in range(2):  # the second run starts right after the first stopped: nothing of it may be in the way
        up = subprocess.Popen(
            [sys.executable, "-m", "smmf.cli", "up", str(config), "--registry", url,
             "--log-dir", str(tmp_path / "logs")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            output = []
            assert up.stdout is not None
            for line in up.stdout:
                output.append(line)
                if "all instances registered" in line:
                    break
            assert any("local-sim" in line for line in output), "".join(output)
            listed = json.loads(smmf("ls", "--registry", url, "--json").stdout)
            assert sorted(r["endpoint"] for r in listed) == sorted(f"http://127.0.0.1:{p}/v1" for p in ports)
            started = descendants(up.pid)
            assert len(started) >= 6, "three sidecars and three workers"

            up.send_signal(signal.SIGINT)
            rest = up.communicate(timeout=60)[0]
            assert up.returncode == 0, rest
            assert "stopped" in rest
        finally:
            if up.poll() is None:
                up.kill()
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in started if _alive(pid)], "no process is left behind"
        assert not any(listening(p) for p in ports)
        assert json.loads(smmf("ls", "--registry", url, "--json").stdout) == [], "no record is left behind"


def test_a_crash_looping_instance_fails_up_with_its_name_and_log(tmp_path: Path) -> None:
    config = tmp_path / "up.yaml"
    config.write_text(
        "instances:\n"
        f"  - {{name: fine, model: m, backend: sim, port: {free_port()}}}\n"
        f"  - {{name: no-key, model: m, backend: proxy, port: {free_port()},\n"
        "     args: [--upstream-url, 'http://127.0.0.1:9/v1', --api-key-env, SMMF_TEST_UNSET_KEY]}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SMMF_TEST_UNSET_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "smmf.cli", "up", str(config), "--registry", f"file://{tmp_path}/r.db",
         "--log-dir", str(tmp_path / "logs"), "--timeout", "300"],
        capture_output=True, text=True, timeout=150, env=env,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "instance 'no-key' stopped" in result.stderr and "SMMF_TEST_UNSET_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_invalid_config_names_the_field_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("instances:\n  - name: a\n    model: m\n    backend: sim\n    port: 8101\n"
                    "  - name: b\n    model: m\n    backend: sim\n    port: not-a-port\n")  # fmt: skip
    result = smmf("up", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "instances[1].port" in result.stderr and f"{path}:9:" in result.stderr

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("instances:\n  - name: a\n    model: m\n    backend: gpt5\n    port: 8101\n")
    result = smmf("up", str(unknown))
    assert result.returncode == 2 and "unknown backend 'gpt5'" in result.stderr and ":4:" in result.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("instances: [\n")
    result = smmf("up", str(broken))
    assert result.returncode == 2 and "not valid YAML" in result.stderr


def test_a_port_in_use_is_named_with_its_instance(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = smmf("up", str(sim_config(tmp_path, [free_port(), port])), "--registry", f"file://{tmp_path}/r.db")
    assert result.returncode == 2
    assert f"port {port} of instance 'sim-1' is already in use" in result.stderr
