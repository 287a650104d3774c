"""The one place where Kafka client connections are configured from settings.

Every confluent-kafka client (the publisher, topic admin, the dead-letter
tools, the retrain's changelog snapshot) starts from :func:`client_config`,
and the Faust worker (aiokafka underneath) from :func:`faust_credentials`, so
that a production cluster behind TLS and SASL is reached by setting
``FRESHREC_KAFKA_*`` alone, the same way by every process. The password comes
from the environment (a Kubernetes secret), never from a file in the repository.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Any

from freshrec.repeats import RepeatFilter
from freshrec.settings import Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT


#: The logger librdkafka's own messages go through (they would go straight to stderr).
#: A fault it reports on every reconnect (a broker down: about 9 lines a second) is shown
#: once, then at a backoff with a count (:class:`~freshrec.repeats.RepeatFilter`).
LIBRDKAFKA_LOG = logging.getLogger("freshrec.kafka.librdkafka")
LIBRDKAFKA_LOG.addFilter(RepeatFilter())

#: librdkafka's ``log_level`` (syslog severities) for each ``FRESHREC_LOG_LEVEL``, so that it
#: does not format messages the Python logger would drop.
_SYSLOG_LEVEL = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3}


def client_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings for the brokers, how to reach them and where its log lines go:
    add a client's own to it.

    librdkafka writes ``%3|...|FAIL|...`` lines straight to stderr unless a
    client is given a Python logger; these clients log through
    ``freshrec.kafka.librdkafka`` at ``FRESHREC_LOG_LEVEL``, so a command's
    output stays its own.
    """
    protocol = settings.kafka_security_protocol
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": protocol.lower(),
        "logger": LIBRDKAFKA_LOG,
        "log_level": _SYSLOG_LEVEL[settings.log_level],
    }
    if protocol.startswith("SASL_"):
        config |= {
            "sasl.mechanism": settings.kafka_sasl_mechanism,
            "sasl.username": settings.kafka_sasl_username,
            "sasl.password": settings.kafka_sasl_password,
        }
    if protocol.endswith("SSL") and settings.kafka_ssl_ca_file:
        config["ssl.ca.location"] = settings.kafka_ssl_ca_file
    return config


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of aiokafka connections (None without TLS): the CA file or the system's.

    Hostnames are checked, as librdkafka does by default
    (``ssl.endpoint.identification.algorithm=https``), so both libraries accept
    the same brokers.
    """
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    return ssl.create_default_context(cafile=settings.kafka_ssl_ca_file or None)


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for the settings; None for PLAINTEXT.

    Faust is imported here, not at the top: the confluent-kafka clients (the
    publisher in a site back-end, the retrain job) need not load it.
    """
    from faust.auth import SASLCredentials, SSLCredentials

    protocol = settings.kafka_security_protocol
    context = ssl_context(settings)
    if protocol.startswith("SASL_"):
        return SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    if context is not None:
        return SSLCredentials(context)
    return None
