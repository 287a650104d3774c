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


#: Share of each whole-star rating 1..5 in MovieLens 100k (6%, 11%, 27%, 34%, 21%; mean 3.53).
MOVIELENS_STARS = (0.061, 0.114, 0.271, 0.341, 0.213)


@dataclass(frozen=True)
class SyntheticRatings:
    """A MovieLens-like rating log plus the taste model that generated it."""

    log: InteractionLog
    user_taste: np.ndarray  # (n_users, dim) latent taste vectors
    item_taste: np.ndarray  # (n_items, dim)
    item_popularity: np.ndarray  # (n_items,) log popularity of each item


def _user_counts(
    rng: np.random.Generator, n_users: int, n_ratings: int, low: int, high: int, sigma: float
) -> np.ndarray:
    """Ratings per user: ``low`` plus a lognormal share of the rest, capped at ``high``.

    The shares are allocated by largest remainder, so the counts sum to exactly
    ``n_ratings`` (the caller checks that the caps leave room for them).
    """
    share = rng.lognormal(0.0, sigma, n_users)
    counts = np.full(n_users, low, dtype=np.int64)
    left = n_ratings - counts.sum()
    while left > 0:
        open_ = counts < high
        want = left * share * open_ / (share * open_).sum()
        add = np.minimum(np.floor(want).astype(np.int64), high - counts)
        if add.sum() == 0:  # less than one rating per open user left: the largest shares get one
            order = np.argsort(-(want - np.floor(want)) - open_, kind="stable")
            add = np.zeros(n_users, dtype=np.int64)
            add[order[:left]] = 1
        counts += add
        left = n_ratings - counts.sum()
    return counts


