"""What the models must show.

On planted synthetic data: ALS beats popular; fold-in ~ retrain. On MovieLens-like
ratings (sparse, popularity-skewed; :func:`generate_ratings`) under Microsoft
Recommenders' protocol (stratified by item, ratio 0.75, every rated test item
relevant): the default configuration, untuned, beats implicit's own defaults and
the popular list, and the tuned pipeline does too (issue 9).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from models.als import ALSConfig, train
from models.evaluate import Holdout, evaluate, split_log
from models.foldin import FoldIn, HistoryRows
from models.interactions import InteractionLog
from models.metrics import ndcg_at_k
from models.synthetic import SyntheticData, generate, generate_ratings, long_history_ratings
from models.topk import top_k
from models.tuning import tune
from models.weighting import DEFAULT_WEIGHTING, confidence_matrix

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


#: implicit's ``AlternatingLeastSquares()`` defaults, trained on the same confidences.
IMPLICIT_DEFAULTS = ALSConfig(factors=100, regularization=0.01, alpha=1.0, iterations=15)


def _ratings_split(seed: int) -> tuple[InteractionLog, InteractionLog]:
    """A MovieLens-like log a third of ML-100k's size, split by Microsoft Recommenders' protocol."""
    log = generate_ratings(n_users=500, n_items=900, n_ratings=32_000, seed=seed).log
    return split_log(log, "stratified-item", 0.75, 42)


@pytest.mark.parametrize("seed", [101, 102, 103])
def test_defaults_beat_implicit_defaults_and_popular_on_rating_data(seed: int) -> None:
    """Untuned defaults (ALSConfig(), DEFAULT_WEIGHTING): at least twice implicit's defaults'
    nDCG@10 (which overfit: they rank far below popular) and 15% above the popular list.

    Measured: defaults 0.47-0.48, implicit's 0.12-0.13, popular 0.36-0.38 over these seeds.
    """
    train_log, test_log = _ratings_split(seed)
    ours = evaluate(train_log, test_log, ALSConfig(), 10, DEFAULT_WEIGHTING)
    theirs = evaluate(train_log, test_log, IMPLICIT_DEFAULTS, 10, DEFAULT_WEIGHTING)
    ndcg, popular = ours.metrics["ndcg@10"], ours.popular_metrics["ndcg@10"]
    implicit_ndcg = theirs.metrics["ndcg@10"]
    print(f"nDCG@10 defaults {ndcg:.4f}, implicit {implicit_ndcg:.4f}, popular {popular:.4f}")
    assert ndcg >= 2 * implicit_ndcg
    assert ndcg >= 1.15 * popular
    assert ours.metrics["precision@10"] > ours.popular_metrics["precision@10"]


@pytest.mark.slow
def test_tuned_pipeline_beats_implicit_defaults_and_popular_on_rating_data() -> None:
    """The pipeline ``freshrec train`` runs (tune on the training part, then fit), with a
    trial cap instead of a time budget so the test is deterministic."""
    train_log, test_log = _ratings_split(104)
    tuned = tune(train_log, ALSConfig(), DEFAULT_WEIGHTING, k=10, budget_s=1e6, max_trials=12)
    assert tuned.score >= tuned.trials[0].score  # never worse than the defaults on validation
    ours = evaluate(train_log, test_log, tuned.als, 10, tuned.weighting)
    theirs = evaluate(train_log, test_log, IMPLICIT_DEFAULTS, 10, DEFAULT_WEIGHTING)
    ndcg, popular = ours.metrics["ndcg@10"], ours.popular_metrics["ndcg@10"]
    implicit_ndcg = theirs.metrics["ndcg@10"]
    print(f"nDCG@10 tuned {ndcg:.4f}, implicit {implicit_ndcg:.4f}, popular {popular:.4f}")
    assert ndcg >= 2 * implicit_ndcg
    assert ndcg >= 1.15 * popular


def _binary(log: InteractionLog) -> sp.csr_matrix:
    shape = (len(log.users), len(log.items))
    return sp.csr_matrix((np.ones(len(log), np.float32), (log.user, log.item)), shape=shape)


def _ease_ndcg(train_log: InteractionLog, test_log: InteractionLog, lam: float) -> float:
    """EASE (Steck 2019) in numpy: ``B = I - P / diag(P)`` with ``P = (XᵀX + λI)⁻¹``, the
    diagonal zeroed; a user's scores are their binary row times ``B``.

    ``P`` by the Woodbury identity, ``(I - Xᵀ(XXᵀ + λI)⁻¹X) / λ``: exact, and with
    fewer users than items (here 300 against 3,600) a users-sized solve instead of
    an items-sized inverse, ten times less work."""
    x = _binary(train_log).toarray()  # float32, in place below: items² floats are 52 MB
    kernel = x @ x.T
    kernel[np.diag_indices_from(kernel)] += lam
    b = x.T @ np.linalg.solve(kernel, x)  # = I - λP
    diagonal = 1.0 - np.diag(b)  # λ·diag(P)
    b /= diagonal  # off the diagonal: -P / diag(P), what B is
    b[np.diag_indices_from(b)] = 0.0
    holdout = Holdout.of(train_log, test_log)
    return holdout.score(x, np.ascontiguousarray(b.T), 10)["ndcg@10"]


def _implicit_ndcg(
    train_log: InteractionLog, test_log: InteractionLog, factors: int, reg: float, alpha: float
) -> float:
    """implicit's ALS as its users run it: the ratings as confidences, no dislikes."""
    import implicit.als

    shape = (len(train_log.users), len(train_log.items))
    ratings = sp.csr_matrix(
        (train_log.value.astype(np.float32), (train_log.user, train_log.item)), shape=shape
    )
    model = implicit.als.AlternatingLeastSquares(
        factors=factors, regularization=reg, alpha=alpha, iterations=15, random_state=0
    )
    model.fit(ratings, show_progress=False)
    holdout = Holdout.of(train_log, test_log)
    return holdout.score(model.user_factors, model.item_factors, 10)["ndcg@10"]


