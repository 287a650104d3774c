"""Redis over TLS with a password, through the one client factory, against a real redis-server.

The server gets a throwaway CA and certificate made by ``openssl`` at test
time (nothing secret is committed); both the asyncio client (worker, API) and
the blocking one (the retrain lock) must connect with ``rediss://``,
``FRESHREC_REDIS_SSL_CA_FILE`` and ``FRESHREC_REDIS_PASSWORD``, and fail
without the CA or with a wrong password.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from freshrec.errors import ConfigError
from freshrec.redis_client import redis_client, sync_redis_client
from freshrec.settings import Settings
from freshrec.stack import LOOPBACK, free_port, redis_binary, wait_until
from tests.freshrec.conftest import server_cert

pytestmark = pytest.mark.integration

PASSWORD = "test-only-password"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, test_ca: Path) -> Iterator[tuple[str, str]]:
    """(rediss:// URL, CA file) of a redis-server that speaks only TLS and wants a password."""
    d: Path = tmp_path_factory.mktemp("redis-tls")
    ca = test_ca
    cert, key = server_cert(ca, d, LOOPBACK)
    port = free_port()
    proc = subprocess.Popen(
        [
            redis_binary(),
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            LOOPBACK,
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca / "ca.pem"),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"rediss://{LOOPBACK}:{port}/0"
    try:
        ca_file = str(ca / "ca.pem")
        wait_until(lambda: _ping(url, ca_file), 20, "redis-server over TLS")
        yield url, ca_file
    finally:
        proc.terminate()
        proc.wait(10)


def _ping(url: str, ca: str) -> bool:
    s = Settings(redis_url=url, redis_ssl_ca_file=ca, redis_password=PASSWORD)
    return bool(sync_redis_client(s, "probe").ping())


def test_blocking_client_connects_over_tls_with_the_password(tls_redis: tuple[str, str]) -> None:
    url, ca = tls_redis
    client = sync_redis_client(
        Settings(redis_url=url, redis_ssl_ca_file=ca, redis_password=PASSWORD), "freshrec-retrain"
    )
    client.set("k", "v")
    assert client.get("k") == b"v"
    assert client.client_getname() == "freshrec-retrain"


def test_asyncio_client_connects_over_tls_with_the_password(tls_redis: tuple[str, str]) -> None:
    url, ca = tls_redis

    async def roundtrip() -> bytes | str | None:
        client = redis_client(
            Settings(redis_url=url, redis_ssl_ca_file=ca, redis_password=PASSWORD),
            "freshrec-api",
            max_connections=4,
        )
        try:
            await client.set("a", "b")
            return await client.get("a")
        finally:
            await client.aclose()

    assert asyncio.run(roundtrip()) == b"b"


def test_a_wrong_password_or_an_unknown_ca_is_refused(tls_redis: tuple[str, str]) -> None:
    url, ca = tls_redis
    wrong = Settings(redis_url=url, redis_ssl_ca_file=ca, redis_password="wrong")
    with pytest.raises(redis.AuthenticationError):
        sync_redis_client(wrong, "t").ping()
    untrusted = Settings(redis_url=url, redis_password=PASSWORD)  # system CAs only
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        sync_redis_client(untrusted, "t").ping()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRESHREC_REDIS_SSL_CA_FILE": "/etc/hostname"}, r"is not rediss://"),
        (
            {"FRESHREC_REDIS_URL": "rediss://h:6379/0", "FRESHREC_REDIS_SSL_CA_FILE": "/no.pem"},
            r"no such file",
        ),
        (
            {"FRESHREC_REDIS_URL": "redis://:inurl@h:6379/0", "FRESHREC_REDIS_PASSWORD": "x"},
            r"carries a password too",
        ),
    ],
)
def test_bad_redis_security_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)
