"""The worker's entry point, on a model trained on planted synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from models.interactions import Interaction
from models.recommender import Recommender
from models.synthetic import SyntheticData
from models.version import ModelVersion, recommender_from_version
from models.weighting import user_confidences


@pytest.fixture(scope="module")
def rec(version: ModelVersion) -> Recommender:
    return recommender_from_version(version)


def test_watching_an_item_brings_its_neighbours(rec: Recommender, synth: SyntheticData) -> None:
    history = user_confidences([Interaction("item-3", "watch", 1700.0, 1800.0, 1)])
    out = rec.recommend([history], 10)
    assert out.personal == [True]
    neighbours = set(synth.neighbours("item-3"))
    assert sum(i in neighbours for i in out.items[0]) >= 8
    assert "item-3" not in out.items[0]
    assert out.because[0] == ["item-3"] * 10
    assert out.scores[0] == sorted(out.scores[0], reverse=True)


def test_batch_matches_one_by_one(rec: Recommender, synth: SyntheticData) -> None:
    histories = [user_confidences(synth.log.history(f"user-{u}")) for u in range(40)]
    batch = rec.recommend(histories, 15)
    for u, h in enumerate(histories):
        single = rec.recommend([h], 15)
        assert single.items[0] == batch.items[u]
        assert single.because[0] == batch.because[u]
        np.testing.assert_allclose(single.scores[0], batch.scores[u], rtol=1e-5)
        seen = set(h)
        assert not seen & set(batch.items[u])


def test_fallbacks_and_unknown_items(rec: Recommender, version: ModelVersion) -> None:
    histories = [
        {},  # no history
        {"never-seen-1": 4.0, "never-seen-2": 1.0},  # only unknown items
        {version.popular_items[0]: -2.0},  # only a dislike: no positive signal
        {"never-seen-3": 3.0, "item-3": 4.0},  # one unknown, one usable
    ]
    out = rec.recommend(histories, 5)
    assert out.personal == [False, False, False, True]
    assert out.unknown_items == 3
    assert out.items[0] == version.popular_items[:5]
    assert out.scores[0] == version.popular_scores[:5]
    assert out.because[0] == [None] * 5
    assert out.items[2] == version.popular_items[1:6]  # the disliked item is excluded
    for scores in out.scores:
        assert all(np.isfinite(scores))


def test_exclude_seen_off_and_explain_off(rec: Recommender) -> None:
    history = {"item-3": 4.0}
    kept = rec.recommend([history], 400, exclude_seen=False, explain=False)
    assert "item-3" in kept.items[0]
    assert len(kept.items[0]) == 400
    assert kept.because[0] == [None] * 400
    dropped = rec.recommend([history], 400)
    assert len(dropped.items[0]) == 399  # n is larger than the catalogue left


def test_popular(rec: Recommender, version: ModelVersion) -> None:
    items, scores = rec.popular(3)
    assert items == version.popular_items[:3]
    assert scores == version.popular_scores[:3]
    assert rec.version_id == version.version_id


def test_empty_batch(rec: Recommender) -> None:
    out = rec.recommend([], 10)
    assert out.items == [] and out.personal == [] and out.unknown_items == 0


def test_an_excluded_item_never_makes_the_list(rec: Recommender, version: ModelVersion) -> None:
    history = {"item-3": 4.0}
    top = rec.recommend([history], 10).items[0]
    out = rec.recommend([history, history, {}], 10, exclude=[[top[0], "unknown"], [], top[:2]])
    assert out.items[0] == top[1:] + out.items[0][-1:]  # the rest move up one place
    assert top[0] not in out.items[0]
    assert out.items[1] == top  # another user's exclusions are theirs alone
    # the popular fallback leaves them out too
    assert out.items[2] == [i for i in version.popular_items if i not in top[:2]][:10]


def test_exclusions_apply_with_exclude_seen_off(rec: Recommender) -> None:
    history = {"item-3": 4.0}
    top = rec.recommend([history], 5, exclude_seen=False).items[0]
    out = rec.recommend([history], 5, exclude_seen=False, exclude=[[top[0]]])
    assert top[0] not in out.items[0] and out.items[0][:4] == top[1:]


def test_exclude_needs_one_entry_per_user(rec: Recommender) -> None:
    with pytest.raises(ValueError, match="1 entries for 2 users"):
        rec.rank([{}, {}], 5, exclude=[[]])
