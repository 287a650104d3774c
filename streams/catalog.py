"""The item table: item records from the items topic into Redis, and the takedown set read back.

The worker's ``catalog`` agent takes the items topic in micro-batches
(:meth:`CatalogWriter.process`): each record is validated against
``item.v1.json`` (:func:`schemas.validator.validate_item`); an invalid one
becomes a dead letter with its reason and changes nothing else; the valid ones
are written to Redis in one pipeline, each by a small script that replaces the
item's stored record only when the new one is not older (by ``ts``), keeps
the set of items taken down, and rewrites the takedown value
(``P{catalog}:takedown`` in :mod:`schemas.items`) that every reader reads.
The batch is acked only after its dead letters are acknowledged and its
records are in Redis, so a crash redelivers it, and a redelivered record is
the same write again.

The items topic is keyed by item id and compacted: its newest record per item
is the whole catalog, so a Redis that lost its data gets it back by reading
the topic from the start (:meth:`CatalogWriter.rebuild`, which the worker runs
in the background when it notices the loss, as it rewrites its lists; every
write is the same compare-and-set, so rebuilds of several workers, and the
agent's own writes meanwhile, never roll an item back). Until the rebuild is
done, items taken down before the loss are served again: the loss is alerted
on (``FreshrecRedisDataLost``), and the rebuild of a catalog of 20,000 items
takes about a second. The file catalog (``freshrec catalog publish FILE``) and ``POST /items``
are ways to publish to it, not sources of their own.

:class:`TakedownReader` is the other direction: the worker reads the takedown
value with each batch that starts more than :data:`TAKEDOWN_MAX_AGE_S` after
its last read, so the lists it writes leave out every item taken down more
than that before the batch was built.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence

import redis.exceptions

from freshrec.errors import TransientError
from freshrec.redis_client import TRANSIENT_ERRORS, AsyncRedis
from freshrec.retry import RetryPolicy
from freshrec.settings import Settings
from schemas.items import (
    NO_TAKEDOWN,
    ItemRecord,
    Takedown,
    decode_takedown,
    encode_record,
    items_hash_key,
    takedown_key,
    unavailable_key,
)
from schemas.recs import DATA_FIELD
from schemas.validator import Rejection, validate_item
from streams.batch import Message
from streams.content_start import ContentStart
from streams.dead_letter import DeadLetter, DeadLetterWriter
from streams.metrics import WorkerMetrics

log = logging.getLogger(__name__)

#: KEYS: the item hash, the unavailable set, the takedown value. ARGV: the item id,
#: its ts, the record's JSON, "0" for a takedown else "1". Returns 1 when written, 0
#: when the stored record is newer. The takedown value is rebuilt on every write: its
#: revision tells readers that the catalog changed, its body which items are down.
_WRITE_ITEM = """
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if stored then
  local ok, doc = pcall(cjson.decode, stored)
  local stored_ts = ok and type(doc) == 'table' and tonumber(doc['ts'])
  if stored_ts and stored_ts > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == '0' then
  redis.call('SADD', KEYS[2], ARGV[1])
else
  redis.call('SREM', KEYS[2], ARGV[1])
end
local revision = 1
local current = redis.call('HGET', KEYS[3], 'data')
if current then
  revision = (tonumber(string.match(current, '^(%d+)')) or 0) + 1
end
local members = redis.call('SMEMBERS', KEYS[2])
local body = '[]'
if #members > 0 then
  body = cjson.encode(members)
