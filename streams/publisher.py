"""Publish events to Kafka for site back-ends: validated, keyed by user, never dropped silently.

The producer runs with ``acks=all`` and idempotence on, so a retried send
never duplicates a message in the log, and every message is keyed by user id,
so all of one user's events land on one partition, in order, and reach the same
worker. A message that the broker has not acknowledged within
``FRESHREC_PUBLISH_TIMEOUT_S`` raises :class:`~freshrec.errors.DeliveryError`
(sync) or fails the returned future (async); nothing is dropped quietly.

The producer's settings (:func:`freshrec.kafka_producer.producer_config`) and
the message an event becomes (:func:`schemas.wire.as_message`) are shared with
the API's ``POST /events``, which may not import this package.

Both forms take typed events (``schemas.events``), dicts or raw JSON bytes, and
validate every one of them the same way, against the schema files: a typed
event is a plain dataclass anyone can build with any values, so it is turned
into its JSON object and checked like a dict. A bad one is refused with a
:class:`~freshrec.errors.BadInputError` naming the field and rule.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from freshrec.errors import BadInputError, DeliveryError
from freshrec.kafka_producer import (
    ACK_GRACE_S,
    PolledProducer,
    producer_config,
    renewed,
    spends_producer,
)
from freshrec.settings import Settings
from schemas import items
from schemas.events import Event, to_dict
from schemas.items import ItemRecord, encode_record
from schemas.validator import Rejection, validate, validate_item
from schemas.wire import as_message

EventLike = Event | ItemRecord | Mapping[str, Any] | bytes | str
#: An item record as :meth:`Publisher.publish_items` takes it: typed, a dict, or JSON.
ItemLike = ItemRecord | Mapping[str, Any] | bytes | str

#: How long a send waits for room when librdkafka's local queue is full before
#: trying again; delivery reports served meanwhile free the room.
QUEUE_FULL_WAIT_S = 0.01


def _offer(
    producer: Producer, settings: Settings, ev: Event | ItemRecord, on_delivery: Any
) -> bool:
    """Queue ``ev`` on its topic, keyed by user (an item record: by item); False when the
    local queue is full.

    The sync and async publishers differ only in how they wait for room (serving
    delivery reports, or yielding to the event loop while the poller does).
    """
    if isinstance(ev, ItemRecord):
        topic, key, value = items.as_message(settings, ev)
    else:
        topic, key, value = as_message(settings, ev)
    try:
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    except BufferError:
        return False
    return True


def prepare(event: EventLike) -> Event | ItemRecord:
    """Turn any accepted input into a validated event, or raise ``BadInputError``.

    Typed events are validated too: ``RateEvent(..., rating=7)`` is as wrong as
    the dict it stands for, and would otherwise end in the dead-letter topic.
    An :class:`~schemas.items.ItemRecord`, or a dict whose ``type`` is ``item``,
    is an item record (:func:`prepare_item`); JSON bytes are always an event
    (:meth:`Publisher.publish_items` takes item records as bytes).
    """
    if isinstance(event, ItemRecord) or (
        isinstance(event, Mapping) and event.get("type") == "item"
    ):
        return prepare_item(event)
    if isinstance(event, (bytes, str)):
        result = validate(event)
    elif isinstance(event, Mapping):
        result = validate(orjson.dumps(dict(event)))
    else:
        try:
            raw = orjson.dumps(to_dict(event))
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise BadInputError(f"payload: is not a freshrec event ({exc})") from None
        result = validate(raw)
    if isinstance(result, Rejection):
        raise BadInputError(str(result))
    return result


def prepare_item(record: ItemLike) -> ItemRecord:
    """Turn an item record in any accepted form into a validated one, or raise
    ``BadInputError``; a typed one is checked like the dict it stands for."""
    if isinstance(record, ItemRecord):
        try:
            raw: bytes | str = encode_record(record)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise BadInputError(f"payload: is not a freshrec item record ({exc})") from None
    elif isinstance(record, Mapping):
        raw = orjson.dumps(dict(record))
    else:
        raw = record
    result = validate_item(raw)
    if isinstance(result, Rejection):
        raise BadInputError(str(result))
    return result


@dataclass
class PublishReport:
    """What :meth:`Publisher.publish_many` did: counts, and each rejected input with its reason."""

    sent: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


class _Delivery:
    """Collects delivery reports from librdkafka's callback thread."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.delivered = 0
        #: Why the producer is spent (:func:`~freshrec.kafka_producer.spends_producer`).
        self.spent: str | None = None
        self._lock = threading.Lock()

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        with self._lock:
            if err is not None:
                if spends_producer(err.code()):
                    self.spent = err.str()
                self.failures.append(f"{msg.topic()} key={msg.key()!r}: {err.str()}")
            else:
                self.delivered += 1


