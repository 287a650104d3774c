"""What the models must show on planted synthetic data: ALS beats popular; fold-in ~ retrain."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from models.als import ALSConfig, train
from models.evaluate import evaluate, split_log, tune
from models.foldin import FoldIn, HistoryRows
from models.metrics import ndcg_at_k
from models.synthetic import SyntheticData, generate
from models.topk import top_k
from models.weighting import confidence_matrix

CFG = ALSConfig(factors=16, iterations=15, num_threads=1)


@pytest.fixture(scope="module")
def data() -> SyntheticData:
    return generate(n_users=3000, n_items=600, n_interactions=100_000, factors=8, seed=11)


def test_als_beats_popular_by_a_clear_margin(data: SyntheticData) -> None:
    train_log, test_log = split_log(data.log, "stratified-user", 0.75, 42)
    ev = evaluate(train_log, test_log, CFG, k=10)
    assert ev.metrics["ndcg@10"] > 1.5 * ev.popular_metrics["ndcg@10"]
    assert ev.metrics["precision@10"] > 1.5 * ev.popular_metrics["precision@10"]
    assert ev.metrics["coverage"] > ev.popular_metrics["coverage"]


def test_fold_in_is_within_5_percent_of_a_full_retrain(data: SyntheticData) -> None:
    """Train on 90% of the users, fold in the other 10% from their training rows."""
    train_log, test_log = split_log(data.log, "stratified-user", 0.75, 42)
    full = confidence_matrix(train_log)
    n_users = full.shape[0]
    held = np.random.default_rng(0).permutation(n_users)[: n_users // 10]
    held.sort()
    mask = np.ones(n_users, dtype=bool)
    mask[held] = False

    relevant: dict[int, set[int]] = {}
    for u, i in zip(test_log.user.tolist(), test_log.item.tolist(), strict=True):
        if not mask[u]:
            relevant.setdefault(u, set()).add(i)
    seen = full[held].copy()
    seen.data[:] = 1

    def ndcg(vectors: np.ndarray, item_factors: np.ndarray) -> float:
        top, _ = top_k(vectors, item_factors, 10, seen)
        ranked = {int(u): [int(i) for i in row if i >= 0] for u, row in zip(held, top, strict=True)}
        return ndcg_at_k(ranked, relevant, 10)

    retrain = train(full, CFG)
    retrain_ndcg = ndcg(retrain.user_factors[held], retrain.item_factors)

    # the held-out users' rows are emptied: they are not trained on
    partial_matrix = (sp.diags(mask.astype(np.float32)) @ full).tocsr()
    partial_matrix.eliminate_zeros()
    partial = train(partial_matrix, CFG)
    rows = full[held]
    fold = FoldIn(partial.item_factors, CFG.regularization, CFG.alpha)
    vectors = fold.user_vectors(
        HistoryRows(rows.indptr.astype(np.int64), rows.indices.astype(np.int64), rows.data)
    )
    foldin_ndcg = ndcg(vectors, partial.item_factors)

    print(f"nDCG@10 of held-out users: retrain {retrain_ndcg:.4f}, fold-in {foldin_ndcg:.4f}")
    assert retrain_ndcg > 0.1
    assert abs(foldin_ndcg - retrain_ndcg) / retrain_ndcg <= 0.05


def test_tune_uses_a_validation_split_and_returns_the_best(data: SyntheticData) -> None:
    small = data.log.take(np.arange(30_000))
    train_log, _ = split_log(small, "stratified-user", 0.75, 42)
    best, trials = tune(
        train_log,
        ALSConfig(factors=8, iterations=5, num_threads=1),
        k=10,
        how="stratified-user",
        grid={"alpha": (0.5, 4.0), "regularization": (0.05, 1.0)},
    )
    assert len(trials) == 3  # the second parameter's trial at the winner is reused once
    assert max(t.score for t in trials) == next(t.score for t in trials if t.config == best)
