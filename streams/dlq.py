"""``freshrec dlq list`` and ``freshrec dlq replay``: read the dead-letter topic, fix, resend.

Reading uses no consumer group and commits nothing: it assigns every partition
of the topic from the beginning and stops at the high watermarks it saw at
start, so listing twice shows the same records and never "uses them up".
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

from confluent_kafka import Consumer, KafkaException, TopicPartition

from freshrec.errors import TransientError
from freshrec.settings import Settings
from schemas.validator import Rejection, validate
from streams.dead_letter import DeadLetter, unique
from streams.publisher import Publisher


def read_dead_letters(settings: Settings, timeout_s: float = 30.0) -> list[DeadLetter]:
    """Every dead letter in the topic now, one per source message, in partition order."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"{settings.app_id}-dlq-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    topic = settings.topic_dead_letter
    letters: list[DeadLetter] = []
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return []
        ends: dict[int, int] = {}
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s
            )
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        deadline = time.monotonic() + timeout_s
        position = {p: -1 for p in ends}
        while any(position[p] < ends[p] - 1 for p in ends):
            if time.monotonic() > deadline:
                raise TransientError(
                    f"reading {topic!r} did not reach its end within {timeout_s:.0f}s"
                )
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is not None:
                    raise TransientError(f"reading {topic!r}: {msg.error()}")
                position[msg.partition()] = msg.offset()
                if msg.offset() < ends[msg.partition()]:
                    letters.append(DeadLetter.from_record(msg.key(), msg.value(), msg.headers()))
    except KafkaException as exc:
        raise TransientError(
            f"cannot read {topic!r} from {settings.bootstrap_servers}: {exc}"
        ) from exc
    finally:
        consumer.close()
    return unique(letters)


@dataclass
class ReplayReport:
    """What a replay did: how many were republished, and the still-invalid ones per reason."""

    replayed: int = 0
    still_invalid: Mapping[str, int] = field(default_factory=dict)


def replay(settings: Settings, letters: list[DeadLetter], dry_run: bool = False) -> ReplayReport:
    """Re-validate ``letters`` and publish the valid ones to their source topics."""
    kinds = {
        settings.topic_watch: "watch",
        settings.topic_rate: "rate",
        settings.topic_forget: "forget",
    }
    fixed: list[DeadLetter] = []
    still_invalid: dict[str, int] = {}
    for letter in letters:
        result = validate(letter.value, kinds.get(letter.topic))
        if isinstance(result, Rejection):
            reason = f"{result.field}/{result.rule}"
            still_invalid[reason] = still_invalid.get(reason, 0) + 1
        else:
            fixed.append(letter)
    if fixed and not dry_run:
        # The publisher keys each event by its user_id, which also repairs the
        # letters that were rejected only for a wrong message key.
        with Publisher(settings) as publisher:
            publisher.publish_many(letter.value for letter in fixed)
    ranked = dict(sorted(still_invalid.items(), key=lambda kv: (-kv[1], kv[0])))
    return ReplayReport(len(fixed), ranked)
