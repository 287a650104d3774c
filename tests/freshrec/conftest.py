"""Fixtures shared by the connection tests: a throwaway certificate authority."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


def openssl(*args: str) -> None:
    """Run ``openssl`` with ``args``; raises with its output when it fails."""
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a throwaway CA, ``ca.pem`` and ``ca.key``, made now (no key is
    ever committed), valid for a day."""
    d = tmp_path_factory.mktemp("ca")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=freshrec-test-ca",
        "-keyout",
        str(d / "ca.key"),
        "-out",
        str(d / "ca.pem"),
    )
    return d


def server_cert(ca: Path, d: Path, host: str) -> tuple[Path, Path]:
    """(certificate, key) for a server on ``host`` (localhost and that IP), signed by ``ca``."""
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        str(d / "server.key"),
        "-out",
        str(d / "server.csr"),
    )
    (d / "san.cnf").write_text(f"subjectAltName=DNS:localhost,IP:{host}\n")
    openssl(
        "x509",
        "-req",
        "-in",
        str(d / "server.csr"),
        "-CA",
        str(ca / "ca.pem"),
        "-CAkey",
        str(ca / "ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        str(d / "san.cnf"),
        "-out",
        str(d / "server.pem"),
    )
    return d / "server.pem", d / "server.key"
