"""Item fold-in against implicit's own item update, and the statistics' arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from models.item_foldin import ItemStats, content_vectors, item_vectors, merge_interim, user_gram

ALPHA, REG = 2.0, 0.05


@pytest.fixture(scope="module")
def model() -> tuple[np.ndarray, np.ndarray]:
    """User and item factors of a small trained model (implicit's ALS, 8 factors)."""
    import implicit.cpu.als

    rng = np.random.default_rng(5)
    ui = sp.random(300, 80, density=0.1, random_state=rng, format="csr", dtype=np.float32)
    ui.data[:] = rng.integers(1, 4, ui.data.size)
    als = implicit.cpu.als.AlternatingLeastSquares(
        factors=8, regularization=REG, alpha=ALPHA, iterations=5, random_state=1
    )
    als.fit(ui, show_progress=False)
    return np.asarray(als.user_factors), np.asarray(als.item_factors)


def _implicit_item(user_factors: np.ndarray, users: list[int], conf: list[float]) -> np.ndarray:
    import implicit.cpu.als

    ref = implicit.cpu.als.AlternatingLeastSquares(
        factors=user_factors.shape[1], regularization=REG, alpha=ALPHA
    )
    ref.user_factors = user_factors
    ref.item_factors = np.zeros((1, user_factors.shape[1]), dtype=np.float32)
    row = sp.csr_matrix(
        (np.asarray(conf, np.float32), users, [0, len(users)]), shape=(1, len(user_factors))
    )
    return np.asarray(ref.recalculate_item(0, row))


def test_the_statistics_solve_to_implicits_own_item_update(model: tuple) -> None:
    x, _ = model
    gram = user_gram(x, REG)
    cases = [([3, 17, 40], [1.0, 2.0, 0.5]), ([5], [3.0]), ([1, 2, 3, 4], [1.0, -2.0, 1.0, 4.0])]
    stats = []
    for users, conf in cases:
        s = ItemStats.empty(x.shape[1])
        for u, c in zip(users, conf, strict=True):
            s.add(x[u], ALPHA * c)
        stats.append(s)
    got = item_vectors(gram, stats)
    for row, (users, conf) in enumerate(cases):
        np.testing.assert_allclose(got[row], _implicit_item(x, users, conf), atol=2e-4)


def test_a_taken_back_contribution_leaves_the_statistics_as_if_never_added(model: tuple) -> None:
    x, _ = model
    with_them, without = ItemStats.empty(8), ItemStats.empty(8)
    for u in (1, 2, 3):
        with_them.add(x[u], 3.0)
        without.add(x[u], 3.0)
    with_them.add(x[9], 5.0)
    with_them.add(x[9], 5.0, sign=-1)
    np.testing.assert_allclose(with_them.a, without.a, atol=1e-12)
    np.testing.assert_allclose(with_them.b, without.b, atol=1e-12)
    assert with_them.users == without.users == 3


def test_an_item_without_users_gets_the_zero_vector(model: tuple) -> None:
    x, _ = model
    assert not item_vectors(user_gram(x, REG), [ItemStats.empty(8)]).any()
    assert item_vectors(user_gram(x, REG), []).shape == (0, 8)


def test_content_vectors_point_into_the_cluster_of_their_tags() -> None:
    """Two planted clusters of items, each with its own tag and a tag shared by all: a new
    item tagged with a cluster's tag lands nearest that cluster's centre."""
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((2, 16)) * 3
    cluster = np.repeat([0, 1], 50)
    y = centres[cluster] + rng.standard_normal((100, 16))
    item_tags = {i: [f"c{cluster[i]}", "movie"] for i in range(100)}
    got = content_vectors([["c0", "movie"], ["c1"], ["movie"], ["nowhere"]], item_tags, y)
    cos = (got[:2] @ centres.T) / np.outer(
        np.linalg.norm(got[:2], axis=1), np.linalg.norm(centres, axis=1)
    )
    assert cos[0, 0] > 0.95 and cos[1, 1] > 0.95
    # as long as the items it stands among, not shrunk by the averaging
    mean_norm = np.linalg.norm(y[cluster == 0], axis=1).mean()
    assert np.linalg.norm(got[0]) == pytest.approx(mean_norm, rel=1e-5)
    # a tag every item has weighs nothing by specificity: the plain mean of everything
    assert np.linalg.norm(got[2]) > 0
    assert not got[3].any()


def test_merge_interim_puts_a_better_interim_item_in_its_place_and_leaves_other_rows() -> None:
    items = np.array([[0, 1, 2], [0, 1, 2]])
    scores = np.array([[0.9, 0.5, 0.1], [0.9, 0.5, 0.1]], dtype=np.float32)
    users = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    interim = np.array([[0.7, 0.0], [0.05, 0.0]], dtype=np.float32)
    excluded = np.array([[False, False], [True, False]])
    personal = np.array([True, True])
    got_items, got_scores, entered = merge_interim(
        items, scores, users, personal, interim, excluded, n_model=10
    )
    assert entered.tolist() == [True, False]
    assert got_items[0].tolist() == [0, 10, 1]
    np.testing.assert_allclose(got_scores[0], [0.9, 0.7, 0.5])
    assert got_items[1].tolist() == [0, 1, 2]  # its interim item is excluded (seen)
