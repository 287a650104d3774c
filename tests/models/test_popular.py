from __future__ import annotations

import numpy as np
import pytest

from models.interactions import InteractionLog
from models.popular import popularity, top_popular

DAY = 86_400_000


def _log() -> InteractionLog:
    # "old" liked by 3 users 10 days ago, "new" by 2 users today; "meh" only disliked/skimmed
    rows = [
        ("u1", "old", "rate", 5.0, 0),
        ("u2", "old", "rate", 4.0, 0),
        ("u3", "old", "rate", 4.0, 0),
        ("u3", "old", "rate", 4.0, 0),  # same user twice counts once
        ("u1", "new", "rate", 5.0, 10 * DAY),
        ("u2", "new", "watch", 1800.0, 10 * DAY),
        ("u1", "meh", "rate", 1.0, 10 * DAY),
        ("u2", "meh", "watch", 1.0, 10 * DAY),
    ]
    users, items, kinds, values = zip(*[(u, i, k, v) for u, i, k, v, _ in rows], strict=True)
    return InteractionLog.from_columns(
        users,
        items,
        kinds,
        values,
        durations=[1800.0 if k == "watch" else None for _, _, k, _, _ in rows],
        ts=[t for *_, t in rows],
    )


def test_counts_distinct_users_with_positive_confidence() -> None:
    log = _log()
    scores = popularity(log)
    by_id = dict(zip(log.items.ids, scores.tolist(), strict=True))
    assert by_id == {"old": 3.0, "new": 2.0, "meh": 0.0}
    order, top = top_popular(scores)
    assert [log.items.ids[i] for i in order] == ["old", "new"]  # zero scores left out
    assert top.tolist() == [3.0, 2.0]


def test_recency_decay_favours_recent_items() -> None:
    log = _log()
    scores = popularity(log, half_life_s=2 * 86_400)  # 10 days old = 5 half-lives
    by_id = dict(zip(log.items.ids, scores.tolist(), strict=True))
    assert by_id["new"] == pytest.approx(2.0)
    assert by_id["old"] == pytest.approx(3.0 / 32)
    later = popularity(log, half_life_s=2 * 86_400, now_ms=12 * DAY)
    assert later[log.items.index("new")] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        popularity(log, half_life_s=0)


def test_ties_break_by_index() -> None:
    order, _ = top_popular(np.array([1.0, 2.0, 2.0, 0.5]), 3)
    assert order.tolist() == [1, 2, 0]
