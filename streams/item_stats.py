"""The item agent: items the model does not know, folded in from their users' contributions.

The fold-in agent sends each user's contribution to an interim item to the
contributions topic, keyed by item (:mod:`streams.interim`), so one worker
sees all of an item's contributions, whichever workers hold its users. It
keeps each item's sufficient statistics (:class:`models.item_foldin.ItemStats`:
an ``f x f`` matrix and an ``f`` vector, whatever the number of users) per
model version in a Faust table whose changelog is co-partitioned with the
contributions topic, like the user states (:mod:`streams.state`).

**Counted once.** Each entry carries its stamp, the source ``topic:partition``
and offset of the event that made it. The record keeps, per source partition,
the newest stamp applied (its watermark), and an entry at or below it is a
redelivery: skipped. One source partition's entries reach the item in offset
order (one producer per partition at a time, idempotent, each batch's
messages acknowledged before the next batch's are sent), and a redelivered
event makes the same entry again (:mod:`streams.interim`), so the
statistics are always the sum of each user's latest contribution.

**Crash safety.** A batch's new records are sent to the changelog and
acknowledged before the batch's messages are acked (as for the user states):
a crash before that redelivers the messages, which the watermarks of the
records recovered from the changelog count once.

**Sharing.** Once an item has ``FRESHREC_NEW_ITEM_MIN_USERS`` users its
vector (one batched solve for every changed item) is written to the
version's interim hash in Redis with the version's generation raised, which
every worker polls with each batch (:class:`streams.interim.InterimVectors`);
its similar list (cosine against the model's items) goes into the version's
similar hash, so ``GET /similar/<item>`` answers for it. An item that falls
below the threshold (its users forgot) leaves the hash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from freshrec.errors import TransientError
from freshrec.kafka_producer import OutgoingRecord
from freshrec.redis_client import TRANSIENT_ERRORS, AsyncRedis
from freshrec.retry import RetryPolicy
from freshrec.settings import Settings
from models.item_foldin import ItemStats, item_vectors
from models.recommender import Recommender
from models.similar import unit_rows
from schemas.interim import (
    ContributionMessage,
    InterimVector,
    StatsRecord,
    decode_message,
    decode_stats,
    encode_stats,
    encode_vector,
    generation_key,
    interim_key,
    split_stats_key,
    stats_key,
)
from schemas.recs import ItemTable, similar_key
from streams.batch import Message
from streams.content_start import ContentStart
from streams.delivery import RecordProducer, send_all
from streams.metrics import WorkerMetrics
from streams.ownership import Ownership

log = logging.getLogger(__name__)

#: Versions whose statistics may wait for this worker to load their model: the newest
#: (another worker switched first) and one more; older ones are a lagging worker's.
PENDING_VERSIONS = 2


def apply_entries(record: StatsRecord, message: ContributionMessage, now_ms: int) -> bool:
    """Apply the entries of one contribution message to ``record`` (skipping those at or
    below their source's watermark); True when anything changed."""
    stats = ItemStats(record.a, record.b, record.users)
    changed = False
    for e in message.entries:
        if e.offset <= record.watermarks.get(e.source, -1):
            continue
        if e.old is not None:
            stats.add(np.asarray(e.old[1]), e.old[0], sign=-1)
        if e.new is not None:
            stats.add(np.asarray(e.new[1]), e.new[0])
        record.watermarks[e.source] = e.offset
        changed = True
    record.users = stats.users
    if changed and not record.first_ms:
        record.first_ms = now_ms
    return changed


class ItemAgent:
    """Applies contribution messages, persists the statistics, shares the vectors."""

    def __init__(
        self,
        settings: Settings,
        table: Any,
        producer: RecordProducer,
        client: AsyncRedis,
        models: Any,
        metrics: WorkerMetrics,
        ownership: Ownership,
        retry: RetryPolicy,
        content: ContentStart | None = None,
    ) -> None:
        self._settings = settings
        #: Puts content vectors back for items whose fold vector is dropped.
        self._content = content
        self._table = table
        self._producer = producer
        self._client = client
        #: The worker's streams.model_follower.ModelFollower (its recommenders' Grams).
        self._models = models
        self._metrics = metrics
        self._ownership = ownership
        self._retry = retry
        self._prefix = settings.key_prefix
        #: Items whose vector this agent has shared, per version: for the metrics.
        self._shared: dict[str, set[str]] = {}
        #: Statistics changed under a version this worker had not loaded yet (another
        #: worker switched first): shared once it has, at a later batch.
        self._pending: dict[str, set[bytes]] = {}

    def _recommender(self, version: str) -> Recommender | None:
        for model in (self._models.recommender, self._models.canary):
            if model is not None and model.version_id == version:
                return model
        return None

    async def process(self, batch: Sequence[Message], received_at: int | None = None) -> set[int]:
        """Apply, persist, share; returns the partitions fenced (not to be acked)."""
        now_ms = int(time.time() * 1000)
        data = self._table.data
        records: dict[bytes, tuple[int, StatsRecord, int]] = {}
        changed: set[bytes] = set()
        for msg in batch:
            if msg.value is None:
                continue
            try:
                message = decode_message(msg.value)
            except ValueError as exc:  # our own records: a bug, logged, not retried
                log.error("contribution %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, exc)
                continue
            if not message.entries:
                continue
            key = stats_key(message.version, message.item)
            held = records.get(key)
            if held is None:
                raw = data.get(key)
                record = (
                    decode_stats(raw) if raw is not None else StatsRecord.empty(message.factors)
                )
                held = records[key] = (msg.partition, record, record.users)
            if apply_entries(held[1], message, now_ms):
                changed.add(key)
        # No await between this check and the changelog's send (streams.ownership).
        fenced = self._ownership.fenced({m.partition for m in batch}, received_at)
        writes = {k: v for k, v in records.items() if v[0] not in fenced and k in changed}
        if writes:
            topic = self._table.changelog_topic.get_topic_name()
            encoded = {k: encode_stats(r) for k, (_, r, _) in writes.items()}
            out = [OutgoingRecord(topic, k, encoded[k], p) for k, (p, _, _) in writes.items()]
            await self._retry.call_async(lambda: send_all("item statistics", self._producer, out))
            partitions = data._key_partition
            for key, (partition, _, _) in writes.items():
                data[key] = encoded[key]
                partitions[key] = partition
            self._metrics.new_items_folded.set(len(data))
            await self._share({k: (r, before) for k, (_, r, before) in writes.items()}, now_ms)
        await self._share_pending(now_ms)
        return set(fenced)

    async def _share_pending(self, now_ms: int) -> None:
        """Share what waited for its version's model, once this worker has loaded it."""
        ready = [v for v in self._pending if self._recommender(v) is not None]
        for version in ready:
            keys = self._pending.pop(version)
            data = self._table.data
            held = {k: data.get(k) for k in keys}
            records = {k: (decode_stats(raw), 0) for k, raw in held.items() if raw is not None}
            await self._share(records, now_ms)

    async def _share(self, records: Mapping[bytes, tuple[StatsRecord, int]], now_ms: int) -> None:
        """Write the vectors of ``records``' items that have enough users (and drop those
        that no longer have: shared before, or that lost users in this batch), their
        similar lists, and raise each version's generation. ``records`` holds each
        record with its user count before the batch."""
        by_version: dict[str, list[tuple[str, StatsRecord, int]]] = {}
        for key, (record, before) in records.items():
            version, item = split_stats_key(key)
            by_version.setdefault(version, []).append((item, record, before))
        minimum = self._settings.new_item_min_users
        for version, items in by_version.items():
            model = self._recommender(version)
            if model is None:
                keys = {stats_key(version, item) for item, _, _ in items}
                self._pending.setdefault(version, set()).update(keys)
                while len(self._pending) > PENDING_VERSIONS:  # an old version's stragglers
                    del self._pending[next(iter(self._pending))]
                continue
            if model.user_gram is None:
                continue
            shared = self._shared.setdefault(version, set())
            ready = [(i, r) for i, r, _ in items if r.users >= minimum]
            gone = [i for i, r, b in items if r.users < minimum and (i in shared or r.users < b)]
            vectors = item_vectors(
                model.user_gram, [ItemStats(r.a, r.b, r.users) for _, r in ready]
            )
            values = {}
            for (item, record), vector in zip(ready, vectors, strict=True):
                values[item] = encode_vector(
                    InterimVector(vector, "fold", record.users, record.first_ms, now_ms)
                )
                if item not in shared:
                    shared.add(item)
                    self._metrics.new_item_recommendable_seconds.observe(
                        max(0.0, (now_ms - record.first_ms) / 1000)
                    )
            similar = self._similar(model, [i for i, _ in ready], vectors, now_ms)
            await self._write(version, values, gone, similar)
            shared.difference_update(gone)
            self._metrics.new_items_shared.set(sum(len(s) for s in self._shared.values()))
            for _, record in ready:
                self._metrics.new_item_users.observe(record.users)

    def _similar(
        self, model: Recommender, items: list[str], vectors: np.ndarray, now_ms: int
    ) -> dict[str, bytes]:
        """Each new item's similar list against the model's items (cosine, like
        :mod:`models.similar`), in the compact form of the version's table."""
        if not items:
            return {}
        n = min(self._settings.similar_length, len(model.item_ids))
        unit = unit_rows(model.foldin.item_factors)
        scores = unit_rows(vectors) @ unit.T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :n]
        table = ItemTable(model.version_id, model.item_ids.ids)
        bodies = table.encode(
            top,
            np.take_along_axis(scores, top, axis=1),
            np.full_like(top, -1),
            np.ones(len(items), dtype=bool),
            [0] * len(items),
            now_ms,
        )
        return {i: b for i, b in zip(items, bodies, strict=True) if b}

    async def _write(
        self, version: str, values: dict[str, bytes], gone: list[str], similar: dict[str, bytes]
    ) -> None:
        if not values and not gone:
            return
        key = interim_key(self._prefix, version)

        async def attempt() -> None:
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    if values:
                        pipe.hset(key, mapping=values)  # type: ignore[arg-type]
                    if similar:
                        pipe.hset(similar_key(self._prefix, version), mapping=similar)  # type: ignore[arg-type]
                    if gone:
                        pipe.hdel(key, *gone)
                        pipe.hdel(similar_key(self._prefix, version), *gone)
                    pipe.incr(generation_key(self._prefix, version))
                    await pipe.execute()
            except TRANSIENT_ERRORS as exc:
                raise TransientError(f"redis interim write failed: {exc}") from exc

        await self._retry.call_async(attempt)
        if gone and self._content is not None:  # tagged ones start from content again
            await self._content.restore(version, gone)
