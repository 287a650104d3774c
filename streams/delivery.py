"""Sending records to Kafka and waiting until the broker has every one of them.

The worker's changelog records and dead letters must both be durable before
their batch is acked (see docs/worker.md, "Delivery"), and both are sent the
same way: the whole batch of records is handed to the producer at once, then
every acknowledgement is awaited together, so that a batch's records travel
in a few requests rather than one round trip each. A broker fault is a
:class:`~freshrec.errors.TransientError` for the caller's retry policy to
retry; a resend is harmless, since both kinds of record are idempotent to
their readers. A record refused for its size is a :class:`RecordRefusedError`,
which no retry fixes (:meth:`streams.pipeline.BatchProcessor.prepare_isolating`
splits the batch down to it).

Both go through confluent-kafka (:class:`freshrec.kafka_producer.AsyncBatchProducer`,
the publisher's and the API's producer) rather than Faust's aiokafka producer:
a changelog record cost about 6.4 µs of the worker's main thread through
aiokafka (its record batching and sender loop are Python on the event loop)
against about 1.5 µs through librdkafka, whose batching, compression and
retries run in its own threads (issue 16).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from confluent_kafka import KafkaError

from freshrec.errors import FreshrecError, TransientError
from freshrec.kafka_producer import AsyncBatchProducer, DeliveryError, OutgoingRecord
from freshrec.settings import Settings
from streams.topology import TopologyError

#: Error codes of a record whose topic or partition does not exist. The same batch
#: failed with "Unknown partition" on every attempt for 305 s, then on every
#: restart, on a changelog with fewer partitions than the event topics (issue 28):
#: a :class:`~streams.topology.TopologyError`, never retried.
MISSING_DESTINATION = frozenset(
    {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC}
)

#: How long the worker's producer waits to fill a request. A batch's changelog
#: records and dead letters are sent together and awaited together: a short
#: linger packs them into a few requests instead of one request per record,
#: and 2 ms is small beside a batch's own wait (``batch_max_wait_s``).
PRODUCER_LINGER_MS = 2

#: The worker's producer settings on top of :func:`freshrec.kafka_producer.producer_config`
#: (acks=all, the connection settings, SASL/TLS included).
#:
#: - No compression, as with the aiokafka producer before: a batch's records go
#:   out once and are read back only at recovery, and compressing them would
#:   cost the core the worker runs on.
#: - No idempotence, as before: the producer id it needs held a new producer's
#:   first records for a second on the test broker (Tansu), the first batch's
#:   freshness with them, and it adds nothing here. Every record is a whole
#:   value, a resend writes the same bytes again, and one batch's records are
#:   acknowledged before the next batch's are sent (the batch lock), so a
#:   retry can never land a key's older value after its newer one.
WORKER_PRODUCER_CONFIG: dict[str, Any] = {
    "linger.ms": PRODUCER_LINGER_MS,
    "compression.type": "none",
    "enable.idempotence": False,
}


class RecordProducer(Protocol):
    """What :func:`send_all` sends with (an :class:`AsyncBatchProducer`, or a test's fake)."""

    async def send_records(
        self, records: Sequence[OutgoingRecord]
    ) -> list[DeliveryError | None]: ...


class WorkerProducer:
    """The worker's one producer of changelog records and dead letters, made on first use.

    Made lazily so that building the app (a test, ``faust -A streams.app``'s
    import) starts no librdkafka threads; :meth:`close` flushes what is in
    flight at shutdown.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AsyncBatchProducer | None = None

    def start(self) -> AsyncBatchProducer:
        """Make the producer now (librdkafka connects in the background), if not yet made:
        at worker start, so that the first batch does not wait for the connection."""
        if self._producer is None:
            self._producer = AsyncBatchProducer(self._settings, **WORKER_PRODUCER_CONFIG)
        return self._producer

    async def send_records(self, records: Sequence[OutgoingRecord]) -> list[DeliveryError | None]:
        return await self.start().send_records(records)

    async def close(self) -> None:
        """Wait (up to the publish timeout) for the records in flight, then stop."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.close()


async def send_all(what: str, producer: RecordProducer, records: Sequence[OutgoingRecord]) -> None:
    """Send ``records`` and return once the broker acknowledged every one of them.

    ``what`` names the records in the error. Raises :class:`RecordRefusedError`
    when a record was refused for its size (no retry changes the answer: the
    batch is split down to the record that causes it, see
    :mod:`streams.pipeline`), :class:`~streams.topology.TopologyError` when a
    topic or partition does not exist, and :class:`TransientError` for any other
    failure, which may be an outage: the caller's policy retries it.
    """
    if not records:
        return
    errors = await producer.send_records(records)
    failed = [error for error in errors if error is not None]
    if not failed:
        return
    refused = next((error for error in failed if error.too_large), None)
    tally = f"{len(failed)} of {len(records)} records"
    if refused is not None:
        raise RecordRefusedError(f"{what} write refused ({tally}): {refused}")
    missing = next((error for error in failed if error.code in MISSING_DESTINATION), None)
    if missing is not None:
        raise TopologyError(f"{what} write failed ({tally}): {missing}: no such topic or partition")
    raise TransientError(f"{what} write failed ({tally}): {failed[0]}")


class RecordRefusedError(FreshrecError):
    """The broker (or the producer) refused a record for good: retrying cannot help."""
