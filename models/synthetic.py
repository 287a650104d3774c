"""A synthetic interaction log with planted structure, so tests and demos need no downloads.

The plant: items fall into ``factors`` clusters (item ``i`` is in cluster
``i % factors``), and every user likes two clusters (a main one and a second
one). Each event picks its user by a Zipf-like activity, then a cluster (the
user's main cluster with probability 0.6, the second with 0.25, any cluster
otherwise), then an item of that cluster by a Zipf popularity over the
cluster's items (``item-<c>`` is the most popular of cluster ``c``, then
``item-<c + factors>``, ...). Events in a liked cluster are full-ish watches or
high ratings; the rest are skims or low ratings, so the weighting rule has
real dislikes to handle.

The known answer: an item's **neighbours** are the other items of its cluster
(:meth:`SyntheticData.neighbours`); a model that learned the plant puts them
first for a user who watched the item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.ids import IdMap
from models.interactions import KIND_RATE, KIND_WATCH, InteractionLog

#: Timestamps start here (2025-01-01T00:00:00Z) so that they pass the event schema's bounds.
START_MS = 1_735_689_600_000


@dataclass(frozen=True)
class SyntheticData:
    """The log plus the plant that generated it."""

    log: InteractionLog
    item_cluster: np.ndarray  # cluster of item index i (log.items order is item-0, item-1, ...)
    user_clusters: np.ndarray  # (n_users, 2): each user's main and second cluster
    factors: int

    def cluster_of(self, item_id: str) -> int:
        """The planted cluster of ``item_id``."""
        return int(self.item_cluster[self.log.items.index(item_id)])

    def neighbours(self, item_id: str, n: int | None = None) -> list[str]:
        """The other items of ``item_id``'s cluster, most popular first."""
        c = self.cluster_of(item_id)
        members = [
            i for i in np.flatnonzero(self.item_cluster == c) if self.log.items.ids[i] != item_id
        ]
        ids = [self.log.items.ids[i] for i in members]
        return ids if n is None else ids[:n]


def generate(
    n_users: int,
    n_items: int,
    n_interactions: int,
    factors: int = 8,
    seed: int = 0,
    zipf: float = 1.0,
    rate_share: float = 0.3,
    span_days: float = 30.0,
) -> SyntheticData:
    """A log of ``n_interactions`` events (see the module docstring for the plant).

    ``zipf`` is the exponent of item popularity within a cluster and of user
    activity; ``rate_share`` the share of rate events (the rest are watches,
    10% of them without a duration); timestamps are spread over ``span_days``
    from :data:`START_MS` and the rows are in time order.
    """
    if n_items < factors or factors < 2:
        raise ValueError("need factors >= 2 and at least one item per cluster (n_items >= factors)")
    rng = np.random.default_rng(seed)
    item_cluster = np.arange(n_items) % factors
    main = rng.integers(0, factors, n_users)
    second = (main + rng.integers(1, factors, n_users)) % factors
    user_clusters = np.stack([main, second], axis=1)

    activity = 1.0 / np.arange(1, n_users + 1) ** (zipf * 0.5)
    activity = rng.permutation(activity / activity.sum())
    user = rng.choice(n_users, size=n_interactions, p=activity)
    draw = rng.random(n_interactions)
    cluster = np.where(
        draw < 0.6,
        main[user],
        np.where(draw < 0.85, second[user], rng.integers(0, factors, n_interactions)),
    )
    liked = (cluster == main[user]) | (cluster == second[user])
    per_cluster = n_items // factors  # every cluster has at least this many items
    rank_p = 1.0 / np.arange(1, per_cluster + 1) ** zipf
    rank = rng.choice(per_cluster, size=n_interactions, p=rank_p / rank_p.sum())
    item = cluster + rank * factors

    is_rate = rng.random(n_interactions) < rate_share
    rating = np.where(
        liked,
        rng.choice([3.5, 4.0, 4.5, 5.0], n_interactions),
        rng.choice([0.5, 1.0, 1.5, 2.0, 3.0], n_interactions),
    )
    duration = rng.choice([600.0, 1800.0, 3600.0, 7200.0], n_items)[item]
    fraction = np.where(
        liked, rng.uniform(0.6, 1.0, n_interactions), rng.uniform(0.0, 0.3, n_interactions)
    )
    watched = np.round(fraction * duration, 1)
    known_duration = rng.random(n_interactions) >= 0.1

    span_ms = int(span_days * 86_400_000)
    ts = np.sort(START_MS + rng.integers(0, span_ms, n_interactions))
    log = InteractionLog(
        users=IdMap([f"user-{u}" for u in range(n_users)]),
        items=IdMap([f"item-{i}" for i in range(n_items)]),
        user=user.astype(np.int64),
        item=item.astype(np.int64),
        kind=np.where(is_rate, KIND_RATE, KIND_WATCH).astype(np.int8),
        value=np.where(is_rate, rating, watched),
        duration_s=np.where(is_rate | ~known_duration, np.nan, duration),
        ts=ts.astype(np.int64),
    )
    return SyntheticData(log, item_cluster, user_clusters, factors)
