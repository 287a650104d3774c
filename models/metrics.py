"""Ranking metrics with Microsoft Recommenders' ``python_evaluation`` definitions.

So that figures can stand beside their published MovieLens tables, every
detail follows theirs. Over the users ``U`` present in both the test data and
the recommendations, with ``R_u`` the user's top-``k`` list (best first, seen
training items already removed) and ``T_u`` their test items (every test row
is relevant, whatever its rating):

* ``precision@k`` = mean over U of ``hits_u / k`` (``k``, not ``|R_u|``);
* ``recall@k`` = mean over U of ``hits_u / |T_u|``;
* ``map`` = mean over U of ``(Σ_j j / r_j) / |T_u|``, where ``r_j`` is the rank
  (1-based) of the ``j``-th hit in ``R_u``;
* ``map@k`` = the same sum divided by ``min(|T_u|, k)``;
* ``ndcg@k`` (binary relevance) = mean over U of ``DCG / IDCG`` with
  ``DCG = Σ_hits 1 / ln(1 + r)`` and ``IDCG = Σ_{i=1..min(|T_u|, k)} 1 / ln(1 + i)``;
* ``coverage`` (catalog coverage) = distinct items recommended to anyone /
  distinct items in the training data.

Users with no hit count as 0 in every mean (they are in ``U``).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T", bound=Hashable)

METRIC_NAMES = ("precision@k", "recall@k", "map", "map@k", "ndcg@k", "coverage")


def _users(recommended: Mapping[K, Sequence[T]], relevant: Mapping[K, Collection[T]]) -> list[K]:
    """``U``: users with at least one recommendation and at least one test item."""
    return [u for u, items in recommended.items() if items and relevant.get(u)]


def _hit_ranks(ranked: Sequence[T], truth: Collection[T], k: int) -> list[int]:
    """1-based ranks of the hits among the first ``k`` recommendations."""
    return [r for r, item in enumerate(ranked[:k], start=1) if item in truth]


def _mean(values: Iterable[float], n: int) -> float:
    return math.fsum(values) / n if n else 0.0


def precision_at_k(
    recommended: Mapping[K, Sequence[T]], relevant: Mapping[K, Collection[T]], k: int
) -> float:
    users = _users(recommended, relevant)
    return _mean((len(_hit_ranks(recommended[u], relevant[u], k)) / k for u in users), len(users))


def recall_at_k(
    recommended: Mapping[K, Sequence[T]], relevant: Mapping[K, Collection[T]], k: int
) -> float:
    users = _users(recommended, relevant)
    return _mean(
        (len(_hit_ranks(recommended[u], relevant[u], k)) / len(relevant[u]) for u in users),
        len(users),
    )


def _ap_sum(ranks: list[int]) -> float:
    return math.fsum(j / r for j, r in enumerate(ranks, start=1))


def map_(
    recommended: Mapping[K, Sequence[T]], relevant: Mapping[K, Collection[T]], k: int
) -> float:
    """Mean average precision over the top ``k``, normalised by ``|T_u|``."""
    users = _users(recommended, relevant)
    return _mean(
        (_ap_sum(_hit_ranks(recommended[u], relevant[u], k)) / len(relevant[u]) for u in users),
        len(users),
    )


def map_at_k(
    recommended: Mapping[K, Sequence[T]], relevant: Mapping[K, Collection[T]], k: int
) -> float:
    """Mean average precision over the top ``k``, normalised by ``min(|T_u|, k)``."""
    users = _users(recommended, relevant)
    return _mean(
        (
            _ap_sum(_hit_ranks(recommended[u], relevant[u], k)) / min(len(relevant[u]), k)
            for u in users
        ),
        len(users),
    )


def ndcg_at_k(
    recommended: Mapping[K, Sequence[T]], relevant: Mapping[K, Collection[T]], k: int
) -> float:
    """Binary-relevance nDCG@k with the natural-log discount ``1 / ln(1 + rank)``."""
    users = _users(recommended, relevant)

    def one(u: K) -> float:
        dcg = math.fsum(1 / math.log(1 + r) for r in _hit_ranks(recommended[u], relevant[u], k))
        ideal = math.fsum(1 / math.log(1 + i) for i in range(1, min(len(relevant[u]), k) + 1))
        return dcg / ideal

    return _mean((one(u) for u in users), len(users))


def catalog_coverage(
    recommended: Mapping[K, Sequence[T]], train_items: Collection[T], k: int
) -> float:
    """Distinct items among everyone's top ``k`` over distinct training items."""
    if not train_items:
        return 0.0
    shown = {item for items in recommended.values() for item in items[:k]}
    return len(shown) / len(train_items)


def ranking_metrics(
    recommended: Mapping[K, Sequence[T]],
    relevant: Mapping[K, Collection[T]],
    train_items: Collection[T],
    k: int,
) -> dict[str, float]:
    """All metrics, keyed ``precision@<k>``, ``recall@<k>``, ``map``, ``map@<k>``,
    ``ndcg@<k>``, ``coverage`` (the keys of ``freshrec evaluate --json``)."""
    if k < 1:
        raise ValueError("k must be at least 1")
    return {
        f"precision@{k}": precision_at_k(recommended, relevant, k),
        f"recall@{k}": recall_at_k(recommended, relevant, k),
        "map": map_(recommended, relevant, k),
        f"map@{k}": map_at_k(recommended, relevant, k),
        f"ndcg@{k}": ndcg_at_k(recommended, relevant, k),
        "coverage": catalog_coverage(recommended, train_items, k),
    }
