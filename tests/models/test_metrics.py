"""Each metric on a hand-computed case (see the arithmetic in the comments)."""

from __future__ import annotations

import math

import pytest

from models.metrics import (
    catalog_coverage,
    map_,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
)

K = 3
RECOMMENDED = {
    1: ["a", "b", "c", "d"],  # top-3 a b c: one hit (b) at rank 2; d is past k
    2: ["x", "y", "z"],  # no hit
    3: ["p"],  # hit at rank 1, shorter than k
    4: [],  # no recommendations: not in U
    6: ["m", "n", "o"],  # hits at ranks 1 and 3, |T| = 5 > k
}
RELEVANT = {
    1: {"b", "d", "e"},
    2: {"q"},
    3: {"p"},
    4: {"a"},
    5: {"a"},  # not recommended to: not in U
    6: {"m", "o", "s", "t", "u"},
}
# U = {1, 2, 3, 6}


def test_precision() -> None:
    # (1/3 + 0 + 1/3 + 2/3) / 4
    assert precision_at_k(RECOMMENDED, RELEVANT, K) == pytest.approx(1 / 3)


def test_recall() -> None:
    # (1/3 + 0 + 1/1 + 2/5) / 4
    assert recall_at_k(RECOMMENDED, RELEVANT, K) == pytest.approx(13 / 30)


def test_map_divides_by_all_test_items() -> None:
    # user 1: (1/2)/3; user 3: (1/1)/1; user 6: (1/1 + 2/3)/5
    assert map_(RECOMMENDED, RELEVANT, K) == pytest.approx((1 / 6 + 0 + 1 + 1 / 3) / 4)


def test_map_at_k_divides_by_min_of_test_items_and_k() -> None:
    # user 6: (1 + 2/3) / min(5, 3)
    assert map_at_k(RECOMMENDED, RELEVANT, K) == pytest.approx((1 / 6 + 0 + 1 + 5 / 9) / 4)


def test_ndcg_binary_natural_log() -> None:
    ln = math.log
    ideal3 = 1 / ln(2) + 1 / ln(3) + 1 / ln(4)
    user1 = (1 / ln(3)) / ideal3
    user3 = 1.0
    user6 = (1 / ln(2) + 1 / ln(4)) / ideal3
    assert ndcg_at_k(RECOMMENDED, RELEVANT, K) == pytest.approx((user1 + 0 + user3 + user6) / 4)


def test_perfect_ranking_scores_one() -> None:
    rec = {1: ["a", "b"], 2: ["c", "d"]}
    rel = {1: {"a", "b"}, 2: {"c", "d"}}
    assert precision_at_k(rec, rel, 2) == 1.0
    assert recall_at_k(rec, rel, 2) == 1.0
    assert map_(rec, rel, 2) == 1.0
    assert ndcg_at_k(rec, rel, 2) == pytest.approx(1.0)


def test_coverage_counts_distinct_top_k_items_over_training_items() -> None:
    train_items = {chr(ord("a") + i) for i in range(20)}  # 20 distinct items
    # shown in the top 3: a b c x y z p m n o = 10
    assert catalog_coverage(RECOMMENDED, train_items, K) == pytest.approx(0.5)
    assert catalog_coverage({}, set(), K) == 0.0


def test_ranking_metrics_keys_and_empty_input() -> None:
    out = ranking_metrics(RECOMMENDED, RELEVANT, {"a"}, 10)
    assert list(out) == ["precision@10", "recall@10", "map", "map@10", "ndcg@10", "coverage"]
    assert ranking_metrics({}, {}, set(), 5)["ndcg@5"] == 0.0
    with pytest.raises(ValueError):
        ranking_metrics({}, {}, set(), 0)