def generate_ratings(
    n_users: int = 943,
    n_items: int = 1682,
    n_ratings: int = 100_000,
    dim: int = 12,
    seed: int = 0,
    popularity_sigma: float = 2.0,
    taste: float = 1.2,
    activity_sigma: float = 1.15,
    min_per_user: int = 20,
    span_days: float = 210.0,
    max_share: float = 0.45,
) -> SyntheticRatings:
    """A rating log shaped like MovieLens 100k (the defaults give its size: 6.3% dense).

    Why this shape: real rating data is sparse, dominated by a few popular
    items, and its users differ widely in activity, so popularity is a strong
    baseline and a personalised model has to be well regularised to beat it.
    Tuning and defaults are measured on this profile (never on a test split),
    because the planted-cluster :func:`generate` is so structured that any
    model beats popularity there.

    The model: every item has a log popularity ``p_i ~ N(0, popularity_sigma²)``
    and every user and item a taste vector (``dim`` standard normals scaled so
    that ``t_u·t_i`` has variance about 1). User ``u`` rates ``n_u`` distinct
    items, ``min_per_user`` plus a lognormal (``activity_sigma``) share of the
    rest, drawn without replacement with weights ``exp(p_i + taste·t_u·t_i)``
    (Gumbel top-k). The rating is a latent ``b_u + b_i + t_u·t_i + noise``
    (item bias rising with popularity, as on MovieLens: popular films are rated
    higher) cut into whole stars 1-5 at the quantiles of
    :data:`MOVIELENS_STARS`, so a high rating means more affinity. Timestamps
    are uniform over ``span_days`` from :data:`START_MS`; rows are in time order.
    Nobody rates more than ``max_share`` of the catalogue.
    """
    if n_items < 2 or n_users < 1 or dim < 1 or not 0 < max_share <= 1:
        raise ValueError(
            "need at least one user, two items, one taste dimension and 0 < max_share <= 1"
        )
    high = max(min_per_user, int(n_items * max_share))
    if not min_per_user * n_users <= n_ratings <= high * n_users:
        raise ValueError(
            f"n_ratings must be within {min_per_user * n_users}..{high * n_users} "
            f"for {n_users} users x {n_items} items"
        )
    rng = np.random.default_rng(seed)
    pop = rng.normal(0.0, popularity_sigma, n_items)
    scale = dim**-0.25
    user_taste = rng.normal(0.0, scale, (n_users, dim))
    item_taste = rng.normal(0.0, scale, (n_items, dim))
    counts = _user_counts(rng, n_users, n_ratings, min_per_user, high, activity_sigma)

    users: list[np.ndarray] = []
    items: list[np.ndarray] = []
    block = max(1, 4_000_000 // n_items)  # users per block: at most 4M keys at once
    for start in range(0, n_users, block):
        stop = min(n_users, start + block)
        affinity = user_taste[start:stop] @ item_taste.T
        keys = pop + taste * affinity + rng.gumbel(size=affinity.shape)
        order = np.argsort(-keys, axis=1)
        for row, u in enumerate(range(start, stop)):
            items.append(order[row, : counts[u]])
            users.append(np.full(counts[u], u, dtype=np.int64))
    user = np.concatenate(users)
    item = np.concatenate(items).astype(np.int64)

    affinity = np.einsum("ij,ij->i", user_taste[user], item_taste[item])
    item_bias = 0.3 * (pop - pop.mean()) / max(pop.std(), 1e-9) + rng.normal(0, 0.3, n_items)
    user_bias = rng.normal(0.0, 0.4, n_users)
    latent = user_bias[user] + item_bias[item] + affinity + rng.normal(0.0, 0.6, user.size)
    cuts = np.quantile(latent, np.cumsum(MOVIELENS_STARS)[:-1])
    stars = 1.0 + np.searchsorted(cuts, latent).astype(np.float64)

    order = rng.permutation(user.size)
    user, item, stars = user[order], item[order], stars[order]
    ts = np.sort(START_MS + rng.integers(0, int(span_days * 86_400_000), user.size))
    log = InteractionLog(
        users=IdMap([f"user-{u}" for u in range(n_users)]),
        items=IdMap([f"item-{i}" for i in range(n_items)]),
        user=user,
        item=item,
        kind=np.full(user.size, KIND_RATE, dtype=np.int8),
        value=stars,
        duration_s=np.full(user.size, np.nan),
        ts=ts.astype(np.int64),
    )
    return SyntheticRatings(log, user_taste, item_taste, pop)


#: The long-history profile's catalogue: with :data:`LONG_HISTORY_MAX_SHARE` it lets the
#: heaviest users pass 2,000 ratings, and at about 165 ratings per user it is 4.6% dense.
LONG_HISTORY_ITEMS = 3600
LONG_HISTORY_MAX_SHARE = 0.6
LONG_HISTORY_PER_USER = 165


def long_history_ratings(n_users: int = 600, seed: int = 0) -> SyntheticRatings:
    """A rating log whose users have histories as long as MovieLens 1M's (issue 25).

    Why: real rating data is not short-history data. In public MovieLens data
    38-48% of users rate more than 100 items and give 74-84% of all ratings;
    the median user rates 65-96, the 90th percentile 240-400, the heaviest
    over 2,000. A history cap or a tuning choice measured on short histories
    (:func:`generate_ratings`' defaults, MovieLens 100k) misjudges such data, so
    quality tests, tuning and ``loadtests/bench_history.py`` use this profile.

    Shape, for any ``n_users`` from a few hundred (the per-user figures hold;
    the largest history passes 2,000 from about 500 users): at least 20 ratings
    per user plus a lognormal (sigma 1.3) share, capped at 60% of a catalogue of
    :data:`LONG_HISTORY_ITEMS` items, about 4.6% dense, popularity as skewed as
    :func:`generate_ratings` (sigma 2), whole-star ratings 1-5 in MovieLens'
    proportions. ``tests/models/test_synthetic.py`` pins the figures.
    """
    return generate_ratings(
        n_users=n_users,
        n_items=LONG_HISTORY_ITEMS,
        n_ratings=n_users * LONG_HISTORY_PER_USER,
        seed=seed,
        activity_sigma=1.3,
        max_share=LONG_HISTORY_MAX_SHARE,
    )
