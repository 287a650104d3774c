"""Which partitions this worker may write the changelog of, across rebalances.

A batch is prepared while the consumer group may be rebalancing: the agent
keeps running while Faust revokes partitions, and a batch that reaches its
changelog write after the revoke began could write a user's record into a
partition another worker now owns, behind that worker's back (its in-memory
state would not know the record, and the next recovery would read a stale
history). So the revoke's very start fences the partitions, before Faust waits
for in-flight batches; a batch then neither writes the fenced partitions'
records, dead letters or lists, nor acks their events: the partitions' next
owner (perhaps this worker again) reprocesses them from the last commit. The
assignment that follows unfences the partitions it gives this worker.

Partition numbers are shared by the event topics and the changelog
(co-partitioned, see docs/worker.md, "Partitioning"), so one number stands for
all of them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable


class Ownership:
    """The event partitions this worker holds now; empty until the first assignment."""

    def __init__(self, topics: Collection[str]) -> None:
        self._topics = frozenset(topics)
        self._held: set[tuple[str, int]] = set()
        #: Revokes so far: a batch received at one count and prepared at another
        #: saw a rebalance in between.
        self.revokes = 0

    def revoking(self, partitions: Iterable[tuple[str, int]]) -> None:
        """A revoke started: from now on nothing may be written for these partitions."""
        self.revokes += 1
        self._held.difference_update(partitions)

    def assigned(self, partitions: Iterable[tuple[str, int]]) -> None:
        """An assignment completed: these partitions, and no others, are this worker's."""
        self._held = {tp for tp in partitions if tp[0] in self._topics}

    @property
    def held(self) -> int:
        """Event-topic partitions held (a gauge: 0 while rebalancing)."""
        return len(self._held)

    def fenced(self, partitions: Iterable[int], received_at: int | None = None) -> frozenset[int]:
        """Those of ``partitions`` (numbers) that no event topic of this worker holds; all of
        them when a revoke began since the batch arrived (``received_at``: :attr:`revokes` then)."""
        if received_at is not None and received_at != self.revokes:
            return frozenset(partitions)
        owned = {p for _, p in self._held}
        return frozenset(p for p in partitions if p not in owned)
