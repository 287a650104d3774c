"""Kafka over TLS for real: every kind of client connects with the settings alone.

The local broker (Tansu 0.6.0) cannot serve TLS itself (tests/freshrec/
test_kafka_config.py says why), so a TLS-terminating proxy stands in front of
it, as a load balancer would in production: the broker listens in plaintext on
one loopback port and advertises the proxy's, so every connection a client
makes, bootstrap and partition leaders alike, goes through TLS with a
certificate from a throwaway CA. With ``FRESHREC_KAFKA_SECURITY_PROTOCOL=SSL``
and ``FRESHREC_KAFKA_SSL_CA_FILE``, the publisher (librdkafka), the dead-letter
reader and the retrain's changelog snapshot (librdkafka) and the worker (Faust's
aiokafka) all reach it; a client without the CA, or speaking plaintext, does not.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from freshrec.errors import DeliveryError, TransientError
from freshrec.kafka_config import client_config
from freshrec.settings import Settings
from freshrec.stack import LOOPBACK, BrokerProcess, free_port
from retrain.snapshot import read_changelog
from streams.dlq import read_topic
from streams.publisher import Publisher
from streams.topics import ensure_topics
from tests.api_process import quick_processes
from tests.freshrec.conftest import server_cert
from tests.streams.worker import (
    WorkerProcess,
    changelog_states,
    publish,
    read_list,
    watch,
)

pytestmark = pytest.mark.integration


class TlsProxy:
    """Terminates TLS on ``port`` and pipes each connection to ``upstream`` in plaintext."""

    def __init__(self, port: int, upstream: int, context: ssl.SSLContext) -> None:
        self.port, self.upstream, self.context = port, upstream, context
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tls-proxy", daemon=True)

    def __enter__(self) -> TlsProxy:
        self._thread.start()
        assert self._started.wait(10), "the TLS proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, LOOPBACK, self.port, ssl=self.context)
        )
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.upstream)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@dataclass(frozen=True)
class TlsBroker:
    bootstrap_servers: str
    ca_file: str


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory, test_ca: Path) -> Iterator[TlsBroker]:
    d = tmp_path_factory.mktemp("kafka-tls")
    cert, key = server_cert(test_ca, d, LOOPBACK)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    outer = free_port()
    broker = BrokerProcess(log_path=d / "broker.log", advertised=f"{LOOPBACK}:{outer}")
    with TlsProxy(outer, broker.port, context):
        broker.start()
        try:
            yield TlsBroker(f"{LOOPBACK}:{outer}", str(test_ca / "ca.pem"))
        finally:
            broker.stop()


def over_tls(settings: Settings, broker: TlsBroker, **changes: object) -> Settings:
    tls: dict[str, object] = {
        "bootstrap_servers": broker.bootstrap_servers,
        "kafka_security_protocol": "SSL",
        "kafka_ssl_ca_file": broker.ca_file,
    }
    return settings.replace(**(tls | changes))


def test_publisher_dead_letter_reader_and_snapshot_connect_over_tls(
    settings: Settings, tls_broker: TlsBroker
) -> None:
    tls = over_tls(settings, tls_broker)
    ensure_topics(tls)
    with Publisher(tls) as pub:
        pub.publish(watch("tls-1", "ada", "m1", 1_763_870_000_000))
    assert [m.key() for m in read_topic(tls, tls.topic_watch)] == [b"ada"]
    snap = read_changelog(tls.bootstrap_servers, tls.topic_watch, 30, config=client_config(tls))
    assert snap.end_offsets and sum(snap.end_offsets.values()) == 1


def test_a_client_without_the_ca_or_in_plaintext_is_refused(
    settings: Settings, tls_broker: TlsBroker, test_ca: Path
) -> None:
    """The proxy really is TLS with our CA: neither the system's CAs nor plaintext get in."""
    ensure_topics(over_tls(settings, tls_broker))  # so that only the connection can fail
    system_cas = over_tls(settings, tls_broker, kafka_ssl_ca_file="", publish_timeout_s=2.0)
    plaintext = settings.replace(
        bootstrap_servers=tls_broker.bootstrap_servers, publish_timeout_s=2.0
    )
    for client in (system_cas, plaintext):
        with pytest.raises((DeliveryError, TransientError)), Publisher(client) as pub:
            pub.publish(watch("tls-2", "bob", "m1", 1_763_870_000_000))


def test_the_worker_consumes_and_writes_its_changelog_over_tls(
    settings: Settings, tls_broker: TlsBroker, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Faust's aiokafka consumer and the worker's librdkafka producer, over TLS: an event
    published through the proxy becomes a list in Redis and a record in the changelog."""
    tls = over_tls(quick_processes(settings), tls_broker)
    ensure_topics(tls)
    worker = WorkerProcess(tls, tmp_path / "worker.log").start()
    try:
        publish(tls, [watch("tls-3", "cy", "m1", 1_763_870_000_000)])
        worker.wait_for(lambda: read_list(redis_client, tls, "cy") is not None, 60, "cy's list")
        assert changelog_states(tls)["cy"] is not None
    finally:
        worker.kill()  # done with it: an orderly stop costs a second or two
