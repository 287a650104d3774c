"""The user states of this worker's partitions, in a Faust table backed by a changelog,
with the hot ones kept decoded in memory.

The record of one user's state and its codec are a contract shared with the
retrain job (:mod:`schemas.state`); this module is the Faust-table adapter.
The records live in a Faust table (:class:`StateTable`) whose changelog topic is
co-partitioned with the event topics: partition-local, rebuilt from the
changelog when a worker starts or takes over a partition. The table's own
``table[key] = value`` path queues the changelog record in a buffer that an
offset commit does not reliably wait for, so :meth:`StateTable.persist` sends
the records itself and awaits the broker's acknowledgement of each before the
batch goes on (see docs/worker.md, "Delivery").

**The decoded cache.** Decoding a user's record cost 47 µs per event and
recomputing their confidences 23 µs on a realistic (Zipf) mix of users, where
the same hot users come back batch after batch. So the table keeps, per user,
the decoded :class:`UserState` and the confidences derived from its history
under the current model's weighting, in a bounded LRU in front of the table's
bytes (``table.data``, which Faust fills from the changelog on recovery and
which stays the only source of truth):

- an entry stands for one exact bytes object of ``table.data``; a read whose
  key holds other bytes (recovered, or written by a standby) or none (the
  partition was revoked, the key deleted) decodes afresh or misses, so the
  cache never serves a state the table does not hold, and Faust's own
  recovery rebuilds it;
- :meth:`StateTable.get` hands out copies (:meth:`UserState.copy`, about a
  microsecond): a batch changes its copies in place, and only
  :meth:`StateTable.persist`, once the broker acknowledged the new records,
  puts them in the cache. A batch whose persist failed leaves the cache as it
  was, and its redo applies its events again instead of taking them for
  duplicates;
- confidences are kept with the weighting they were computed with and the
  history they were computed from, and brought up to date by
  :func:`models.weighting.update_confidences` (the rows that changed only), or
  recomputed when the model's weighting changed.

Memory: an entry costs about :data:`STATE_BYTES_PER_ROW` per history row,
:data:`STATE_BYTES_PER_ID` per event id and seen item, and
:data:`CONFIDENCE_BYTES_PER_ITEM` per item of its confidences (about 18 KB
plus 280 bytes per history row at the default dedupe window of 200: 64 KB for
the long-history profile's mean user of 165 ratings), so
``FRESHREC_STATE_CACHE_USERS`` bounds the whole; the estimate is the gauge
``freshrec_worker_state_cache_bytes``. The cap also bounds Python's full
garbage collections, which walk every cached history row (docs/worker.md,
"In memory").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from freshrec.kafka_producer import OutgoingRecord
from freshrec.retry import RetryPolicy
from models.weighting import WeightingConfig, update_confidences, user_confidences
from schemas.state import Interaction, UserState, decode, encode
from streams.delivery import RecordProducer, send_all

#: One pending write: the changelog partition and the new value (None deletes).
Write = tuple[int, UserState | None]

#: Bytes of a decoded history row (a tuple, its item id string, two floats and an
#: int; None and the kind strings shared): measured 200 to 230 for histories of 100
#: to 1,000 rows, :func:`sys.getsizeof` summed over the objects. Counted per row
#: rather than per record byte since format 4 records are binary (a byte of record
#: stands for 10 to 40 bytes in memory, depending on the row).
STATE_BYTES_PER_ROW = 220
#: Bytes of a decoded event id or seen item (a string of 20 to 40 characters and its
#: list slot): measured 90 for 32 characters.
STATE_BYTES_PER_ID = 90
#: Bytes per item of a user's confidences (the dict's slot and a float; the key
#: is the history's own string): measured 47 to 58.
CONFIDENCE_BYTES_PER_ITEM = 56
#: Bytes of an entry without its state: the entry, its slot in the LRU, its key.
ENTRY_OVERHEAD_BYTES = 250


@dataclass(slots=True)
class _Entry:
    """One user's decoded state, for as long as ``table.data`` holds ``raw``."""

    raw: bytes
    """The table's value this entry stands for, compared by identity."""
    state: UserState
    """Never handed out (:meth:`StateTable.get` copies it), so never changed."""
    size: int
    """Estimated bytes (see the module doc)."""
    weighting: WeightingConfig | None = None
    basis: Sequence[Interaction] = ()
    """The history ``confidences`` were computed from (an older state's, after a write)."""
    confidences: dict[str, float] | None = None


