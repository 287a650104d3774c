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
