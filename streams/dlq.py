"""``freshrec dlq list`` and ``freshrec dlq replay``: read the dead-letter topic, fix, resend.

Reading commits nothing: it assigns every partition of the topic from the
beginning and reads to the end (:func:`read_topic`), so listing twice shows the
same records and never "uses them up".
Records are deduplicated by source topic/partition/offset (a message
redelivered after a crash is dead-lettered again, see
:mod:`streams.dead_letter`).

Replay re-validates each dead letter's original bytes against its source
topic's schema, as the worker would today, and publishes the ones that now
pass to their topic with the same key; the ones still invalid are counted per
reason. Replaying twice is harmless: the worker drops repeated ``event_id``\\ s.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from freshrec.errors import TransientError
from freshrec.kafka_client import check_broker
from freshrec.kafka_config import client_config
from freshrec.settings import Settings
from schemas.validator import Rejection, validate, validate_item
from schemas.wire import event_types
from streams.dead_letter import DeadLetter, unique
from streams.publisher import Publisher

#: Records one ``consume`` call may return: large enough that a long topic is
#: read in few calls, small enough that the deadline is checked between them.
CONSUME_BATCH = 1000
#: How long one ``consume`` call waits for records: short, so that a partition's
#: end-of-file events are seen soon after they come.
CONSUME_WAIT_S = 0.2


def read_topic(settings: Settings, topic: str, timeout_s: float | None = None) -> list[Message]:
    """Every record of ``topic`` now, partition by partition, without a consumer group.

    Gives up with a :class:`~freshrec.errors.TransientError` after ``timeout_s``
    (``settings.topic_read_timeout_s`` by default), or within
    ``settings.broker_connect_timeout_s`` when the broker does not answer at all.

    Reads each partition that holds records until the broker says its end is
    reached (librdkafka's partition-EOF event, which follows the high watermark
    of the Fetch responses). Not the ListOffsets answer: some Kafka-compatible
    brokers (Tansu among them) put it at the last record batch's first offset
    + 1, short of the records after it (docs/worker.md, "Restarts on Tansu").
    """
    check_broker(settings)
    consumer = Consumer(
        client_config(settings)
        | {
            "group.id": f"{settings.app_id}-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    if timeout_s is None:
        timeout_s = settings.topic_read_timeout_s
    records: list[Message] = []
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return []
        pending = set()
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s
            )
            if high > low:
                pending.add(partition)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TransientError(f"reading {topic!r} did not end within {timeout_s:.0f}s")
            for msg in consumer.consume(CONSUME_BATCH, CONSUME_WAIT_S):
                error = msg.error()
                if error is None:
                    records.append(msg)
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                else:
                    raise TransientError(f"reading {topic!r}: {error}")
    except KafkaException as exc:
        raise TransientError(
            f"cannot read {topic!r} from {settings.bootstrap_servers}: {exc}"
        ) from exc
    finally:
        consumer.close()
    return records


def read_dead_letters(settings: Settings, timeout_s: float | None = None) -> list[DeadLetter]:
    """Every dead letter in the topic now, one per source message."""
    records = read_topic(settings, settings.topic_dead_letter, timeout_s)

    def pairs(headers: object) -> list[tuple[str, str | bytes | None]]:
        # confluent-kafka types headers as a dict or a list; a consumed record has a list.
        if isinstance(headers, dict):
            return list(headers.items())
        return list(headers) if isinstance(headers, list) else []

    return unique(DeadLetter.from_record(m.key(), m.value(), pairs(m.headers())) for m in records)


@dataclass
class ReplayReport:
    """What a replay did: how many were republished, and the still-invalid ones per reason."""

    replayed: int = 0
    still_invalid: Mapping[str, int] = field(default_factory=dict)


def replay(settings: Settings, letters: list[DeadLetter], dry_run: bool = False) -> ReplayReport:
    """Re-validate ``letters`` and publish the valid ones to their source topics (an item
    record's letter as an item record)."""
    kinds = event_types(settings)
    fixed: list[DeadLetter] = []
    fixed_items: list[DeadLetter] = []
    still_invalid: dict[str, int] = {}
    for letter in letters:
        is_item = letter.topic == settings.topic_items
        result: object = (
            validate_item(letter.value)
            if is_item
            else validate(letter.value, kinds.get(letter.topic))
        )
        if isinstance(result, Rejection):
            reason = f"{result.field}/{result.rule}"
            still_invalid[reason] = still_invalid.get(reason, 0) + 1
        else:
            (fixed_items if is_item else fixed).append(letter)
    if (fixed or fixed_items) and not dry_run:
        # The publisher keys each event by its user_id (an item record by its item_id),
        # which also repairs the letters that were rejected only for a wrong message key.
        with Publisher(settings) as publisher:
            if fixed:
                publisher.publish_many(letter.value for letter in fixed)
            if fixed_items:
                publisher.publish_items(letter.value for letter in fixed_items)
    ranked = dict(sorted(still_invalid.items(), key=lambda kv: (-kv[1], kv[0])))
    return ReplayReport(len(fixed) + len(fixed_items), ranked)
