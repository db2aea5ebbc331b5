"""A throwaway certificate authority for TLS tests, made with the openssl command line.

One CA signs a server certificate for 127.0.0.1 and a client certificate;
nothing here is ever trusted outside the test's temporary directory.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Pki:
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    def cert(self, name: str) -> Path:
        return self.directory / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.directory / f"{name}-key.pem"

    @classmethod
    def make(cls, directory: Path, *, clients: tuple[str, ...] = ("client",)) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        pki = cls(directory)
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=smmf-test-ca",
            "-keyout", "ca-key.pem", "-out", "ca.pem", cwd=directory,
        )  # fmt: skip
        pki._issue("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth")
        for name in clients:
            pki._issue(name, "extendedKeyUsage=clientAuth")
        return pki

    def _issue(self, name: str, extensions: str) -> None:
        (self.directory / f"{name}.ext").write_text(extensions + "\n")
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", cwd=self.directory,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=self.directory,
        )  # fmt: skip
