"""Reads the lists the worker writes (``schemas.recs``): one ``HGET`` of ``data`` per request.

The ``HGET``s of concurrent requests travel together (:mod:`serving.coalesce`).

This is the edge where redis-py's exceptions become freshrec's: an unreachable
or timed-out Redis, or a read that passed its deadline
(:func:`serving.redis_client.read_deadline_s`), is a
:class:`~freshrec.errors.TransientError` (the API answers 503); a key of the
wrong type is a :class:`CorruptList` (the API falls back, as for a list that
does not parse, and counts it there).

The popular fallback is the same for every user, so each process keeps it in
memory for ``api_popular_cache_s`` seconds: a user without a list then also
costs one round trip, and the fallback is at most that stale. Its absence is
never kept: right after the first worker writes it, the next request sees it.

A compact list indexes into its model version's item table
(``P items:<version>``): each process reads a version's table from Redis once,
at the first list that names it (one read shared by the requests that wait
for it), and keeps the newest :data:`TABLES_KEPT`. A request is then still one
``HGET`` of one key: one round trip to one node on a Redis Cluster. A table
Redis lacks (a Redis that lost its data, before the worker writes it again)
is never kept as missing: the list is skipped like an unreadable one, and the
next request asks again.

A request that asks for the user's recent history (``?recent=``) reads the
hash's ``recent`` field too (:mod:`schemas.recent`), as a second ``HGET`` of
the same key in the same batch: the same round trip.

Every read of a list also reads the catalog's takedown value
(``P{catalog}:takedown``, :mod:`schemas.items`) in the same round trip (one
``HGET`` per coalesced batch): answers leave out the items it names, so an item
taken down is gone from every answer of every process as soon as the worker
has written its record. Its revision tells the store the catalog changed; the
store then reads the item table again (``HGETALL``, in the background, at most
once per :data:`CATALOG_RELOAD_S`), which the tag filters and ``fields=`` use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from redis.exceptions import RedisError, ResponseError

from freshrec.errors import TransientError
from freshrec.redis_client import TRANSIENT_ERRORS, AsyncRedis
from freshrec.settings import Settings
from schemas.items import (
    NO_TAKEDOWN,
    Takedown,
    decode_record,
    decode_takedown,
    items_hash_key,
    takedown_key,
)
from schemas.recent import RECENT_FIELD
from schemas.recs import (
    DATA_FIELD,
    compact_version,
    decode,
    decode_items,
    items_key,
    popular_key,
    similar_key,
    user_key,
)
from serving.catalog import Catalog, Entry
from serving.coalesce import HgetCoalescer
from serving.metrics import REDIS_ERRORS

log = logging.getLogger(__name__)

#: The least time between two reads of the item table (a catalog being published
#: moves the revision with every record).
CATALOG_RELOAD_S = 1.0

#: Model versions whose item tables a process keeps: the one served, the one
#: before it while the workers switch, and one more.
TABLES_KEPT = 3
#: The least time a table's read may take: a large catalogue's table is megabytes,
#: read once per version, where the per-request deadline is for one list.
TABLE_DEADLINE_S = 5.0

#: What a read raises that :func:`_fault` turns into freshrec's exceptions.
_READ_ERRORS: tuple[type[Exception], ...] = (TimeoutError, RedisError, *TRANSIENT_ERRORS)


class CorruptList(Exception):
    """A stored list that is not what ``schemas.recs`` writes, or one whose item table
    Redis lacks."""


class RecsStore:
    """The lists of one key prefix, read through one client."""

    def __init__(
        self,
        client: AsyncRedis,
        settings: Settings,
        deadline_s: float,
        base_catalog: Catalog | None = None,
    ) -> None:
        self.deadline_s = deadline_s
        self.client = client
        self.prefix = settings.key_prefix
        self.reader = HgetCoalescer(client, DATA_FIELD, deadline_s, takedown_key(self.prefix))
        #: The file catalog given at start (``--catalog``), under the item table's records.
        self.base_catalog = base_catalog or Catalog()
        #: The item table as last read from Redis, over the file catalog.
        self.catalog = self.base_catalog
        self._takedown: Takedown = NO_TAKEDOWN
        self._takedown_raw: bytes | None = None
        self._catalog_revision = -1
        self._catalog_loading: asyncio.Task[None] | None = None
        self._catalog_loaded_at = float("-inf")
        self._version_of: tuple[bytes | None, str | None] = (None, None)
        self.popular_cache_s = settings.api_popular_cache_s
        self._popular: bytes | None = None
        self._popular_expires = float("-inf")
        #: Item tables by model version, oldest first.
        self._tables: dict[str, list[str]] = {}
        self._loading: dict[str, asyncio.Future[list[str]]] = {}

    async def user_list(self, user: str) -> tuple[bytes | None, frozenset[str]]:
        """The ``data`` field of the user's list (None when the user has none), and the
        items taken down, read in the same round trip."""
        return await self._read(user_key(self.prefix, user))

    async def user_list_recent(
        self, user: str
    ) -> tuple[bytes | None, frozenset[str], bytes | None]:
        """:meth:`user_list` and the user's ``recent`` field (:mod:`schemas.recent`; None
        when absent): two ``HGET``s of one key in the same batch, so still one round trip
        (to one node on a Redis Cluster)."""
        key = user_key(self.prefix, user)
        (data, down), (recent, _) = await asyncio.gather(
            self._read(key), self._read(key, RECENT_FIELD)
        )
        return data, down, recent

    async def similar_list(self, version: str, item: str) -> tuple[bytes | None, frozenset[str]]:
        """The item's similar list under a model version (None when it has none), and the
        items taken down, read in the same round trip."""
        return await self._read(similar_key(self.prefix, version), item)

    async def similar_lists(
        self, version: str, items: Sequence[str]
    ) -> tuple[list[bytes | None], frozenset[str]]:
        """:meth:`similar_list` of several items: their reads travel in one round trip."""
        key = similar_key(self.prefix, version)
        read = await asyncio.gather(*(self._read(key, item) for item in items))
        return [data for data, _ in read], read[-1][1] if read else self._takedown.unavailable

    async def model_version(self) -> str | None:
        """The model version the workers serve: the popular list's, which the worker that
        adopts a version writes (read with it, and kept in memory as long)."""
        data = await self.popular()
        seen, version = self._version_of
        if data is not seen:
            try:
                version = None if data is None else decode(data).model_version
            except ValueError:
                version = None
            self._version_of = (data, version)
        return version

    async def _read(
        self, key: str, field: str | None = None
    ) -> tuple[bytes | None, frozenset[str]]:
        try:
            data, raw = await self.reader.hget_also(key, field)  # under the reader's deadline
        except _READ_ERRORS as exc:
            raise _fault(key, exc, self.deadline_s) from exc
        return data, self._unavailable(raw)

    def _unavailable(self, raw: bytes | None) -> frozenset[str]:
        """The takedown set of a read's takedown value, parsed only when it changed."""
        if raw != self._takedown_raw:
            try:
                self._takedown = decode_takedown(raw, self._takedown)
            except ValueError as exc:  # keep the last good set: never serve a taken-down item
                REDIS_ERRORS.labels("corrupt").inc()
                log.warning("keeping the last takedown set: %s", exc)
            self._takedown_raw = raw
            if self._takedown.revision != self._catalog_revision:
                self._reload_catalog()
        return self._takedown.unavailable

    def _reload_catalog(self) -> None:
        """Read the item table again in the background, at most once per CATALOG_RELOAD_S."""
        if self._catalog_loading is not None:
            return
        wait = self._catalog_loaded_at + CATALOG_RELOAD_S - time.monotonic()
        self._catalog_loading = asyncio.get_running_loop().create_task(
            self._load_catalog(max(0.0, wait))
        )

    async def _load_catalog(self, wait_s: float) -> None:
        try:
            await asyncio.sleep(wait_s)
            revision = self._takedown.revision
            key = items_hash_key(self.prefix)
            async with asyncio.timeout(max(self.deadline_s, TABLE_DEADLINE_S)):
                table = await self.client.hgetall(key)
            entries = dict(self.base_catalog.entries)
            for raw in table.values():
                try:
                    record = decode_record(raw)
                except ValueError as exc:
                    log.warning("skipping an unreadable record in %s: %s", key, exc)
                    continue
                entries[record.item_id] = Entry(
                    record.title or record.item_id, record.tags, record.available
                )
            self.catalog = Catalog(entries)
            self._catalog_revision = revision
        except _READ_ERRORS as exc:
            log.warning("the item table could not be read (%r); trying again later", exc)
        self._catalog_loaded_at = time.monotonic()
        self._catalog_loading = None
        if self._takedown.revision != self._catalog_revision:
            self._reload_catalog()

    async def ensure_catalog(self) -> None:
        """Wait for the item table's first read, when it is under way: the first answers that
        use titles or tags are then not made with an empty catalog (later reads run in the
        background, and answers use the table as last read)."""
        loading = self._catalog_loading
        if loading is not None and self._catalog_revision < 0:
            await asyncio.shield(loading)

    async def current_catalog(self) -> Catalog:
        """The item table, after a read of the takedown value (whose revision says whether
        the table changed): for answers that read no list."""
        await self._read(takedown_key(self.prefix))
        await self.ensure_catalog()
        return self.catalog

    async def close(self) -> None:
        """Stop a read of the item table in flight (the app is shutting down)."""
        loading, self._catalog_loading = self._catalog_loading, None
        if loading is not None:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading

    async def popular(self, *, fresh: bool = False) -> bytes | None:
        """The ``data`` field of the popular list, from memory when it is recent enough."""
        now = asyncio.get_running_loop().time()
        if fresh or now >= self._popular_expires:
            self._popular = await self._hget(popular_key(self.prefix))
            # a missing list is asked for again at the next miss, not kept for the period
            self._popular_expires = now + self.popular_cache_s if self._popular else now
        return self._popular

    async def item_names(self, data: bytes) -> Sequence[str] | None:
        """The item table a stored compact list indexes into; None for a JSON list.

        Raises :class:`CorruptList` for a compact list cut short, and for one whose
        table Redis lacks or holds garbled.
        """
        try:
            version = compact_version(data)
        except ValueError as exc:
            raise CorruptList(str(exc)) from exc
        if version is None:
            return None
        names = self._tables.get(version)
        if names is not None:
            return names
        loading = self._loading.get(version)
        if loading is None:
            loading = self._loading[version] = asyncio.ensure_future(self._load_table(version))
            loading.add_done_callback(lambda _: self._loading.pop(version, None))
        # shielded: a request that gives up does not cancel the read the others wait on
        return await asyncio.shield(loading)

    async def _load_table(self, version: str) -> list[str]:
        key = items_key(self.prefix, version)
        deadline_s = max(self.deadline_s, TABLE_DEADLINE_S)
        try:
            async with asyncio.timeout(deadline_s):
                raw = await self.client.get(key)
        except _READ_ERRORS as exc:
            raise _fault(key, exc, deadline_s) from exc
        if raw is None:
            raise CorruptList(f"{key} is missing: no item table for model {version}")
        try:
            names = decode_items(raw)
        except ValueError as exc:
            raise CorruptList(f"{key}: {exc}") from exc
        self._tables[version] = names
        while len(self._tables) > TABLES_KEPT:
            del self._tables[next(iter(self._tables))]
        return names

    async def _hget(self, key: str) -> bytes | None:
        try:
            return await self.reader.hget(key)  # under the reader's deadline
        except _READ_ERRORS as exc:
            raise _fault(key, exc, self.deadline_s) from exc


def _fault(key: str, exc: Exception, deadline_s: float) -> Exception:
    """A read's exception as freshrec's (see the module doc), counted."""
    if isinstance(exc, TimeoutError):
        REDIS_ERRORS.labels("deadline").inc()
        return TransientError(f"Redis did not answer within {deadline_s:.2f}s")
    if isinstance(exc, TRANSIENT_ERRORS):  # down, or a cluster failing a node over
        REDIS_ERRORS.labels("unavailable").inc()
        return TransientError(f"Redis cannot be reached: {type(exc).__name__}")
    if isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE"):
        return CorruptList(f"{key} is not of the type the contract names")
    REDIS_ERRORS.labels("error").inc()
    return TransientError("Redis refused the read")
