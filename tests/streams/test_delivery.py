"""Sending a batch's records: every acknowledgement awaited, refusals told from outages."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from confluent_kafka import KafkaError

from freshrec.errors import TransientError
from freshrec.kafka_producer import AsyncBatchProducer, DeliveryError, OutgoingRecord
from freshrec.settings import Settings
from streams.delivery import WORKER_PRODUCER_CONFIG, RecordRefusedError, send_all
from streams.dlq import read_topic
from streams.topology import TopologyError


class Answers:
    def __init__(self, *errors: DeliveryError | None) -> None:
        self.errors = list(errors)

    async def send_records(self, records: Sequence[OutgoingRecord]) -> list[DeliveryError | None]:
        assert len(records) == len(self.errors)
        return self.errors


RECORDS = [OutgoingRecord("t", b"k1", b"v1", 0), OutgoingRecord("t", b"k2", None, 1)]


class HeldAcks:
    """A producer whose acknowledgements arrive only when the test releases them."""

    def __init__(self) -> None:
        self.handed: list[OutgoingRecord] = []
        self.release = asyncio.Event()

    async def send_records(self, records: Sequence[OutgoingRecord]) -> list[DeliveryError | None]:
        self.handed.extend(records)
        await self.release.wait()
        return [None] * len(records)


def test_send_all_returns_once_every_record_is_acknowledged() -> None:
    """Regression (issue 28, a weak test): this test once only checked that send_all did
    not raise. It must hand every record over and not return before their acks."""

    async def scenario() -> None:
        producer = HeldAcks()
        sending = asyncio.create_task(send_all("changelog", producer, RECORDS))
        async with asyncio.timeout(5):
            while not producer.handed:
                await asyncio.sleep(0.01)
        assert producer.handed == RECORDS
        await asyncio.sleep(0.05)  # time for a wrong send_all to return early
        assert not sending.done(), "send_all returned before the acknowledgements"
        producer.release.set()
        async with asyncio.timeout(5):
            await sending

    asyncio.run(scenario())


def test_a_missing_topic_or_partition_is_a_topology_error_never_retried() -> None:
    """Regression (issue 28): a changelog with fewer partitions than the event topics
    failed one batch with "Unknown partition" on every attempt for 305 s, then on every
    restart. No retry fixes it: it is not a TransientError."""
    answers = Answers(
        DeliveryError("Local: Unknown partition", KafkaError._UNKNOWN_PARTITION), None
    )
    with pytest.raises(TopologyError, match="no such topic or partition") as caught:
        asyncio.run(send_all("changelog", answers, RECORDS))
    assert not isinstance(caught.value, TransientError)


def test_a_record_refused_for_its_size_is_not_an_outage() -> None:
    """A refused record fails every retry the same way: it must reach prepare_isolating,
    which splits the batch down to it (issue 10), not the retry policy."""
    answers = Answers(DeliveryError("Broker: Message size too large", 10), None)
    with pytest.raises(RecordRefusedError, match="1 of 2 records"):
        asyncio.run(send_all("changelog", answers, RECORDS))


def test_any_other_failure_is_transient_for_the_retry_policy() -> None:
    answers = Answers(DeliveryError("Local: Message timed out", -192), DeliveryError("queue full"))
    with pytest.raises(TransientError, match="2 of 2 records"):
        asyncio.run(send_all("dead-letter", answers, RECORDS))


@pytest.mark.integration
def test_the_worker_producer_writes_partitions_headers_and_tombstones_and_refuses_a_huge_record(
    settings: Settings, topics: list[str]
) -> None:
    topic = settings.topic_dead_letter
    records = [
        OutgoingRecord(topic, b"k1", b"v1", 2, [("freshrec.dlq.reason", b"why")]),
        OutgoingRecord(topic, b"k2", None, 1),
        OutgoingRecord(topic, b"k3", b"x" * 2_000_000, 0),
    ]

    async def send() -> list[DeliveryError | None]:
        producer = AsyncBatchProducer(settings, **WORKER_PRODUCER_CONFIG)
        try:
            return await producer.send_records(records)
        finally:
            await producer.close()

    ok1, ok2, huge = asyncio.run(send())
    assert (ok1, ok2) == (None, None)
    assert huge is not None and huge.too_large
    got = {m.key(): m for m in read_topic(settings, topic, timeout_s=10)}
    assert set(got) == {b"k1", b"k2"}
    assert (got[b"k1"].partition(), got[b"k1"].value()) == (2, b"v1")
    assert got[b"k1"].headers() == [("freshrec.dlq.reason", b"why")]
    assert (got[b"k2"].partition(), got[b"k2"].value()) == (1, None)
