"""Popularity from the histories this worker holds: the lists users get before any model exists.

Before the first model version is published there are no item factors to fold
a user into, yet the issue asks that users still get a list and that events are
kept. The worker counts, per item, how many of its users interacted with it;
the count is rebuilt from the recovered state (so it survives a restart the
same way the histories do) and bumped as new interactions arrive. It is
partition-local by nature, which is why the worker never writes it to the
shared ``popular`` key: that key holds the model's global popularity.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable

from models.weighting import Interaction


class Popularity:
    """Item -> number of held users with at least one interaction with it."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def rebuild(self, histories: Iterable[Iterable[Interaction]]) -> None:
        """Recount from scratch (after recovery, and to drop forgotten or evicted items)."""
        counts: Counter[str] = Counter()
        for history in histories:
            counts.update({i.item_id for i in history})
        self._counts = counts

    def add(self, new_items: Iterable[str]) -> None:
        """Count items a user interacted with for the first time."""
        self._counts.update(new_items)

    def top(self, n: int) -> list[tuple[str, float]]:
        """The ``n`` most popular items with their counts, ties broken by id (deterministic)."""
        best = heapq.nsmallest(n, self._counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(item, float(count)) for item, count in best]
