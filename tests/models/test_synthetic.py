from __future__ import annotations

import numpy as np

from models.interactions import KIND_RATE
from models.synthetic import START_MS, generate


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
