from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from models.als import ALSFactors
from models.foldin import WOODBURY_MAX_RATIO, FoldIn, HistoryRows
from models.synthetic import SyntheticData
from models.weighting import confidence_matrix


def _implicit_model(als: ALSFactors) -> Any:
    """implicit's own model with our factors (implicit is untyped, hence Any)."""
    import implicit.cpu.als

    cfg = als.config
    model = implicit.cpu.als.AlternatingLeastSquares(
        factors=cfg.factors, regularization=cfg.regularization, alpha=cfg.alpha, num_threads=1
    )
    model.item_factors = als.item_factors
    model.user_factors = als.user_factors
    return model


def _rows(m: sp.csr_matrix) -> HistoryRows:
    return HistoryRows(m.indptr.astype(np.int64), m.indices.astype(np.int64), m.data)


def test_agrees_with_implicit_recalculate_user(synth: SyntheticData, als: ALSFactors) -> None:
    """Same math as implicit's exact (Cholesky) solve, negative confidences included."""
    m = confidence_matrix(synth.log)
    assert (m.data < 0).any(), "the test data must contain dislikes"
    users = np.arange(300)
    lengths = np.diff(m[users].indptr)
    limit = WOODBURY_MAX_RATIO * als.config.factors
    assert (lengths <= limit).any() and (lengths > limit).any(), "cover both solve paths"
    ref = _implicit_model(als).recalculate_user(users, m[users])
    fold = FoldIn(als.item_factors, als.config.regularization, als.config.alpha)
    got = fold.user_vectors(_rows(m[users]))
    rel = np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert rel.max() < 1e-4


def test_explained_fold_gives_the_same_vectors(synth: SyntheticData, als: ALSFactors) -> None:
    m = confidence_matrix(synth.log)[:100]
    fold = FoldIn(als.item_factors, als.config.regularization, als.config.alpha)
    plain = fold.user_vectors(_rows(m))
    explained = fold.fold(_rows(m), explain=True)
    np.testing.assert_allclose(explained.vectors, plain, rtol=1e-5, atol=1e-6)


def _expected_because(model: Any, m: sp.csr_matrix, u: int, item: int, alpha: float) -> int:
    """implicit's ``explain`` contributions, per unit of preference (``alpha`` times the user's
    confidence): the history item of the largest positive one, or -1."""
    _, contributions, _ = model.explain(u, m, item, N=m.shape[1])
    row = m[u]
    confidence = dict(zip(row.indices.tolist(), row.data.tolist(), strict=True))
    per_unit = [
        (c / (alpha * confidence[j]), j) for j, c in contributions if c > 0 and confidence[j] > 0
    ]
    return max(per_unit)[1] if per_unit else -1


def test_because_matches_implicit_explain(synth: SyntheticData, als: ALSFactors) -> None:
    m = confidence_matrix(synth.log)
    model = _implicit_model(als)
    fold = FoldIn(als.item_factors, als.config.regularization, als.config.alpha)
    top = np.array([[0, 7, 42, 101], [3, 9, 250, 399]])
    users = np.array([5, 17])
    got = fold.fold(_rows(m[users]), explain=True).because(top)
    for row, u in enumerate(users):
        for col, item in enumerate(top[row]):
            assert got[row, col] == _expected_because(model, m, int(u), int(item), als.config.alpha)


def test_because_ignores_padding_when_no_item_contributes(als: ALSFactors) -> None:
    """Regression: ``because`` relies on W's padding columns being exactly 0, unmasked.

    Users of 6 and 7 items share a chunk (the shorter one padded), half their
    items disliked, so for many targets no real item contributes positively;
    a padding column must never be named and such targets get -1.
    """
    rng = np.random.default_rng(11)
    n_items = als.item_factors.shape[0]
    rows = []
    for length in (6, 7, 6, 7):
        items = rng.choice(n_items, length, replace=False)
        conf = rng.choice([-3.0, 2.0], length).astype(np.float32)
        rows.append(sp.csr_matrix((conf, items, [0, length]), shape=(1, n_items)))
    m = sp.csr_matrix(sp.vstack(rows))
    m.sort_indices()
    top = np.tile(np.arange(0, n_items, 4), (4, 1))
    got = FoldIn(als.item_factors, als.config.regularization, als.config.alpha)
    got_because = got.fold(_rows(m), explain=True).because(top)
    model = _implicit_model(als)
    unexplained = 0
    for u in range(4):
        for col, item in enumerate(top[u]):
            expected = _expected_because(model, m, u, int(item), als.config.alpha)
            unexplained += expected == -1
            assert got_because[u, col] == expected
    assert unexplained > 0, "the case under test must occur"


