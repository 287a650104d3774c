from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from models import topk
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


def test_threshold_path_matches_a_naive_sort_on_a_large_catalogue() -> None:
    """2,003 items for 10 wanted: groups of 25 (and 3 left over), far beyond the plain path."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((40, 8)).astype(np.float32)
    y = rng.standard_normal((2003, 8)).astype(np.float32)
    mask = rng.random((40, 2003)) < 0.05
    ids, scores = top_k(x, y, 10, exclude=sp.csr_matrix(mask.astype(np.float32)))
    assert ids.tolist() == _naive(x, y, 10, mask)
    np.testing.assert_allclose(scores, np.take_along_axis(x @ y.T, ids, axis=1), rtol=1e-5)


def test_threshold_path_ranks_tied_items_by_index_even_at_the_last_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """40 items, scattered, tie for the best score, and 10 of them fit: the 10 lowest indices."""
    monkeypatch.setattr(topk, "_best_by_partition", None)  # this case must not need it
    rng = np.random.default_rng(7)
    y = rng.permutation(np.arange(2000) % 50).astype(np.float32)[:, None]
    x = np.ones((3, 1), dtype=np.float32)
    ids, _ = top_k(x, y, 10)
    assert ids.tolist() == _naive(x, y, 10, np.zeros((3, 2000), dtype=bool))
    assert ids[0].tolist() == np.flatnonzero(y[:, 0] == 49)[:10].tolist()


def test_a_mass_of_equal_scores_still_fills_every_slot() -> None:
    """286 items tie for the best score: too many candidates, so the plain partition runs."""
    x = np.ones((2, 1), dtype=np.float32)
    y = (np.arange(2000) % 7).astype(np.float32)[:, None]
    ids, scores = top_k(x, y, 10)
    assert (scores == 6).all() and (ids % 7 == 6).all()
    assert len(set(ids[0].tolist())) == 10


def test_threshold_path_with_most_items_excluded() -> None:
    """Fewer scorable items than groups needed: those rows fall back to the plain partition."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    y = rng.standard_normal((1600, 8)).astype(np.float32)
    mask = np.zeros((4, 1600), dtype=bool)
    mask[0, 12:] = True  # 12 items left for 10 slots
    mask[1, 5:] = True  # 5 items left: 5 slots unfilled
    mask[2, ::2] = True
    ids, scores = top_k(x, y, 10, exclude=sp.csr_matrix(mask.astype(np.float32)))
    expected = _naive(x, y, 10, mask)
    for u in range(4):
        assert [i for i in ids[u].tolist() if i >= 0] == expected[u]
    assert ids[1].tolist()[5:] == [-1] * 5 and np.isneginf(scores[1][5:]).all()


def test_users_in_several_score_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The score buffer is reused across blocks; a short last block must not see stale scores."""
    monkeypatch.setattr(topk, "BLOCK_SCORES", 3 * 2000)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((7, 8)).astype(np.float32)
    y = rng.standard_normal((2000, 8)).astype(np.float32)
    mask = rng.random((7, 2000)) < 0.2
    ids, _ = top_k(x, y, 10, exclude=sp.csr_matrix(mask.astype(np.float32)))
    assert ids.tolist() == _naive(x, y, 10, mask)


@settings(max_examples=60, deadline=None)
@given(
    n_items=st.integers(1, 3000),
    n=st.integers(1, 40),
    levels=st.integers(1, 40),
    density=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_best_scores_match_a_full_sort_whatever_the_ties(
    n_items: int, n: int, levels: int, density: float, seed: int
) -> None:
    """Either path: the n best scores of every row, each id distinct, unmasked and scored right.

    Few score levels make ties common; a high density leaves rows with fewer
    than n scorable items.
    """
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, (5, 2)).astype(np.float32)
    y = rng.integers(0, levels, (n_items, 2)).astype(np.float32)
    mask = rng.random((5, n_items)) < density
    ids, scores = top_k(x, y, n, exclude=sp.csr_matrix(mask.astype(np.float32)))
    full = x @ y.T
    full[mask] = -np.inf
    expected = -np.sort(-full, axis=1)[:, : min(n, n_items)]
    np.testing.assert_array_equal(scores, expected)
    for u in range(5):
        filled = ids[u][ids[u] >= 0]
        assert len(set(filled.tolist())) == filled.size == np.isfinite(expected[u]).sum()
        assert not mask[u, filled].any()
        np.testing.assert_array_equal(full[u, filled], scores[u][: filled.size])


def test_rank_keys_order_by_score_then_item_and_decode_exactly() -> None:
    """The threshold path's packed sort keys: best score first (negatives, both zeros, the
    largest and smallest floats), equal scores by lower item, and back to the same values."""
    values = np.array(
        [-1.5, 0.0, -0.0, 3.25, 3.25, -np.inf, np.finfo(np.float32).max, 1e-30, -1e-30],
        dtype=np.float32,
    )
    items = np.array([4, 9, 2, 7, 3, 0, 100_000, 5, 6], dtype=np.int64)
    keys = np.sort(topk._rank_keys(values, items))
    ids, scores = topk._from_keys(keys)
    assert ids.tolist() == [100_000, 3, 7, 5, 2, 9, 6, 4, 0]
    big = np.finfo(np.float32).max
    expected = np.array([big, 3.25, 3.25, 1e-30, 0, 0, -1e-30, -1.5, -np.inf], dtype=np.float32)
    np.testing.assert_array_equal(scores, expected)


def test_empty_key_slots_decode_as_unfilled() -> None:
    key = topk._rank_keys(np.array([2.0], dtype=np.float32), np.array([1], dtype=np.int64))[0]
    keys = np.array([[key, topk._EMPTY]], dtype=np.uint64)
    ids, scores = topk._from_keys(keys)
    assert ids.tolist() == [[1, -1]]
    assert scores[0, 0] == 2.0 and np.isneginf(scores[0, 1])


def test_a_zero_user_takes_the_tie_path_not_the_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27: a user folded in from items the model knows nothing of has a zero vector:
    every score 0, a mass at the threshold. Each such row took a partition of the whole
    catalogue (a tenth of bench_stream's users at 27,000 items); the best are now the
    items above 0 by score, then the lowest-indexed items at 0, in two passes."""
    monkeypatch.setattr(topk, "_best_by_partition", None)  # this case must not need it
    rng = np.random.default_rng(8)
    y = rng.standard_normal((6000, 2)).astype(np.float32)
    y[:5000] = 0  # 5,000 items with zero factors
    x = np.array([[0.0, 0.0], [1.0, 0.0]], dtype=np.float32)  # a zero user, and another
    mask = np.zeros((2, 6000), dtype=bool)
    mask[0, [0, 3, 7]] = True
    ids, scores = top_k(x, y, 10, exclude=sp.csr_matrix(mask.astype(np.float32)))
    assert ids[0].tolist() == [1, 2, 4, 5, 6, 8, 9, 10, 11, 12]  # the lowest indices at 0
    assert (scores[0] == 0).all()
    assert ids[1].tolist() == _naive(x, y, 10, mask)[1]


def test_a_mass_at_the_threshold_below_a_few_better_items() -> None:
    """A few items above the mass and the rest of the list from it, lowest indices first."""
    y = np.zeros((3000, 1), dtype=np.float32)
    y[[2500, 40, 1700], 0] = [3.0, 2.0, 2.0]
    ids, scores = top_k(np.ones((1, 1), dtype=np.float32), y, 6)
    assert ids[0].tolist() == [2500, 40, 1700, 0, 1, 2]
    assert scores[0].tolist() == [3.0, 2.0, 2.0, 0.0, 0.0, 0.0]
