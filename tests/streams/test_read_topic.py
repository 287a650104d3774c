"""streams.dlq.read_topic: every record of a topic, whatever the broker says its end is."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from freshrec.settings import Settings
from streams.dlq import read_topic

pytestmark = pytest.mark.integration


def test_reads_every_record_of_several_record_batches(
    settings: Settings, topics: list[str]
) -> None:
    """Tansu answers ListOffsets with the last record batch's first offset + 1.

    Two producer batches (5 records, then 3) into one partition: a reader that
    stops at that answer gets 6 of the 8 records.
    """
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 50})
    for batch in (range(5), range(5, 8)):
        for n in batch:
            producer.produce(settings.topic_watch, key=b"u1", value=b"%d" % n, partition=0)
        assert producer.flush(10) == 0
    records = read_topic(settings, settings.topic_watch, timeout_s=10)
    assert [(m.partition(), m.offset(), m.value()) for m in records] == [
        (0, n, b"%d" % n) for n in range(8)
    ]


def test_a_topic_without_records_reads_as_empty(settings: Settings, topics: list[str]) -> None:
    assert read_topic(settings, settings.topic_rate, timeout_s=10) == []
