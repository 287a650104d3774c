"""The one place freshrec's confluent-kafka clients get their connection and logging settings.

librdkafka writes its own log lines (``%3|...|FAIL|...``) straight to stderr
unless a client is given a Python logger; every client made through
:func:`client_config` logs through ``freshrec.kafka.librdkafka`` instead, at
the level of ``FRESHREC_LOG_LEVEL``, so a command's output stays its own.

:func:`check_broker` is the quick first contact every command makes: without
it, a missing broker shows as a full admin or read timeout (10 s, 30 s) spent
retrying a refused connection. With it, the command fails within
``FRESHREC_BROKER_CONNECT_TIMEOUT_S`` with one line that says what librdkafka
saw last.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from freshrec.errors import TransientError
from freshrec.settings import Settings

#: The logger librdkafka's own messages go through.
LIBRDKAFKA_LOG = logging.getLogger("freshrec.kafka.librdkafka")

#: librdkafka's ``log_level`` (syslog severities) for each ``FRESHREC_LOG_LEVEL``, so that it
#: does not format messages the Python logger would drop.
_SYSLOG_LEVEL = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3}


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Bootstrap servers and logging for a Producer, Consumer or AdminClient, plus ``extra``."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "logger": LIBRDKAFKA_LOG,
        "log_level": _SYSLOG_LEVEL[settings.log_level],
    }
    config.update(extra)
    return config


class _LastMessage(logging.Handler):
    """Keeps the last message librdkafka logged during a probe, for the error line."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()


def check_broker(settings: Settings) -> None:
    """Raise :class:`TransientError` unless the broker answers a metadata request in time.

    librdkafka's messages during the probe are kept, not printed: the last one
    (usually "Connect to ... failed: Connection refused") goes into the error.
    """
    timeout_s = settings.broker_connect_timeout_s
    probe_log = logging.Logger("freshrec.kafka.probe", logging.DEBUG)
    last = _LastMessage()
    probe_log.addHandler(last)
    admin = AdminClient(client_config(settings, logger=probe_log))
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        admin.poll(0)
        detail = _short(last.last) if last.last else str(exc.args[0])
        raise TransientError(
            f"no answer from the broker at {settings.bootstrap_servers} within {timeout_s:g}s "
            f"({detail}); start it or fix FRESHREC_BOOTSTRAP_SERVERS"
        ) from None


def _short(message: str) -> str:
    """librdkafka's ``[thrd:...]: host/bootstrap: what happened`` without the prefixes."""
    return message.rsplit(": ", 1)[-1] if ": " in message else message
