"""Content cold start (issue 23, item 5): a catalog upload recommendable before its first user.

An item record with tags, for an item the current model version does not
know, gets a *content* vector: the mean of the vectors of the model's items
that share its tags, each weighted by how specific the shared tags are
(:class:`models.content.TagSpace`). It goes into the version's
interim hash (:mod:`schemas.interim`, ``"source": "content"``), which every
worker ranks with (:class:`streams.interim.InterimVectors`), so the lists
written next can hold it, marked ``"source": "content"`` in their entries and
in the API's answers.

**When.** The catalog agent (:class:`streams.catalog.CatalogWriter`) hands
each batch's records to :meth:`ContentStart.written` once they are in the
item table. It reads the stored records of those items back (the table holds
the newest record of each item; a redelivered or older one changes nothing)
and, for each item the current version does not know, writes the vector of
its tags, rewrites it when its tags changed, and drops it when it has none
left. At each version switch (the worker's model poll,
:meth:`ContentStart.follow`) the vectors are built again under the new version
for every tagged item it still does not know: the new version's hash starts
empty, and its item vectors are others.

**The model items' tags** (what a new item is placed among) are read from the
whole item table (one ``HGETALL``) at a switch, and again at a poll that finds
the catalog's revision moved (every write of the item table raises it:
:mod:`streams.catalog`); this worker's own catalog batches keep them current
in between. A model item's tags changed by another worker's batch count here
from the next poll; vectors placed before are not redone until their item's
record comes again or the next switch. Reading and placing run in a thread, so
the event loop (the fold-in agent) is not held for them.

**Hand-over.** The item agent (:mod:`streams.item_stats`) writes an item's
``fold`` vector, over the content one, once the item has
``FRESHREC_NEW_ITEM_MIN_USERS`` users; a content write never replaces a fold
vector: one Lua script per batch checks the stored source and writes only
over nothing or a content vector, atomically against the item agent's
writes. Until the item has enough users its content vector stays, and when
the item agent drops a fold vector (users forgot the item, below the minimum)
it has the content vector written again (:meth:`ContentStart.restore`).

**Takedown** applies as to every interim item: the lists leave out the items
taken down (:mod:`streams.lists`) and the API filters them at serve time; the
vector is kept, so an item made available again is back at once.

Every worker builds the vectors at a switch (the same idempotent writes, a
stored vector equal to the one built is not written again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import redis.exceptions

from freshrec.errors import TransientError
from freshrec.redis_client import TRANSIENT_ERRORS, AsyncRedis
from freshrec.retry import RetryPolicy
from freshrec.settings import Settings
from models.content import TagSpace
from models.recommender import Recommender
from schemas.interim import (
    InterimVector,
    decode_vector,
    encode_vector,
    generation_key,
    interim_key,
)
from schemas.items import ItemRecord, decode_record, items_hash_key, takedown_key
from schemas.recs import DATA_FIELD
from streams.interim import InterimVectors
from streams.metrics import WorkerMetrics
from streams.model_follower import ModelFollower

log = logging.getLogger(__name__)

#: KEYS: the version's interim hash. ARGV: item, value, item, value, ... (an empty
#: value drops the item's content vector). Writes only over no vector or a content
#: one: a fold vector (or anything unreadable) is never replaced or dropped here.
#: Returns {vectors started (the item had none), fields changed}.
_WRITE_CONTENT = """
local started, changed = 0, 0
for n = 1, #ARGV, 2 do
  local item, value = ARGV[n], ARGV[n + 1]
  local stored = redis.call('HGET', KEYS[1], item)
  local content = false
  if stored then
    local ok, doc = pcall(cjson.decode, stored)
    content = ok and type(doc) == 'table' and doc['source'] == 'content'
  end
  if value == '' then
    if content then
      redis.call('HDEL', KEYS[1], item)
      changed = changed + 1
    end
  elseif content or not stored then
    redis.call('HSET', KEYS[1], item, value)
    changed = changed + 1
    if not stored then
      started = started + 1
    end
  end