def test_users_without_items_get_the_zero_vector_not_nan(als: ALSFactors) -> None:
    fold = FoldIn(als.item_factors, als.config.regularization, als.config.alpha)
    rows = HistoryRows(np.array([0, 0, 1, 1]), np.array([4]), np.array([3.0], dtype=np.float32))
    out = fold.user_vectors(rows)
    assert np.isfinite(out).all()
    assert not out[0].any() and not out[2].any() and out[1].any()
    empty = fold.user_vectors(
        HistoryRows(np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    )
    assert empty.shape == (0, als.config.factors)


def test_chunking_and_padding_do_not_change_results(als: ALSFactors) -> None:
    """Users of very different history lengths, more than one chunk of them."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 60, 600)
    indptr = np.r_[0, np.cumsum(lengths)]
    indices = np.concatenate([rng.choice(400, k, replace=False) for k in lengths])
    conf = rng.choice([-2.0, 1.0, 4.0], indices.size).astype(np.float32)
    rows = HistoryRows(indptr, indices, conf)
    fold = FoldIn(als.item_factors, als.config.regularization, als.config.alpha)
    batched = fold.user_vectors(rows)
    for u in rng.choice(600, 20, replace=False):
        one = HistoryRows(
            np.array([0, lengths[u]]),
            indices[indptr[u] : indptr[u + 1]],
            conf[indptr[u] : indptr[u + 1]],
        )
        np.testing.assert_allclose(fold.user_vectors(one)[0], batched[u], rtol=1e-5, atol=1e-6)


def test_gram_is_precomputed_once(als: ALSFactors) -> None:
    fold = FoldIn(als.item_factors, 0.5, 1.0)
    y = als.item_factors.astype(np.float64)
    np.testing.assert_allclose(fold.gram, y.T @ y + 0.5 * np.eye(y.shape[1]))
    assert fold.factors == als.config.factors
    assert pytest.approx(fold.alpha) == 1.0


def test_the_users_strongest_item_does_not_explain_every_row(
    synth: SyntheticData, als: ALSFactors
) -> None:
    """Issue 26, item 8: one item explained 58 of a visitor's 100 recommendations: the raw
    contribution scales with the history item's preference, so the user's strongest item
    (a 5-star rating among watches) won almost every row. Per unit of preference each row
    names the history item that points to it most."""
    from models.topk import top_k

    m = confidence_matrix(synth.log)
    fold = FoldIn(als.item_factors, als.config.regularization, als.config.alpha)
    users = np.flatnonzero(np.diff(m.indptr) >= 6)[:40]
    assert users.size == 40
    short = [m.indices[m.indptr[u] : m.indptr[u] + 6] for u in users]  # 6 items a user
    conf = np.ones(6 * len(users), dtype=np.float32)
    conf[::6] = 10.0  # each user's first item ten times stronger than the others
    rows = sp.csr_matrix(
        (conf, np.concatenate(short), np.arange(0, 6 * len(users) + 1, 6)), shape=(40, m.shape[1])
    )
    strongest = rows.indptr[:-1]
    result = fold.fold(_rows(rows), explain=True)
    seen = sp.csr_matrix((np.ones_like(rows.data), rows.indices, rows.indptr), shape=rows.shape)
    top, _ = top_k(result.vectors, fold.item_factors, 20, exclude=seen)
    because = result.because(top)
    strong_share = np.mean(because == rows.indices[strongest][:, None])
    distinct = np.mean([len(set(b[b >= 0].tolist())) for b in because])
    assert strong_share < 0.5, strong_share
    assert distinct >= 2.5, distinct
