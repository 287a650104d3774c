"""The dead-letter record: the original message, untouched, plus why and where it came from.

The record's key and value are the rejected message's own key and bytes (an
empty value stands for a missing one), so a fixed event can be replayed
byte for byte, up to a bound: a dead letter must always fit the producer's
request limit, or one oversized message would stop the worker (issue 10:
a 1 MB value the broker accepted was refused when dead-lettered, the batch
failed, and every restart died on it). A value over :data:`MAX_VALUE_BYTES`
or a key over :data:`MAX_KEY_BYTES` keeps its prefix, and the headers
``size``/``sha256`` (and ``key_size``) name the original; such a value is over
the validator's size limit anyway, so nothing replayable is lost.

Everything else rides in headers, named ``freshrec.dlq.*`` (the
same convention as Kafka Connect's ``__connect.errors.*``): the reason as a
sentence, the validator's field and rule, and the source topic, partition and
offset. The offset is what makes the topic readable despite at-least-once
delivery: a message redelivered after a crash is dead-lettered again, and
readers (``freshrec dlq``) keep one record per source offset.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from freshrec.kafka_producer import OutgoingRecord
from freshrec.retry import RetryPolicy
from schemas.validator import Rejection
from streams.delivery import RecordProducer, send_all

HEADER_PREFIX = "freshrec.dlq."

#: Bytes of a rejected value kept in its dead letter: twice the largest valid
#: event (``schemas.validator.MAX_EVENT_BYTES``), so every replayable value is whole.
MAX_VALUE_BYTES = 8192
#: Bytes of a rejected key kept in its dead letter.
MAX_KEY_BYTES = 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected message and everything needed to understand or replay it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    field: str
    rule: str
    reason: str
    dead_lettered_at: int = 0
    size: int = -1
    """Bytes of the original value; -1 when ``value`` is whole."""
    sha256: str = ""
    """SHA-256 of the original value (hex) when ``value`` is a prefix."""
    key_size: int = -1
    """Bytes of the original key; -1 when ``key`` is whole."""

    @classmethod
    def of(
        cls,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        rejection: Rejection,
    ) -> DeadLetter:
        raw = value or b""
        size, digest = -1, ""
        if len(raw) > MAX_VALUE_BYTES:
            size, digest = len(raw), hashlib.sha256(raw).hexdigest()
            raw = raw[:MAX_VALUE_BYTES]
        key_size = -1
        if key is not None and len(key) > MAX_KEY_BYTES:
            key_size, key = len(key), key[:MAX_KEY_BYTES]
        return cls(
            topic,
            partition,
            offset,
            key,
            raw,
            rejection.field,
            rejection.rule,
            str(rejection),
            int(time.time() * 1000),
            size,
            digest,
            key_size,
        )

    @property
    def truncated(self) -> bool:
        """Whether ``value`` or ``key`` is a prefix of the original."""
        return self.size >= 0 or self.key_size >= 0

    @property
    def source(self) -> tuple[str, int, int]:
        """Where the message came from; unique per original message."""
        return (self.topic, self.partition, self.offset)

    def headers(self) -> list[tuple[str, bytes]]:
        values = {
            "reason": self.reason,
            "field": self.field,
            "rule": self.rule,
            "topic": self.topic,
            "partition": str(self.partition),
            "offset": str(self.offset),
            "at": str(self.dead_lettered_at),
        }
        if self.size >= 0:
            values |= {"size": str(self.size), "sha256": self.sha256}
        if self.key_size >= 0:
            values["key_size"] = str(self.key_size)
        return [(HEADER_PREFIX + name, value.encode()) for name, value in values.items()]

    @classmethod
    def from_record(
        cls,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, str | bytes | None]] | None,
    ) -> DeadLetter:
        """Rebuild a dead letter from a record of the topic; ``ValueError`` if it is not one."""
        found = {
            name[len(HEADER_PREFIX) :]: (
                raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
            )
            for name, raw in (headers or ())
            if name.startswith(HEADER_PREFIX) and raw is not None
        }
        try:
            return cls(
                found["topic"],
                int(found["partition"]),
                int(found["offset"]),
                key,
                value or b"",
                found["field"],
                found["rule"],
                found["reason"],
                int(found.get("at", "0")),
                int(found.get("size", "-1")),
                found.get("sha256", ""),
                int(found.get("key_size", "-1")),
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(f"not a freshrec dead letter (missing or bad header {exc})") from exc


def unique(letters: Iterable[DeadLetter]) -> list[DeadLetter]:
    """One dead letter per source message (the first one read), in reading order."""
    by_source: dict[tuple[str, int, int], DeadLetter] = {}
    for letter in letters:
        by_source.setdefault(letter.source, letter)
    return list(by_source.values())


def count_by_reason(letters: Iterable[DeadLetter]) -> Mapping[str, int]:
    """How many letters per ``field/rule``, most frequent first."""
    counts: dict[str, int] = {}
    for letter in letters:
        name = f"{letter.field}/{letter.rule}"
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


class DeadLetterWriter:
    """Sends dead letters from the worker and waits until the broker has them.

    Waiting matters: the source message is acked right after its batch, so its
    dead letter must be durable first or a crash could lose it. The letters go
    through the worker's confluent-kafka producer (:mod:`streams.delivery`),
    to whichever partition the producer's partitioner picks for their key.
    """

    def __init__(self, producer: RecordProducer, topic: str, retry: RetryPolicy) -> None:
        self._producer = producer
        self._topic = topic
        self._retry = retry

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        records = [
            OutgoingRecord(self._topic, letter.key, letter.value, headers=letter.headers())
            for letter in letters
        ]
        await self._retry.call_async(lambda: send_all("dead-letter", self._producer, records))
