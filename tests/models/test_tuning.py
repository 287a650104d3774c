"""The hyperparameter search: its order, its budget, and that it never sees the test part."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from models.als import ALSConfig
from models.evaluate import evaluate, split_log
from models.interactions import InteractionLog
from models.split import stratified_split
from models.synthetic import generate_ratings
from models.tuning import SearchSpace, TuneResult, tune
from models.weighting import WeightingConfig

BASE = ALSConfig(factors=8, iterations=5, num_threads=1)
#: Small and cheap: every candidate fits in well under a second.
SPACE = SearchSpace(factors=(8, 16), iterations=(3, 6))


@pytest.fixture(scope="module")
def ratings() -> InteractionLog:
    return generate_ratings(200, 300, 8000, seed=21).log


def _choice(result: TuneResult) -> dict[str, object]:
    """Everything of a result but wall times."""
    out = result.as_dict()
    del out["seconds"]
    for trial in out["trials"]:
        del trial["seconds"]
    return out


def test_trials_start_with_the_base_and_stay_in_the_space(ratings: InteractionLog) -> None:
    train_log, _ = split_log(ratings, "stratified-item", 0.75, 42)
    base_w = WeightingConfig(negative_below=2.5, watch_weight=3.0)
    space = SearchSpace(factors=(8, 24), iterations=(2, 4), negative_below=(0.0, 2.5, 3.5))
    result = tune(train_log, BASE, base_w, max_trials=12, space=space, seed=1)
    first = [(t.als, t.weighting) for t in result.trials]
    assert first[0] == (BASE, base_w) and len(first) == 12 == len(set(first))
    rest = first[1:]
    assert all(8 <= c.factors <= 24 and c.factors % 8 == 0 for c, _ in rest)
    assert all(0.01 <= c.regularization <= 100 and 0.1 <= c.alpha <= 50 for c, _ in rest)
    assert all(2 <= c.iterations <= 4 for c, _ in rest)
    assert {w.negative_below for _, w in rest} <= set(space.negative_below)
    # the fields not searched are the base's
    assert all(c.seed == BASE.seed and c.num_threads == 1 for c, _ in rest)
    assert all(w.watch_weight == 3.0 for _, w in rest)
    other = tune(train_log, BASE, base_w, max_trials=12, space=space, seed=2)
    assert [(t.als, t.weighting) for t in other.trials] != first


def test_tune_picks_the_best_trial_deterministically(ratings: InteractionLog) -> None:
    train_log, _ = split_log(ratings, "stratified-item", 0.75, 42)
    a = tune(train_log, BASE, k=10, budget_s=1e6, max_trials=5, space=SPACE, seed=3)
    b = tune(train_log, BASE, k=10, budget_s=1e6, max_trials=5, space=SPACE, seed=3)
    assert _choice(a) == _choice(b)
    assert len(a.trials) == 5 and a.trials[0].als == BASE
    assert a.score == max(t.score for t in a.trials)
    assert (a.als, a.weighting) == next(
        (t.als, t.weighting) for t in a.trials if t.score == a.score
    )
    stored = json.loads(json.dumps(a.as_dict()))
    assert ALSConfig.from_dict(stored["als"]) == a.als
    assert WeightingConfig.from_dict(stored["weighting"]) == a.weighting
    assert stored["metric"] == "ndcg@10" and len(stored["trials"]) == 5


def test_the_safety_limit_stops_the_search_and_keeps_the_base(
    ratings: InteractionLog,
) -> None:
    """Issue 25: a search stopped by time chose a load-dependent model; now the limit is a
    safety net only, reported, and the untuned base configuration is what comes out."""
    train_log, _ = split_log(ratings, "stratified-item", 0.75, 42)
    none = tune(train_log, BASE, budget_s=0.0, space=SPACE)
    assert [t.als for t in none.trials] == [BASE]  # no time at all: the base trial only
    assert none.timed_out and none.als == BASE and none.score == none.base_score
    started = time.perf_counter()
    some = tune(train_log, BASE, budget_s=0.5, max_trials=10_000, space=SPACE)
    took = time.perf_counter() - started
    assert some.timed_out and len(some.trials) < 10_000
    assert (some.als, some.weighting) == (BASE, some.trials[0].weighting)
    assert some.score == some.base_score == some.trials[0].score
    assert took <= 0.5 + max(t.seconds for t in some.trials) + 1.0  # limit + one fit + setup
    done = tune(train_log, BASE, budget_s=1e6, max_trials=3, space=SPACE)
    assert not done.timed_out and len(done.trials) == 3
    assert done.as_dict()["base_score"] == done.trials[0].score


def test_tuning_never_reads_the_test_part(ratings: InteractionLog) -> None:
    """An adversarial test part (its rows handed to other users) changes nothing in tuning.

    The stratified split depends on the item column alone, so reassigning the
    users of the test rows keeps the split and the training part identical,
    while it scrambles what is relevant in the test part.
    """
    _, test_rows = stratified_split(ratings.item, 0.75, 42)
    rng = np.random.default_rng(0)
    user = ratings.user.copy()
    user[test_rows] = rng.permutation(user[test_rows])
    adversarial = InteractionLog(
        ratings.users,
        ratings.items,
        user,
        ratings.item,
        ratings.kind,
        ratings.value,
        ratings.duration_s,
        ratings.ts,
    )
    train_a, test_a = split_log(ratings, "stratified-item", 0.75, 42)
    train_b, test_b = split_log(adversarial, "stratified-item", 0.75, 42)
    np.testing.assert_array_equal(train_a.user, train_b.user)
    assert not np.array_equal(test_a.user, test_b.user)

    tuned_a = tune(train_a, BASE, budget_s=1e6, max_trials=4, space=SPACE)
    tuned_b = tune(train_b, BASE, budget_s=1e6, max_trials=4, space=SPACE)
    assert _choice(tuned_a) == _choice(tuned_b)
    # ...while the test metrics do see the difference
    ev_a = evaluate(train_a, test_a, tuned_a.als, 10, tuned_a.weighting)
    ev_b = evaluate(train_b, test_b, tuned_b.als, 10, tuned_b.weighting)
    assert ev_a.metrics["ndcg@10"] > 1.5 * ev_b.metrics["ndcg@10"]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="budget_s"):
        tune(generate_ratings(30, 60, 700, seed=1).log, BASE, budget_s=-1)
    with pytest.raises(ValueError, match="regularization"):
        SearchSpace(regularization=(0.0, 1.0))


def test_trials_on_a_user_sample_keep_the_winner_only_if_it_beats_the_base_on_everyone(
    ratings: InteractionLog,
) -> None:
    """Issue 25: trials fitted on a sample of the users (cheaper), the sample's winner and
    the base then fitted on every user; the result is never below the base there."""
    train_log, _ = split_log(ratings, "stratified-item", 0.75, 42)
    a = tune(train_log, BASE, max_trials=6, space=SPACE, seed=4, sample=0.5)
    b = tune(train_log, BASE, max_trials=6, space=SPACE, seed=4, sample=0.5)
    whole = tune(train_log, BASE, max_trials=1, space=SPACE, seed=4)
    assert _choice(a) == _choice(b) and a.sample == 0.5 and a.as_dict()["sample"] == 0.5
    assert len(a.trials) == 6 and a.trials[0].als == BASE
    # base_score is the base fitted on every user, as the whole search scores it
    assert a.base_score == whole.base_score
    assert a.score >= a.base_score
    assert (a.als, a.weighting) == (BASE, a.trials[0].weighting) or a.score > a.base_score
    if (a.als, a.weighting) != (BASE, a.trials[0].weighting):
        best = max(a.trials, key=lambda t: t.score)
        assert (a.als, a.weighting) == (best.als, best.weighting)


def test_the_pruner_stops_trials_below_the_median_and_never_chooses_one(
    ratings: InteractionLog,
) -> None:
    """Issue 25: trials scored at PRUNE_AT iterations and stopped there when below the
    median of the earlier trials at that point; the same on every run."""
    train_log, _ = split_log(ratings, "stratified-item", 0.75, 42)
    base = ALSConfig(factors=8, iterations=12, num_threads=1)
    space = SearchSpace(factors=(8, 16), iterations=(8, 12))
    a = tune(train_log, base, max_trials=14, space=space, seed=5, prune=True)
    b = tune(train_log, base, max_trials=14, space=space, seed=5, prune=True)
    assert _choice(a) == _choice(b) and a.prune
    pruned = [t for t in a.trials if t.pruned]
    assert pruned, "no trial was pruned"
    assert not a.trials[0].pruned
    assert all(t.as_dict()["pruned"] for t in pruned)
    chosen = next(t for t in a.trials if (t.als, t.weighting) == (a.als, a.weighting))
    assert not chosen.pruned and a.score == max(t.score for t in a.trials if not t.pruned)


def test_scoring_trials_on_a_sample_of_validation_users_is_seeded(
    ratings: InteractionLog,
) -> None:
    """Issue 25: ranking every validation user was half a trial on a large watch log; with
    ``score_users`` a seeded sample scores every trial, the same on every run."""
    train_log, _ = split_log(ratings, "stratified-item", 0.75, 42)
    a = tune(train_log, BASE, max_trials=4, space=SPACE, seed=6, score_users=60)
    b = tune(train_log, BASE, max_trials=4, space=SPACE, seed=6, score_users=60)
    every = tune(train_log, BASE, max_trials=4, space=SPACE, seed=6, score_users=None)
    assert _choice(a) == _choice(b)
    assert a.base_score != every.base_score  # 60 users score differently from all 200