class StateTable:
    """The user states of the partitions this worker holds, backed by a Faust table.

    Keys are user ids as UTF-8 bytes, values :func:`encode`-d bytes (raw
    serializers on the table), so the changelog format is ours, not Faust's.
    ``cache_users`` bounds the decoded states kept in memory (module doc).
    """

    def __init__(
        self, table: Any, producer: RecordProducer, retry: RetryPolicy, cache_users: int
    ) -> None:
        self._table = table
        self._producer = producer
        self._retry = retry
        self._capacity = cache_users
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._cache_bytes = 0
        # Faust calls this once a recovery is complete, after its memory store
        # dropped the keys of the partitions this worker no longer holds.
        table.on_recover(self.drop_unheld)

    def get(self, user_id: str) -> UserState | None:
        """The user's state, a copy the caller may change (None for an unknown user)."""
        key = user_id.encode()
        raw = self._table.data.get(key)
        entry = self._cache.get(key)
        if raw is None:
            if entry is not None:
                self._drop(key)
            return None
        if entry is None or entry.raw is not raw:
            entry = self._put(key, raw, decode(raw))
        else:
            self._cache.move_to_end(key)
        return entry.state.copy()

    def confidences(
        self, users: Sequence[str], states: Sequence[UserState], weighting: WeightingConfig
    ) -> list[dict[str, float]]:
        """``user_confidences(state.history, weighting)`` of each user, from the cache.

        A user's confidences are brought up to date from the ones kept for
        their previous history when the weighting is the same, and kept for the
        next batch when ``state`` is what the cache holds (the state a persist
        just stored, or an unchanged copy). The dicts returned must not be changed.
        """
        cache = self._cache
        out = []
        for user, state in zip(users, states, strict=True):
            entry = cache.get(user.encode())
            if (
                entry is not None
                and entry.confidences is not None
                and (entry.weighting is weighting or entry.weighting == weighting)
            ):
                conf = update_confidences(entry.confidences, entry.basis, state.history, weighting)
            else:
                conf = user_confidences(state.history, weighting)
            if entry is not None and (state is entry.state or state.history == entry.state.history):
                before = 0 if entry.confidences is None else len(entry.confidences)
                entry.weighting, entry.basis, entry.confidences = (
                    weighting,
                    entry.state.history,
                    conf,
                )
                grown = (len(conf) - before) * CONFIDENCE_BYTES_PER_ITEM
                entry.size += grown
                self._cache_bytes += grown
            out.append(conf)
        return out

    def users(self) -> Iterator[str]:
        """Every user held now (a snapshot, safe to iterate across awaits)."""
        return iter([key.decode() for key in list(self._table.data.keys())])

    def __len__(self) -> int:
        return len(self._table.data)

    @property
    def cache_users(self) -> int:
        """Users whose decoded state is in memory."""
        return len(self._cache)

    @property
    def cache_bytes(self) -> int:
        """Estimated bytes of the decoded states and their confidences (module doc)."""
        return self._cache_bytes

    async def persist(self, writes: Mapping[str, Write]) -> None:
        """Make ``writes`` durable in the changelog (broker-acknowledged), then apply them.

        Each record is a whole user value, so resending after a failure is
        idempotent; transient broker faults are retried with the worker's
        policy. Only then do the new states enter the table and the cache: a
        failure leaves both as they were. The states written must not be
        changed afterwards (the cache keeps them).
        """
        if not writes:
            return
        topic = self._table.changelog_topic.get_topic_name()
        encoded = [
            (user.encode(), partition, state, None if state is None else encode(state))
            for user, (partition, state) in writes.items()
        ]
        records = [
            OutgoingRecord(topic, key, value, partition) for key, partition, _, value in encoded
        ]
        await self._retry.call_async(lambda: send_all("changelog", self._producer, records))
        data = self._table.data
        partitions = self._key_partitions()
        for key, partition, state, value in encoded:
            if state is None or value is None:
                data.pop(key, None)
                partitions.pop(key, None)
                self._drop(key)
            else:
                data[key] = value
                partitions[key] = partition
                self._put(key, value, state)

    def _key_partitions(self) -> dict[bytes, int]:
        """The changelog partition of every held key, as Faust's memory store keeps it.

        The store fills it while recovering a partition and drops the keys of
        partitions this worker no longer holds after a rebalance; keys written
        by :meth:`persist` are entered too, or a revoked partition's users
        would stay behind (and expiring a forget marker needs the partition).
        """
        partitions: dict[bytes, int] = self._table.data._key_partition
        return partitions

    def expired_markers(self, before_ms: int) -> dict[str, Write]:
        """Tombstones for the forget markers older than ``before_ms`` (epoch ms)."""
        partitions = self._key_partitions()
        cache = self._cache
        out: dict[str, Write] = {}
        for key, raw in list(self._table.data.items()):
            entry = cache.get(key)
            state = entry.state if entry is not None and entry.raw is raw else decode(raw)
            if state.is_marker and state.forgotten_at < before_ms and key in partitions:
                out[key.decode()] = (partitions[key], None)
        return out

    async def drop_unheld(self) -> None:
        """Drop the entries whose bytes the table no longer holds (revoked, replaced).

        Reads check each entry anyway; this frees their memory after a rebalance.
        """
        data = self._table.data
        for key, entry in list(self._cache.items()):
            if data.get(key) is not entry.raw:
                self._drop(key)

    def _put(self, key: bytes, raw: bytes, state: UserState) -> _Entry:
        """Cache ``state`` as the value ``raw`` of ``key``, keeping the derived confidences
        of the entry it replaces (they are brought up to date on their next use)."""
        cache = self._cache
        old = cache.pop(key, None)
        size = (
            ENTRY_OVERHEAD_BYTES
            + len(state.history) * STATE_BYTES_PER_ROW
            + (len(state.event_ids) + len(state.seen_items)) * STATE_BYTES_PER_ID
        )
        entry = _Entry(raw, state, size)
        if old is not None:
            self._cache_bytes -= old.size
            if old.confidences is not None:
                entry.weighting, entry.basis, entry.confidences = (
                    old.weighting,
                    old.basis,
                    old.confidences,
                )
                entry.size += len(old.confidences) * CONFIDENCE_BYTES_PER_ITEM
        cache[key] = entry
        self._cache_bytes += entry.size
        while len(cache) > self._capacity:
            _, evicted = cache.popitem(last=False)
            self._cache_bytes -= evicted.size
        return entry

    def _drop(self, key: bytes) -> None:
        entry = self._cache.pop(key, None)
        if entry is not None:
            self._cache_bytes -= entry.size