end
redis.call('HSET', KEYS[3], 'data', string.format('%d', revision) .. '\\n' .. body)
return 1
"""


def checked(key: bytes | None, value: bytes | None) -> ItemRecord | Rejection:
    """A message of the items topic as a record, or why it is refused: the record's schema,
    and a key that is its item id (compaction keeps one record per key)."""
    result = validate_item(value)
    if isinstance(result, ItemRecord) and key not in (None, result.item_id.encode()):
        return Rejection("key", "const", "must be the record's item_id", repr(key)[:60])
    return result


class CatalogWriter:
    """Validates item records, dead-letters the bad ones, writes the good ones to Redis."""

    def __init__(
        self,
        settings: Settings,
        client: AsyncRedis,
        dead_letters: DeadLetterWriter,
        retry: RetryPolicy,
        metrics: WorkerMetrics,
        content: ContentStart | None = None,
    ) -> None:
        prefix = settings.key_prefix
        #: Content vectors of the items written (streams.content_start; None: none made).
        self._content = content
        self._keys = [items_hash_key(prefix), unavailable_key(prefix), takedown_key(prefix)]
        self._client = client
        self._script = client.register_script(_WRITE_ITEM)
        self._dead_letters = dead_letters
        self._retry = retry
        self._metrics = metrics

    async def process(self, batch: Sequence[Message]) -> int:
        """Dead-letter the invalid records and write the valid ones; returns how many were
        written (the rest were invalid, or older than what Redis holds)."""
        records: list[ItemRecord] = []
        letters: list[DeadLetter] = []
        for msg in batch:
            self._metrics.consumed.labels(msg.topic).inc()
            result = checked(msg.key, msg.value)
            if isinstance(result, Rejection):
                letters.append(
                    DeadLetter.of(msg.topic, msg.partition, msg.offset, msg.key, msg.value, result)
                )
                self._metrics.invalid.labels(msg.topic).inc()
            else:
                records.append(result)
                self._metrics.valid.labels(msg.topic).inc()
        await self._dead_letters.send(letters)
        return await self.write(records)

    async def write(self, records: Sequence[ItemRecord]) -> int:
        """Store ``records`` (each only when not older than the stored one), in one pipeline."""
        if not records:
            return 0

        async def attempt() -> int:
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for record in records:
                        await self._script(
                            keys=self._keys,
                            args=[
                                record.item_id,
                                record.ts,
                                encode_record(record),
                                "1" if record.available else "0",
                            ],
                            client=pipe,  # type: ignore[arg-type]
                        )
                    results = await pipe.execute()
            except (*TRANSIENT_ERRORS, redis.exceptions.NoScriptError) as exc:  # type: ignore[misc]
                raise TransientError(f"redis catalog write failed: {exc}") from exc
            return sum(int(r) for r in results)

        written = await self._retry.call_async(attempt)
        if self._content is not None:
            await self._content.written(records)
        return written

    async def rebuild(self, settings: Settings) -> int:
        """Write every valid record of the items topic again (see the module doc); returns
        how many were written. Invalid ones were dead-lettered when they first came."""
        from streams.dlq import read_topic

        messages = await asyncio.to_thread(read_topic, settings, settings.topic_items)
        records = [r for m in messages if isinstance(r := checked(m.key(), m.value()), ItemRecord)]
        written = 0
        for start in range(0, len(records), REBUILD_CHUNK):
            written += await self.write(records[start : start + REBUILD_CHUNK])
        log.info("item table rebuilt from %d records of %s", len(records), settings.topic_items)
        if self._content is not None:  # built from the whole table again at the next poll
            self._content.invalidate()
        return written


#: Records per pipeline when the item table is rebuilt.
REBUILD_CHUNK = 1_000
#: The worker's takedown set is reused for this long before it is read again
#: (:class:`TakedownReader`): lists leave out what was taken down more than this
#: before their batch began.
TAKEDOWN_MAX_AGE_S = 0.1


class TakedownReader:
    """The items taken down, as of the last :meth:`read` (one ``HGET`` of a small value).

    A read started less than ``max_age_s`` after the last one that reached
    Redis returns that one's set without a round trip: a worker at full load
    starts batches milliseconds apart, and one ``HGET`` each was a Redis round
    trip awaited before every batch's work. A list is then built against a
    takedown set read at most ``max_age_s`` before its batch began (the
    worker's :data:`TAKEDOWN_MAX_AGE_S`), well inside the second the API's
    serve-time filter promises; 0 reads every time.
    """

    def __init__(self, settings: Settings, client: AsyncRedis, max_age_s: float = 0.0) -> None:
        self._key = takedown_key(settings.key_prefix)
        self._client = client
        self._max_age_s = max_age_s
        #: ``time.monotonic()`` when the last read that reached Redis was sent.
        self._read_at = -math.inf
        self.current: Takedown = NO_TAKEDOWN

    async def read(self) -> frozenset[str]:
        """Read the takedown value again, unless read less than ``max_age_s`` ago. Never
        fails a batch: with Redis away (the batch's own write then waits for it under the
        worker's retry policy) or the value garbled, the last set stays, logged; a
        takedown cannot reach Redis meanwhile either."""
        sent_at = time.monotonic()
        if sent_at - self._read_at < self._max_age_s:
            return self.current.unavailable
        try:
            raw: bytes | None = await self._client.hget(self._key, DATA_FIELD)  # type: ignore[assignment]
        except (*TRANSIENT_ERRORS, TimeoutError) as exc:  # type: ignore[misc]
            log.warning("takedown set not read (%r); the last one stays", exc)
            return self.current.unavailable
        self._read_at = sent_at
        try:
            self.current = decode_takedown(raw, self.current)
        except ValueError as exc:  # the last good set stays: never write a taken-down item
            log.warning("keeping the last takedown set: %s", exc)
        return self.current.unavailable
