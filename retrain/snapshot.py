"""The retrain's consistent snapshot: every user's state from the workers' changelog topic.

The workers keep each user's bounded history in a compacted changelog topic
(one record per user, the newest wins; a tombstone for a forgotten user). The
job reads every partition from its start up to the end offset it had when the
job began, with partitions assigned by hand and no consumer group (nothing is
committed, no rebalance disturbs the workers), keeps the last record per key,
and drops tombstones and forget markers (records with no history). The end
offsets go into the model version: they say exactly which prefix of the stream
the model learnt from.

End offsets are the broker's high watermarks. Some Kafka-compatible brokers
(Tansu, the local stack's) answer ListOffsets with the first offset of the
partition's last record batch + 1, short of the records after it, while their
Fetch responses carry the true high watermark; so each partition's end is the
larger of the two, the Fetch one taken from the first response (on Kafka they
agree). Records appended after that are left for the next run.

This module is the I/O adapter (confluent-kafka); the record's layout is the
contract in :mod:`schemas.state`, shared with the worker that writes it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from freshrec.errors import TransientError
from models.ids import IdMap
from models.interactions import KIND_RATE, KIND_WATCH, InteractionLog
from schemas.state import Interaction, UserState, history_columns

log = logging.getLogger(__name__)

#: Records asked of librdkafka per poll: large, since every record is read.
_POLL_BATCH = 10_000


@dataclass
class Snapshot:
    """The interactions of every user held in the changelog, and where the read stopped."""

    log: InteractionLog
    topic: str
    end_offsets: dict[int, int]
    """Per partition, the offset the read stopped at (exclusive)."""
    records: int = 0
    """Records read (every version of every key, tombstones included)."""
    forgotten: int = 0
    """Users whose newest record is a tombstone or a forget marker: not in ``log``."""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What a model version records about the data it learnt from."""
        return {
            "source": "changelog",
            "topic": self.topic,
            "end_offsets": {str(p): o for p, o in sorted(self.end_offsets.items())},
            "records": self.records,
            "forgotten_users": self.forgotten,
        } | self.extra


ProgressHook = Callable[[int, int], None]
"""Called with (records read so far, records to read in all) while reading."""


def read_changelog(
    bootstrap_servers: str,
    topic: str,
    timeout_s: float = 300.0,
    config: dict[str, Any] | None = None,
    progress: ProgressHook | None = None,
) -> Snapshot:
    """Read ``topic`` up to its end offsets at the start (see the module doc)."""
    started = time.perf_counter()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            # librdkafka wants a group id even for assigned partitions; nothing is committed
            "group.id": f"freshrec-retrain-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
        }
        | (config or {})
    )
    latest: dict[bytes, bytes | None] = {}
    records = 0
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            reason = "it does not exist" if metadata is None else str(metadata.error)
            raise TransientError(f"cannot read the changelog topic {topic!r}: {reason}")
        listed: dict[int, int] = {}
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s
            )
            if high > low:
                listed[partition] = high
        end: dict[int, int] = {p: 0 for p in metadata.partitions}
        pending = set(listed)
        total = sum(listed.values())
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TransientError(f"reading {topic!r} did not end within {timeout_s:.0f}s")
            for msg in consumer.consume(_POLL_BATCH, 0.2):
                p = msg.partition()
                if p not in pending:
                    continue
                if end[p] == 0:  # first response of this partition: fix its end offset
                    fetched = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
                    end[p] = max(listed[p], fetched[1] if fetched else 0)
                    total += end[p] - listed[p]
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise TransientError(f"reading {topic!r}: {error}")
                    pending.discard(p)
                    continue
                offset, key = msg.offset(), msg.key()
                if offset is None or offset >= end[p]:
                    pending.discard(p)
                    continue
                if key is not None:  # the worker keys every record; anything else is not ours
                    latest[key] = msg.value()
                records += 1
                if offset + 1 >= end[p]:
                    pending.discard(p)
            if progress is not None:
                progress(records, total)
    except KafkaException as exc:
        raise TransientError(f"cannot read {topic!r} from {bootstrap_servers}: {exc}") from exc
    finally:
        consumer.close()
    interactions, forgotten = _to_log(latest)
    return Snapshot(interactions, topic, end, records, forgotten, time.perf_counter() - started)


def _to_log(latest: dict[bytes, bytes | None]) -> tuple[InteractionLog, int]:
    """The newest record of every user as one columnar log; and how many were forgotten.

    Column lists are extended record by record and converted once: per row,
    only what orjson made is touched (see :mod:`schemas.state`, format 3).
    """
    user_ids: list[str] = []
    lengths: list[int] = []
    items: list[str] = []
    kinds: list[str] = []
    values: list[float] = []
    durations: list[float | None] = []
    ts: list[int] = []
    forgotten = 0
    for key, raw in latest.items():
        try:
            history = None if raw is None else history_columns(raw)
        except ValueError as exc:
            # the worker cannot read it either (it would have failed its recovery)
            log.warning("changelog record of %r skipped: %s", key, exc)
            continue
        if not history:
            forgotten += 1
            continue
        user_ids.append(key.decode())
        lengths.append(len(history))
        items.extend(history.items)
        kinds.append(history.kinds)
        values.extend(history.values)
        durations.extend(history.durations)
        ts.extend(history.ts)
    # first-seen order, as IdMap numbers ids; dict and map run in C, per row
    item_index = {item: n for n, item in enumerate(dict.fromkeys(items))}
    codes = np.fromiter(map(item_index.__getitem__, items), dtype=np.int64, count=len(items))
    rated = np.frombuffer("".join(kinds).encode(), dtype=np.uint8) == ord("r")
    out = InteractionLog(
        users=IdMap(user_ids),
        items=IdMap(list(item_index)),
        user=np.repeat(np.arange(len(user_ids), dtype=np.int64), lengths),
        item=codes,
        kind=np.where(rated, KIND_RATE, KIND_WATCH).astype(np.int8),
        value=np.array(values, dtype=np.float64),
        duration_s=np.array(durations, dtype=np.float64),  # None becomes NaN
        ts=np.array(ts, dtype=np.int64),
    )
    return out, forgotten


def states_from_log(log: InteractionLog, history_length: int) -> Iterator[tuple[str, UserState]]:
    """Each user of ``log`` as the worker would hold them: ``(user_id, state)``.

    The inverse of the snapshot: the newest ``history_length`` events in time
    order, the older items in ``seen_items``. What seeds a changelog from a file
    (tests, benchmarks); event ids are not known and stay empty.
    """
    order = np.lexsort((log.ts, log.user))
    bounds = np.searchsorted(log.user[order], np.arange(len(log.users) + 1))
    kinds = ("watch", "rate")
    names = log.items.ids
    for u in range(len(log.users)):
        rows = order[bounds[u] : bounds[u + 1]].tolist()
        if not rows:
            continue
        kept, dropped = rows[-history_length:], rows[:-history_length]
        history = [
            Interaction(
                names[log.item[r]],
                kinds[log.kind[r]],
                float(log.value[r]),
                None if np.isnan(log.duration_s[r]) else float(log.duration_s[r]),
                int(log.ts[r]),
            )
            for r in kept
        ]
        in_history = {i.item_id for i in history}
        seen = sorted({names[log.item[r]] for r in dropped} - in_history)
        yield log.users.ids[u], UserState(history, seen_items=seen)
