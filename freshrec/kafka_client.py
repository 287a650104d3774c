"""The quick first contact with the broker that every command makes.

:func:`check_broker` is the quick first contact every command makes: without
it, a missing broker shows as a full admin or read timeout (10 s, 30 s) spent
retrying a refused connection. With it, the command fails within
``FRESHREC_BROKER_CONNECT_TIMEOUT_S`` with one line that says what librdkafka
saw last.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from freshrec.errors import TransientError
from freshrec.kafka_config import client_config
from freshrec.settings import Settings


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
    admin = AdminClient(client_config(settings) | {"logger": probe_log})
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
