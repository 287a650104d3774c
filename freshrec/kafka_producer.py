"""The producer every freshrec process sends with, and an asyncio form that awaits a batch's acks.

Both the publisher site back-ends use (``streams.publisher``) and the API's
``POST /events`` (``serving.events``) produce events; ``streams`` and
``serving`` may not import each other, so what both need lives here, at the
bottom: :func:`producer_config` (``acks=all``, idempotence, the publish
timeout, every connection setting from :func:`freshrec.kafka_config.client_config`)
and :class:`AsyncBatchProducer` (on :class:`PolledProducer`, which the
publisher's asyncio form shares). It knows nothing of events: it sends
``(topic, key, value)`` messages and reports, per message, whether the broker
acknowledged it. The streaming worker sends its changelog records and dead
letters through it too (:meth:`AsyncBatchProducer.send_records`: explicit
partitions, headers, tombstones, and an error code per refused record).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from freshrec.kafka_config import client_config
from freshrec.settings import Settings

#: The shortest socket timeout given to librdkafka, whatever ``publish_timeout_s``:
#: below a second a busy broker's slow answer would drop and redial the connection.
MIN_SOCKET_TIMEOUT_MS = 1000
#: How much longer than ``publish_timeout_s`` a flush or an awaited send waits:
#: librdkafka fails an unacknowledged message at ``message.timeout.ms``, and its
#: delivery report (which says why) should arrive before our own timeout fires.
ACK_GRACE_S = 1.0
#: How long the poller thread blocks waiting for delivery reports; it also bounds
#: how long :meth:`PolledProducer.close` waits for the thread to stop.
POLL_INTERVAL_S = 0.05

#: One message to produce: topic, key, value.
OutgoingMessage = tuple[str, bytes, bytes]

#: librdkafka's "any partition": the producer's partitioner picks one from the key.
ANY_PARTITION = -1


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """One record to produce, with what :data:`OutgoingMessage` leaves out."""

    topic: str
    key: bytes | None
    value: bytes | None
    """None is a tombstone (a compacted topic deletes the key)."""
    partition: int = ANY_PARTITION
    headers: Sequence[tuple[str, bytes]] | None = None


#: Error codes that refuse a record for its size: no retry changes the answer.
TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
#: Failures after which a producer is replaced (:func:`spends_producer`).
SPENDING = frozenset({KafkaError._FATAL, KafkaError._MSG_TIMED_OUT})


def spends_producer(code: int | None) -> bool:
    """Whether a delivery failure with this code should retire its producer.

    A fatal error ends a librdkafka producer for good. A message that timed out
    may leave it stuck: an idempotent producer whose id a broker forgot (one
    that lost its state) was answered UNKNOWN_PRODUCER_ID on every retry and
    timed out forever, never reaching the fatal state (Tansu; librdkafka could
    not reset its sequence there). A new producer asks for a new id.
    """
    return code in SPENDING


def renewed(spent: Producer, settings: Settings, config: dict[str, Any]) -> Producer:
    """A new producer (:func:`producer_config` with ``config``) for a spent one, whose
    held messages are purged and their reports served now: their senders learn of the
    failure at once rather than at their timeout."""
    fresh = Producer(producer_config(settings, **config))
    spent.purge()
    spent.flush(0)
    return fresh


@dataclass(frozen=True, slots=True)
class DeliveryError:
    """Why the broker has not acknowledged a record: librdkafka's reason and error code."""

    reason: str
    code: int | None = None
    """:class:`confluent_kafka.KafkaError`'s code; None for our own (a timeout, a full queue)."""

    @property
    def spends_producer(self) -> bool:
        """Whether the producer should be replaced after this failure (:func:`spends_producer`)."""
        return spends_producer(self.code)

    @property
    def too_large(self) -> bool:
        """Whether the record was refused for its size (by the producer or the broker)."""
        return self.code in TOO_LARGE

    def __str__(self) -> str:
        return self.reason


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """The confluent-kafka settings every freshrec producer uses."""
    timeout_ms = int(settings.publish_timeout_s * 1000)
    config: dict[str, Any] = client_config(settings) | {
        "acks": "all",
        "enable.idempotence": True,
        "message.timeout.ms": timeout_ms,
        "socket.timeout.ms": max(timeout_ms, MIN_SOCKET_TIMEOUT_MS),
        "linger.ms": settings.publish_linger_s * 1000,
        "compression.type": "lz4",
    }
    config.update(extra)
    return config


class _Batch:
    """The outcome of one batch, filled in by librdkafka's delivery reports (poller thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.errors: list[DeliveryError | None] = [None] * size
        #: The first failure that spends the producer (:func:`spends_producer`), if any.
        self.spent: str | None = None
        self.reported = [False] * size
        self.remaining = size
        self.done: asyncio.Future[None] = loop.create_future()
        self._lock = threading.Lock()

    def settle(self, index: int, error: DeliveryError | None) -> None:
        """Record message ``index``'s outcome; the last one wakes the waiting coroutine once."""
        with self._lock:
            if self.reported[index]:
                return
            self.reported[index] = True
            self.errors[index] = error
            if error is not None and self.spent is None and error.spends_producer:
                self.spent = error.reason
            self.remaining -= 1
            last = self.remaining == 0
        if last:
            self.loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def report(self, index: int) -> Any:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            self.settle(index, None if err is None else DeliveryError(err.str(), err.code()))

        return on_delivery


