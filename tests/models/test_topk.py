from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.topk import top_k


def _naive(x: np.ndarray, y: np.ndarray, n: int, exclude: np.ndarray) -> list[list[int]]:
    out = []
    for u in range(x.shape[0]):
        s = y @ x[u]
        s[exclude[u]] = -np.inf
        order = np.argsort(-s, kind="stable")
        out.append([int(i) for i in order[:n] if np.isfinite(s[i])])
    return out


def test_matches_a_naive_sort_with_exclusions() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 8)).astype(np.float32)
    y = rng.standard_normal((300, 8)).astype(np.float32)
    mask = rng.random((50, 300)) < 0.1
    ids, scores = top_k(x, y, 20, exclude=sp.csr_matrix(mask.astype(np.float32)))
    assert ids.shape == (50, 20)
    assert ids.tolist() == _naive(x, y, 20, mask)
    np.testing.assert_allclose(scores, np.take_along_axis(x @ y.T, ids, axis=1), rtol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()


def test_unfillable_slots_are_minus_one() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    y = rng.standard_normal((5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=np.float32)
    ids, scores = top_k(x, y, 10, exclude=sp.csr_matrix(mask))  # n > items
    assert ids.shape == (2, 5)
    assert sorted(ids[0][:2].tolist()) == [3, 4] and ids[0][2:].tolist() == [-1, -1, -1]
    assert np.isneginf(scores[0][2:]).all()
    assert sorted(ids[1].tolist()) == [0, 1, 2, 3, 4]


def test_empty_batch() -> None:
    ids, scores = top_k(np.zeros((0, 4), np.float32), np.ones((3, 4), np.float32), 2)
    assert ids.shape == (0, 2) and scores.shape == (0, 2)


def test_users_excluding_very_different_numbers_of_items() -> None:
    """Users are grouped by exclusion count; every group must match the naive answer."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 8)).astype(np.float32)
    y = rng.standard_normal((400, 8)).astype(np.float32)
    mask = np.zeros((6, 400), dtype=bool)
    for u, count in enumerate([0, 1, 3, 17, 100, 390]):
        # exclude the user's own best items, the hardest case for "ask for n + c"
        mask[u, np.argsort(-(y @ x[u]))[:count]] = True
    ids, _ = top_k(x, y, 15, exclude=sp.csr_matrix(mask.astype(np.float32)))
    expected = _naive(x, y, 15, mask)
    for u in range(6):
        assert [i for i in ids[u].tolist() if i >= 0] == expected[u]
    assert ids[5].tolist()[10:] == [-1] * 5  # only 10 items left for the last user
