from __future__ import annotations

import numpy as np
import pytest

from models.interactions import KIND_RATE
from models.synthetic import (
    MOVIELENS_STARS,
    START_MS,
    generate,
    generate_ratings,
    long_history_ratings,
)


def test_shape_determinism_and_plant() -> None:
    a = generate(300, 80, 5000, factors=4, seed=7)
    b = generate(300, 80, 5000, factors=4, seed=7)
    assert len(a.log) == 5000
    np.testing.assert_array_equal(a.log.item, b.log.item)
    np.testing.assert_array_equal(a.log.ts, b.log.ts)
    assert (np.diff(a.log.ts) >= 0).all() and a.log.ts[0] >= START_MS
    assert a.cluster_of("item-5") == 1
    assert a.neighbours("item-1")[:3] == ["item-5", "item-9", "item-13"]
    assert "item-1" not in a.neighbours("item-1")
    rates = a.log.value[a.log.kind == KIND_RATE]
    assert ((rates >= 0.5) & (rates <= 5)).all()


def test_zipf_popularity_within_clusters() -> None:
    d = generate(1000, 200, 40_000, factors=4, seed=1)
    counts = np.bincount(d.log.item, minlength=200)
    # the first item of each cluster is far more popular than the last ones
    assert counts[:4].min() > 5 * counts[-40:].mean()


def test_users_mostly_act_within_their_clusters() -> None:
    d = generate(500, 100, 20_000, factors=5, seed=2)
    cluster = d.item_cluster[d.log.item]
    own = (cluster == d.user_clusters[d.log.user, 0]) | (cluster == d.user_clusters[d.log.user, 1])
    assert own.mean() > 0.8


def test_ratings_profile_is_movielens_like() -> None:
    """Defaults: MovieLens 100k's size, sparsity, skew and star distribution."""
    d = generate_ratings(seed=3)
    log = d.log
    n_users, n_items = len(log.users), len(log.items)
    assert (n_users, n_items, len(log)) == (943, 1682, 100_000)
    assert 0.06 < len(log) / (n_users * n_items) < 0.065
    pairs = log.user * n_items + log.item
    assert np.unique(pairs).size == len(log)  # one rating per user and item
    per_item = np.sort(np.bincount(log.item, minlength=n_items))[::-1]
    assert per_item[: n_items // 10].sum() > 0.4 * len(log)  # a few items get most ratings
    assert per_item[: n_items // 5].sum() > 0.6 * len(log)
    assert (per_item <= 1).sum() > 50  # and a long tail barely any
    per_user = np.bincount(log.user, minlength=n_users)
    assert per_user.min() >= 20 and np.median(per_user) < 0.75 * per_user.mean()
    stars = np.bincount(log.value.astype(np.int64), minlength=6)[1:] / len(log)
    np.testing.assert_allclose(stars, MOVIELENS_STARS, atol=0.005)
    assert set(np.unique(log.value)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 3.4 < log.value.mean() < 3.6
    assert (log.kind == KIND_RATE).all() and (np.diff(log.ts) >= 0).all()


def test_ratings_carry_the_taste_signal_and_are_deterministic() -> None:
    a = generate_ratings(300, 500, 15_000, seed=4)
    b = generate_ratings(300, 500, 15_000, seed=4)
    np.testing.assert_array_equal(a.log.item, b.log.item)
    np.testing.assert_array_equal(a.log.value, b.log.value)
    affinity = np.einsum("ij,ij->i", a.user_taste[a.log.user], a.item_taste[a.log.item])
    assert affinity[a.log.value >= 4].mean() > affinity[a.log.value <= 2].mean() + 0.3
    # popular items are rated more often, by construction of the choice weights
    counts = np.bincount(a.log.item, minlength=500)
    assert np.corrcoef(a.item_popularity, np.log1p(counts))[0, 1] > 0.7


def test_ratings_scale_and_reject_impossible_sizes() -> None:
    big = generate_ratings(3000, 4000, 300_000, seed=5)
    assert len(big.log) == 300_000 and np.bincount(big.log.user).min() >= 20
    with pytest.raises(ValueError, match="n_ratings"):
        generate_ratings(100, 50, 1000)  # 100 users x 20 ratings need 2000


def test_the_long_history_profile_has_movielens_shaped_histories() -> None:
    """Issue 25: real rating data has long histories (public MovieLens: 38-48% of users
    past 100 ratings, giving 74-84% of them; median 65-96, 90th percentile 240-400, the
    heaviest past 2,000), where the default profile's users are short."""
    log = long_history_ratings(n_users=600, seed=0).log
    per_user = np.bincount(log.user, minlength=len(log.users))
    heavy = per_user > 100
    assert 0.38 <= heavy.mean() <= 0.48
    assert 0.74 <= per_user[heavy].sum() / per_user.sum() <= 0.84
    assert 65 <= np.median(per_user) <= 96
    assert 240 <= np.percentile(per_user, 90) <= 400
    assert per_user.max() > 2000
    assert 0.04 <= len(log) / (len(log.users) * len(log.items)) <= 0.06
    per_item = np.sort(np.bincount(log.item, minlength=len(log.items)))[::-1]
    assert per_item[: len(per_item) // 100].sum() / len(log) > 0.08  # the top 1% of items
    assert set(np.unique(log.value).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