@pytest.mark.slow
def test_default_pipeline_is_level_with_tuned_baselines_on_long_histories() -> None:
    """Issue 25: on a million real ratings the default pipeline ranked 9% below EASE and
    7% below implicit ALS tuned on validation. On the long-history profile (MovieLens-1M
    histories) it is within 1% of the better of the two, each tuned on the same
    validation split (carved from the training part; the test part is only scored).

    Measured: 600 users, 20 trials: ours 0.4545, EASE (λ 400) 0.3913, implicit tuned
    (32 factors, λ 10, α 1) 0.4241; 300 users (here): ours 0.4276, EASE (λ 800) 0.3555,
    implicit tuned 0.3751. The synthetic tastes are low-rank, which suits ALS; on
    real ratings EASE was the stronger baseline, so the margin here says little more
    than that the default pipeline is not behind.
    """
    log = long_history_ratings(n_users=300, seed=5).log
    train_log, test_log = split_log(log, "stratified-item", 0.75, 42)
    fit_log, val_log = split_log(train_log, "stratified-item", 0.75, 43)

    tuned = tune(train_log, ALSConfig(num_threads=0), DEFAULT_WEIGHTING, k=10, budget_s=1e6)
    ours = evaluate(train_log, test_log, tuned.als, 10, tuned.weighting).metrics["ndcg@10"]

    lam = max((400.0, 800.0, 1600.0), key=lambda lam: _ease_ndcg(fit_log, val_log, lam))
    ease = _ease_ndcg(train_log, test_log, lam)
    grid = [(f, r, 1.0) for f in (32, 64) for r in (1.0, 10.0, 50.0)]
    best = max(grid, key=lambda g: _implicit_ndcg(fit_log, val_log, *g))
    theirs = _implicit_ndcg(train_log, test_log, *best)
    print(
        f"nDCG@10 default pipeline {ours:.4f}, EASE (λ {lam:g}) {ease:.4f}, "
        f"implicit tuned {best} {theirs:.4f}"
    )
    assert ours >= 0.99 * max(ease, theirs)