class Publisher:
    """Synchronous publisher. Use as a context manager, or call :meth:`close`.

    After a flush that failed for a timeout or a fatal error (a broker that
    lost its state no longer knows the idempotent producer's id, and the
    producer fails or times out everything from then on), the next send makes a
    new producer, so a long-lived site back-end recovers without a restart.
    """

    def __init__(self, settings: Settings, **config: Any) -> None:
        self.settings = settings
        self._config = config
        self._producer = Producer(producer_config(settings, **config))
        self._delivery = _Delivery()

    def send(self, event: EventLike) -> None:
        """Queue one event; :meth:`flush` waits for it. Raises ``BadInputError`` on bad input."""
        ev = prepare(event)
        self._produce(ev)

    def _renew_if_spent(self) -> None:
        if self._delivery.spent is None:
            return
        self._producer = renewed(self._producer, self.settings, self._config)
        self._delivery.spent = None

    def _poll(self, timeout_s: float) -> None:
        """Serve delivery reports; confluent-kafka raises a fatal error from here."""
        try:
            self._producer.poll(timeout_s)
        except KafkaException as exc:
            self._delivery.spent = str(exc)

    def _produce(self, ev: Event | ItemRecord) -> None:
        self._renew_if_spent()
        while not _offer(self._producer, self.settings, ev, self._delivery):
            # The local queue is full: serve delivery reports until there is room.
            self._poll(QUEUE_FULL_WAIT_S)
        self._poll(0)

    def flush(self) -> int:
        """Wait until every queued event is acknowledged; return how many were delivered.

        Raises :class:`DeliveryError` when any event failed or the timeout passed
        with events still in flight.
        """
        try:
            left = self._producer.flush(self.settings.publish_timeout_s + ACK_GRACE_S)
        except KafkaException as exc:
            self._delivery.spent = str(exc)
            left = len(self._producer)
        failures, self._delivery.failures = self._delivery.failures, []
        delivered, self._delivery.delivered = self._delivery.delivered, 0
        if left:
            failures.append(f"{left} event(s) still unacknowledged after the timeout")
            self._delivery.spent = failures[-1]
        if failures:
            raise DeliveryError(
                f"{len(failures)} delivery failure(s) to {self.settings.bootstrap_servers}; "
                f"first: {failures[0]}"
            )
        return delivered

    def publish(self, event: EventLike) -> None:
        """Send one event and wait for the broker's acknowledgement."""
        self.send(event)
        self.flush()

    def publish_many(self, events: Iterable[EventLike]) -> PublishReport:
        """Validate and send many; bad ones are reported (by position), good ones all sent.

        Raises :class:`DeliveryError` when any valid event was not acknowledged.
        """
        return self._publish_all(events, prepare)

    def publish_items(self, records: Iterable[ItemLike]) -> PublishReport:
        """:meth:`publish_many` for item records (typed, dicts or JSON, ``type`` optional):
        each keyed by item id on the items topic."""
        return self._publish_all(records, prepare_item)

    def _publish_all(
        self, records: Iterable[Any], check: Callable[[Any], Event | ItemRecord]
    ) -> PublishReport:
        """Each of ``records`` made ready by ``check`` and sent; a refused one is reported by
        its position and reason, and the valid ones are all sent and flushed."""
        report = PublishReport()
        for position, record in enumerate(records, start=1):
            try:
                ev = check(record)
            except BadInputError as exc:
                report.rejected.append((position, exc.reason))
                continue
            self._produce(ev)
            report.sent += 1
        self.flush()
        return report

    def close(self) -> None:
        self._producer.flush(self.settings.publish_timeout_s)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPublisher(PolledProducer):
    """asyncio publisher: ``await publisher.publish(event)`` returns once the broker acked it.

    The poller thread (:class:`~freshrec.kafka_producer.PolledProducer`) serves
    librdkafka's delivery reports and resolves each send's future on the event
    loop, so the loop never blocks on the network.
    """

    def __init__(self, settings: Settings, **config: Any) -> None:
        super().__init__(settings, "freshrec-publisher", **config)

    async def publish(self, event: EventLike) -> None:
        """Send one event; raises ``BadInputError`` at once, ``DeliveryError`` if never acked."""
        ev = prepare(event)
        self.renew_if_spent()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None and spends_producer(err.code()):
                self.spent = err.str()

            def settle() -> None:
                if done.done():
                    return
                if err is not None:
                    done.set_exception(
                        DeliveryError(f"{msg.topic()} key={msg.key()!r}: {err.str()}")
                    )
                else:
                    done.set_result(None)

            loop.call_soon_threadsafe(settle)

        while not _offer(self._producer, self.settings, ev, on_delivery):
            # The local queue is full: the poller serves delivery reports meanwhile.
            await asyncio.sleep(QUEUE_FULL_WAIT_S)
        try:
            await asyncio.wait_for(done, self.settings.publish_timeout_s + ACK_GRACE_S)
        except TimeoutError:
            self.spent = "no acknowledgement in time"
            raise DeliveryError(
                f"no acknowledgement from {self.settings.bootstrap_servers} within "
                f"{self.settings.publish_timeout_s}s"
            ) from None

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
