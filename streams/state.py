"""Per-user worker state: the bounded interaction history and the recent event ids.

One record per user holds both, so that a single changelog write carries the
history *and* the ids that say which events it already includes. That is what
makes a redelivered event (after a crash, before the offset commit) harmless:
whatever version of the record survived, its ``seen`` ids match its history
exactly, and an event is either in both or in neither.

The records live in a Faust table (:class:`StateTable`) whose changelog topic is
co-partitioned with the event topics: partition-local, rebuilt from the
changelog when a worker starts or takes over a partition. The table's own
``table[key] = value`` path queues the changelog record in a buffer that an
offset commit does not reliably wait for, so :meth:`StateTable.persist` sends
the records itself and awaits the broker's acknowledgement of each before the
batch goes on (see docs/worker.md, "Delivery").
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from freshrec.errors import TransientError
from freshrec.retry import RetryPolicy
from models.weighting import Interaction
from schemas.events import InteractionEvent, WatchEvent

#: Version of the encoded record; bump when the layout changes.
_FORMAT = 1


@dataclass(slots=True)
class UserState:
    """One user's newest interactions (oldest first) and newest event ids (oldest first)."""

    history: list[Interaction] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)

    @property
    def newest_ts(self) -> int:
        """Timestamp (epoch ms) of the newest interaction kept; 0 when there is none."""
        return self.history[-1].ts if self.history else 0

    def apply(self, event: InteractionEvent, history_length: int, dedupe_window: int) -> bool:
        """Add ``event`` unless its id was seen; False for a duplicate.

        The history is kept in event-time order so that "newest kept" means the
        newest by ``ts`` even when events arrive out of order.
        """
        if event.event_id in self.seen:
            return False
        if isinstance(event, WatchEvent):
            interaction = Interaction(
                event.item_id, "watch", event.watched_s, event.duration_s, event.ts
            )
        else:
            interaction = Interaction(event.item_id, "rate", event.rating, None, event.ts)
        history = self.history
        position = len(history)
        while position and history[position - 1].ts > interaction.ts:
            position -= 1
        history.insert(position, interaction)
        del history[: max(0, len(history) - history_length)]
        self.seen.append(event.event_id)
        del self.seen[: max(0, len(self.seen) - dedupe_window)]
        return True


def encode(state: UserState) -> bytes:
    """The changelog value of a user's state (compact JSON)."""
    return orjson.dumps({"v": _FORMAT, "h": [list(i) for i in state.history], "s": state.seen})


def decode(raw: bytes) -> UserState:
    """Inverse of :func:`encode`; raises ``ValueError`` on a record it cannot read."""
    try:
        doc = orjson.loads(raw)
        if doc["v"] != _FORMAT:
            raise ValueError(f"unknown state format {doc['v']!r}")
        history = [Interaction(i, k, v, d, ts) for i, k, v, d, ts in doc["h"]]
        return UserState(history, list(doc["s"]))
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"unreadable user state: {exc}") from exc


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
        for key, (_, value) in encoded.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value

    async def _send(self, encoded: Mapping[bytes, tuple[int, bytes | None]]) -> None:
        # Straight to the app's producer rather than through ``send_changelog``
        # (a FutureMessage and a buffer hop per record): same topic, key,
        # partition and bytes, at a third of the cost per record.
        producer = self._table.app.producer
        topic = self._table.changelog_topic.get_topic_name()
        try:
            futures = [
                await producer.send(topic, key, value, partition, None, None)
                for key, (partition, value) in encoded.items()
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise TransientError(f"changelog write failed: {exc!r}") from exc
