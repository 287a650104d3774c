"""The user states of this worker's partitions, in a Faust table backed by a changelog.

The record of one user's state and its codec are a contract shared with the
retrain job (:mod:`schemas.state`); this module is the Faust-table adapter.
The records live in a Faust table (:class:`StateTable`) whose changelog topic is
co-partitioned with the event topics: partition-local, rebuilt from the
changelog when a worker starts or takes over a partition. The table's own
``table[key] = value`` path queues the changelog record in a buffer that an
offset commit does not reliably wait for, so :meth:`StateTable.persist` sends
the records itself and awaits the broker's acknowledgement of each before the
batch goes on (see docs/worker.md, "Delivery").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from freshrec.retry import RetryPolicy
from schemas.state import UserState, decode, encode
from streams.delivery import send_all

#: One pending write: the changelog partition and the new value (None deletes).
Write = tuple[int, UserState | None]


class StateTable:
    """The user states of the partitions this worker holds, backed by a Faust table.

    Keys are user ids as UTF-8 bytes, values :func:`encode`-d bytes (raw
    serializers on the table), so the changelog format is ours, not Faust's.
    """

    def __init__(self, table: Any, retry: RetryPolicy) -> None:
        self._table = table
        self._retry = retry

    def get(self, user_id: str) -> UserState | None:
        raw = self._table.data.get(user_id.encode())
        return None if raw is None else decode(raw)

    def users(self) -> Iterator[str]:
        """Every user held now (a snapshot, safe to iterate across awaits)."""
        return iter([key.decode() for key in list(self._table.data.keys())])

    def __len__(self) -> int:
        return len(self._table.data)

    async def persist(self, writes: Mapping[str, Write]) -> None:
        """Make ``writes`` durable in the changelog (broker-acknowledged), then apply them.

        Each record is a whole user value, so resending after a failure is
        idempotent; transient broker faults are retried with the worker's policy.
        """
        if not writes:
            return
        encoded = {
            user.encode(): (partition, None if state is None else encode(state))
            for user, (partition, state) in writes.items()
        }
        await self._retry.call_async(lambda: self._send(encoded))
        data = self._table.data
        partitions = self._key_partitions()
        for key, (partition, value) in encoded.items():
            if value is None:
                data.pop(key, None)
                partitions.pop(key, None)
            else:
                data[key] = value
                partitions[key] = partition

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
        out: dict[str, Write] = {}
        for key, raw in list(self._table.data.items()):
            state = decode(raw)
            if state.is_marker and state.forgotten_at < before_ms and key in partitions:
                out[key.decode()] = (partitions[key], None)
        return out

    async def _send(self, encoded: Mapping[bytes, tuple[int, bytes | None]]) -> None:
        # Straight to the app's producer rather than through ``send_changelog``
        # (a FutureMessage and a buffer hop per record): same topic, key,
        # partition and bytes, at a third of the cost per record.
        producer = self._table.app.producer
        topic = self._table.changelog_topic.get_topic_name()
        await send_all(
            "changelog",
            (
                producer.send(topic, key, value, partition, None, None)
                for key, (partition, value) in encoded.items()
            ),
        )