class PolledProducer:
    """A producer (:func:`producer_config`) whose delivery reports a background thread
    serves, so that asyncio code never blocks on them: what :class:`AsyncBatchProducer`
    and the publisher's ``AsyncPublisher`` are built on.

    Creating one does not touch the network: librdkafka connects in the background.

    After a send that timed out or a fatal error (:func:`spends_producer`), the
    next send swaps in a new producer (:meth:`renew_if_spent`), so a long-lived
    owner (the API, a site back-end's publisher, the worker) recovers from a
    broker that lost its state without a restart.
    """

    def __init__(self, settings: Settings, thread_name: str, **config: Any) -> None:
        self.settings = settings
        #: Why the producer is to be replaced at the next send, once it is.
        self.spent: str | None = None
        self._config = config
        self._producer = Producer(producer_config(settings, **config))
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name=thread_name, daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._closed.is_set():
            try:
                self._producer.poll(POLL_INTERVAL_S)
            except KafkaException as exc:
                # confluent-kafka raises librdkafka's fatal error from poll(); it once
                # ended this thread, and with it the delivery reports: every later batch
                # then waited out the publish timeout. The thread goes on (each message
                # now fails at once) and the next send renews the producer.
                self.spent = str(exc)

    def renew_if_spent(self) -> None:
        """Put a new producer in a spent one's place (the poller serves it from its next
        poll); what the old one still held fails at once (purged), so its senders learn
        it now rather than at their timeout."""
        if self.spent is None:
            return
        self._producer = renewed(self._producer, self.settings, self._config)
        self.spent = None

    def broker_problem(self, timeout_s: float) -> str | None:
        """Why the brokers cannot take records now (no metadata within ``timeout_s``), or None.

        One metadata request on the producer's own connections: a few milliseconds
        with a broker up, ``timeout_s`` with none reachable. Blocking: call it in a thread.
        """
        try:
            self._producer.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            return f"no answer from {self.settings.bootstrap_servers}: {exc.args[0]}"
        return None

    async def close(self) -> None:
        """Wait (up to the publish timeout) for what is in flight, then stop the poller."""
        await asyncio.to_thread(self._producer.flush, self.settings.publish_timeout_s)
        self._closed.set()
        await asyncio.to_thread(self._poller.join)


class AsyncBatchProducer(PolledProducer):
    """Send a batch of messages from asyncio and learn, per message, whether the broker has it.

    A batch wakes its coroutine once, when its last delivery report arrives
    (not once per message), so a batch of a hundred costs the event loop one
    wake-up. A broker that cannot be reached shows as failed messages after
    ``publish_timeout_s``.
    """

    def __init__(self, settings: Settings, **config: Any) -> None:
        super().__init__(settings, "freshrec-producer", **config)

    async def send(self, messages: Sequence[OutgoingMessage]) -> list[str | None]:
        """Produce ``messages`` and wait for their acknowledgements.

        Returns one entry per message: None when the broker acknowledged it, or
        why it did not (librdkafka's reason, a full local queue, or no answer
        within ``publish_timeout_s``). Never raises for a delivery failure.
        """
        errors = await self.send_records(
            [OutgoingRecord(topic, key, value) for topic, key, value in messages]
        )
        return [None if error is None else error.reason for error in errors]

    async def send_records(self, records: Sequence[OutgoingRecord]) -> list[DeliveryError | None]:
        """:meth:`send` for :class:`OutgoingRecord`\\ s, with the error code of each failure."""
        if not records:
            return []
        self.renew_if_spent()
        batch = _Batch(asyncio.get_running_loop(), len(records))
        produce = self._producer.produce
        for index, record in enumerate(records):
            try:
                produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    partition=record.partition,
                    on_delivery=batch.report(index),
                    headers=None if record.headers is None else list(record.headers),
                )
            except BufferError:
                batch.settle(index, DeliveryError("the producer's local queue is full"))
            except KafkaException as exc:  # an unknown topic, a message too large
                error = exc.args[0] if exc.args else None
                code = error.code() if isinstance(error, KafkaError) else None
                batch.settle(index, DeliveryError(str(exc), code))
            except Exception as exc:
                batch.settle(index, DeliveryError(str(exc)))
        try:
            await asyncio.wait_for(
                asyncio.shield(batch.done), self.settings.publish_timeout_s + ACK_GRACE_S
            )
        except TimeoutError:
            for index in range(len(records)):
                batch.settle(
                    index,
                    DeliveryError(
                        f"no acknowledgement from {self.settings.bootstrap_servers} within "
                        f"{self.settings.publish_timeout_s:g}s",
                        KafkaError._MSG_TIMED_OUT,
                    ),
                )
        self.spent = self.spent or batch.spent
        return list(batch.errors)