end
return {started, changed}
"""

#: Items per script call when a version's vectors are built.
CHUNK = 500


def model_tags(
    recommender: Recommender, records: Mapping[str, ItemRecord]
) -> dict[int, Sequence[str]]:
    """The tags of ``recommender``'s items among ``records``, by item index (untagged
    ones left out): what content vectors are built from."""
    known = recommender.item_ids
    return {
        known.index(item): record.tags
        for item, record in records.items()
        if record.tags and item in known
    }


def planned(
    recommender: Recommender, space: TagSpace, records: Sequence[ItemRecord]
) -> dict[str, np.ndarray | None]:
    """The content vector of each record's item that ``recommender`` does not know: its
    tags' vector, or None (drop any content vector) when it has no tags or none that a
    model item has (the zero vector, which would rank below every real item)."""
    wanted = [r for r in records if r.item_id not in recommender.item_ids]
    out: dict[str, np.ndarray | None] = {r.item_id: None for r in wanted}
    tagged = [r for r in wanted if r.tags]
    if not tagged:
        return out
    vectors = space.vectors([r.tags for r in tagged])
    for record, vector in zip(tagged, vectors, strict=True):
        out[record.item_id] = vector if vector.any() else None
    return out


class ContentStart:
    """Writes, rewrites and drops content vectors of the current version (module doc)."""

    def __init__(
        self,
        settings: Settings,
        client: AsyncRedis,
        follower: ModelFollower,
        metrics: WorkerMetrics,
        retry: RetryPolicy,
        interim: InterimVectors | None = None,
    ) -> None:
        self._prefix = settings.key_prefix
        self._client = client
        self._follower = follower
        self._metrics = metrics
        self._retry = retry
        #: The worker's copy of the interim vectors, for the content-item gauge.
        self._interim = interim
        self._script = client.register_script(_WRITE_CONTENT)
        #: The version whose content vectors were last built whole (at a switch).
        self._built: str | None = None
        #: The tags of that version's items (model_tags), and the catalog's revision
        #: (schemas.items.Takedown) when they were read: reread at a poll that finds it
        #: moved, kept current meanwhile with this worker's own catalog batches.
        self._tags: dict[int, Sequence[str]] = {}
        self._tags_version: str | None = None
        #: ``_tags`` indexed (None: to index again before the next placement).
        self._space: TagSpace | None = None
        self._revision = -1
        self._lock = asyncio.Lock()

    async def follow(self) -> int:
        """At the model poll: when the current version changed since the last build,
        build the content vectors of every tagged item it does not know; otherwise reread
        the model items' tags if the catalog changed. Returns how many vectors were
        written."""
        if self._interim is not None:
            sources = self._interim.block.sources
            self._metrics.new_items_content.set(sum(s == "content" for s in sources))
        model = self._follower.recommender
        if model is None:
            return 0
        if model.version_id == self._built:
            if await self._catalog_revision() != self._revision:
                async with self._lock:
                    await self._read_tags(model)
            return 0
        async with self._lock:
            records = await self._read_tags(model)
            space = await self._tag_space(model)
            vectors = await asyncio.to_thread(planned, model, space, list(records.values()))
            written = 0
            items = list(vectors.items())
            for start in range(0, len(items), CHUNK):
                written += await self._write(model.version_id, dict(items[start : start + CHUNK]))
            self._built = model.version_id
        log.info(
            "content vectors of version %s: %d items without users, %d written",
            model.version_id,
            sum(v is not None for v in vectors.values()),
            written,
        )
        return written

    def invalidate(self) -> None:
        """Build every content vector again at the next :meth:`follow` (the item table was
        rebuilt after Redis lost its data, and the interim hashes with it)."""
        self._built = None

    async def written(self, records: Sequence[ItemRecord]) -> int:
        """After a catalog batch's records are in the item table: the content vectors of
        their items as the table now holds them. Returns how many were written."""
        model = self._follower.recommender
        if model is None or not records:
            return 0
        return await self._place(model, [r.item_id for r in records])

    async def restore(self, version: str, items: Sequence[str]) -> int:
        """The item agent dropped the vectors of ``items`` under ``version`` (their users
        forgot them, below ``FRESHREC_NEW_ITEM_MIN_USERS``): their content vectors again,
        when ``version`` is the current one. Returns how many were written."""
        model = self._follower.recommender
        if model is None or model.version_id != version or not items:
            return 0
        return await self._place(model, items)

    async def _place(self, model: Recommender, ids: Sequence[str]) -> int:
        """Write, rewrite or drop the content vectors of ``ids`` from their stored records;
        the records of ``model``'s own items update the tags it places by."""
        ids = list(dict.fromkeys(ids))
        async with self._lock:
            stored = await self._read(ids)
            if model.version_id != self._tags_version:  # a switch the poll has not seen yet
                await self._read_tags(model)
            for item, record in stored.items():  # the model's own items: their tags now
                if item in model.item_ids:
                    position = model.item_ids.index(item)
                    if tuple(self._tags.get(position, ())) != record.tags:
                        self._space = None
                    if record.tags:
                        self._tags[position] = record.tags
                    else:
                        self._tags.pop(position, None)
            new = [r for r in stored.values() if r.item_id not in model.item_ids]
            if not new:
                return 0
            space = await self._tag_space(model)
            vectors = await asyncio.to_thread(planned, model, space, new)
            return await self._write(model.version_id, vectors)

    async def _read_tags(self, model: Recommender) -> dict[str, ItemRecord]:
        """Read the whole item table: the tags of ``model``'s items (kept) and every record
        (returned), with the catalog's revision read first (a write after it moves it)."""
        self._revision = await self._catalog_revision()
        records = await self._read_all()
        self._tags = await asyncio.to_thread(model_tags, model, records)
        self._tags_version = model.version_id
        self._space = None
        return records

    async def _tag_space(self, model: Recommender) -> TagSpace:
        """``_tags`` (of ``model``) indexed, once per change."""
        if self._space is None:
            self._space = await asyncio.to_thread(TagSpace, self._tags, model.foldin.item_factors)
        return self._space

    async def _catalog_revision(self) -> int:
        """The catalog's revision, raised by every write of the item table (-1: none)."""

        async def attempt() -> Any:
            try:
                return await self._client.hget(takedown_key(self._prefix), DATA_FIELD)
            except TRANSIENT_ERRORS as exc:
                raise TransientError(f"redis catalog revision read failed: {exc}") from exc

        raw = await self._retry.call_async(attempt)
        head = raw.partition(b"\n")[0] if isinstance(raw, bytes) else b""
        return int(head) if head.isdigit() else -1

    async def _read_all(self) -> dict[str, ItemRecord]:
        """Every readable record of the item table."""

        async def attempt() -> dict[Any, Any]:
            try:
                raw: dict[Any, Any] = await self._client.hgetall(items_hash_key(self._prefix))
            except TRANSIENT_ERRORS as exc:
                raise TransientError(f"redis item table read failed: {exc}") from exc
            return raw

        return _records(await self._retry.call_async(attempt))

    async def _read(self, ids: Sequence[str]) -> dict[str, ItemRecord]:
        """The stored records of ``ids`` (missing and unreadable ones left out)."""

        async def attempt() -> list[Any]:
            try:
                raw: list[Any] = await self._client.hmget(items_hash_key(self._prefix), ids)
            except TRANSIENT_ERRORS as exc:
                raise TransientError(f"redis item table read failed: {exc}") from exc
            return raw

        values = await self._retry.call_async(attempt)
        return _records({i.encode(): v for i, v in zip(ids, values, strict=True) if v})

    async def _write(self, version: str, vectors: Mapping[str, np.ndarray | None]) -> int:
        """Write (or drop, for None) the content vectors of ``vectors``' items under
        ``version``, leaving out those already stored with the same vector, and raise
        the version's generation when anything changed. Returns the fields changed."""
        if not vectors:
            return 0
        key = interim_key(self._prefix, version)
        items = list(vectors)

        async def current() -> list[Any]:
            try:
                raw: list[Any] = await self._client.hmget(key, items)
            except TRANSIENT_ERRORS as exc:
                raise TransientError(f"redis interim read failed: {exc}") from exc
            return raw

        now_ms = int(time.time() * 1000)
        args: list[str | bytes] = []
        for item, raw in zip(items, await self._retry.call_async(current), strict=True):
            vector = vectors[item]
            if _same(raw, vector):
                continue
            value = (
                b""
                if vector is None
                else encode_vector(InterimVector(vector, "content", 0, 0, now_ms))
            )
            args += [item, value]
        if not args:
            return 0

        async def attempt() -> tuple[int, int]:
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    await self._script(keys=[key], args=args, client=pipe)  # type: ignore[arg-type]
                    pipe.incr(generation_key(self._prefix, version))
                    result = await pipe.execute()
            except (*TRANSIENT_ERRORS, redis.exceptions.NoScriptError) as exc:  # type: ignore[misc]
                raise TransientError(f"redis content vector write failed: {exc}") from exc
            started, changed = result[0]
            return int(started), int(changed)

        started, changed = await self._retry.call_async(attempt)
        self._metrics.new_items_content_started.inc(started)
        return changed


def _same(raw: bytes | None, vector: np.ndarray | None) -> bool:
    """Whether the stored value needs no write: the same content vector, or nothing to drop
    (a fold vector is never written here, so one stored counts as the same too)."""
    if raw is None:
        return vector is None
    try:
        stored = decode_vector(raw)
    except ValueError:
        return True  # unreadable: the script leaves it alone anyway
    if stored.source != "content":
        return True
    return vector is not None and np.array_equal(
        stored.vector, np.asarray(vector, dtype=np.float32)
    )


def _records(raw: Mapping[Any, Any]) -> dict[str, ItemRecord]:
    out = {}
    for key, value in raw.items():
        try:
            record = decode_record(value)
        except ValueError:
            log.warning("unreadable item record %r left out of content vectors", key[:60])
            continue
        out[record.item_id] = record
    return out
