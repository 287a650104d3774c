"""Similar items on planted clusters: an item's neighbours come from its own cluster."""

from __future__ import annotations

import numpy as np

from models.als import ALSConfig, train
from models.similar import similar_items, unit_rows
from models.synthetic import generate
from models.weighting import DEFAULT_WEIGHTING, confidence_matrix


def test_exact_on_a_tiny_known_answer() -> None:
    factors = np.array([[1.0, 0.0], [0.9, 0.2], [0.1, 1.0], [-1.0, 0.3], [0.0, 0.0]])
    ids, scores = similar_items(factors, 3)
    assert ids.shape == (5, 3)
    assert ids[0].tolist() == [1, 2, 4]  # cosine order; the zero vector scores 0
    assert ids[2].tolist() == [1, 3, 0]
    assert np.isclose(scores[0][0], 0.9 / np.hypot(0.9, 0.2), atol=1e-6)
    assert all(i not in row for i, row in enumerate(ids.tolist()))  # never itself
    assert np.allclose(unit_rows(factors)[4], 0.0)  # a zero vector stays zero, no NaN


def test_n_beyond_the_catalogue_gives_every_other_item() -> None:
    ids, _ = similar_items(np.eye(3), 10)
    assert ids.shape == (3, 2) and sorted(ids[0].tolist()) == [1, 2]


def test_neighbours_come_from_the_planted_cluster_far_above_chance() -> None:
    data = generate(n_users=600, n_items=160, n_interactions=20_000, factors=8, seed=3)
    model = train(
        confidence_matrix(data.log, DEFAULT_WEIGHTING),
        ALSConfig(factors=8, iterations=15, num_threads=1, seed=1, use_gpu=False),
    )
    ids, _ = similar_items(model.item_factors, 10)
    clusters = data.item_cluster
    same = (clusters[ids] == clusters[:, None]).mean()
    chance = np.mean([(clusters == c).sum() - 1 for c in clusters]) / (len(clusters) - 1)
    assert chance < 0.15
    assert same >= 0.8, (same, chance)  # 8 clusters: chance is about 1/8
