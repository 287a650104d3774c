"""The hold-out tuning scores against: its user sample (issue 25)."""

from __future__ import annotations

import numpy as np

from models.als import ALSConfig, train
from models.evaluate import Holdout, split_log
from models.synthetic import generate
from models.weighting import confidence_matrix


def test_a_sample_of_every_judged_user_scores_as_the_whole_and_a_smaller_one_is_seeded() -> None:
    """Users without test rows count in no metric but coverage: leaving them out keeps
    nDCG exact; a smaller sample is the same for the same seed."""
    fit, val = split_log(generate(600, 200, 2400, factors=4, seed=4).log, "stratified-item", 0.8, 1)
    whole = Holdout.of(fit, val)
    model = train(confidence_matrix(fit), ALSConfig(factors=8, iterations=4))
    every = whole.sample(len(whole.relevant), seed=0)
    assert len(every.users) == len(every.relevant) < len(whole.users)
    assert (
        every.score(model.user_factors, model.item_factors, 10)["ndcg@10"]
        == (whole.score(model.user_factors, model.item_factors, 10)["ndcg@10"])
    )
    some = whole.sample(50, seed=3)
    assert len(some.users) == 50 == len(some.relevant)
    np.testing.assert_array_equal(some.users, whole.sample(50, seed=3).users)
    assert not np.array_equal(some.users, whole.sample(50, seed=4).users)
    assert set(some.users.tolist()) <= set(whole.relevant)


def test_ndcg_alone_is_the_scores_ndcg() -> None:
    fit, val = split_log(generate(300, 100, 2400, factors=4, seed=5).log, "stratified-item", 0.8, 1)
    holdout = Holdout.of(fit, val)
    model = train(confidence_matrix(fit), ALSConfig(factors=8, iterations=4))
    for k in (5, 10):
        assert (
            holdout.ndcg(model.user_factors, model.item_factors, k)
            == (holdout.score(model.user_factors, model.item_factors, k)[f"ndcg@{k}"])
        )
