from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.interactions import Interaction, InteractionLog
from models.weighting import (
    WeightingConfig,
    confidence_matrix,
    event_confidence,
    user_confidences,
)

CFG = WeightingConfig()


def test_watch_confidence_grows_with_fraction_and_skims_count_zero() -> None:
    assert event_confidence("watch", 900, 1800) == pytest.approx(CFG.watch_weight * 0.5)
    assert event_confidence("watch", 5000, 1800) == pytest.approx(CFG.watch_weight)  # capped at 1
    assert event_confidence("watch", 100, 1800) == 0.0  # 5.6% < watch_min_fraction
    # unknown duration: unknown_duration_s stands in
    assert event_confidence("watch", 900, None) == pytest.approx(CFG.watch_weight * 0.5)


def test_rating_confidence_and_dislikes() -> None:
    assert event_confidence("rate", 4.0, None) == pytest.approx(4.0)
    assert event_confidence("rate", 2.5, None) == pytest.approx(2.5)  # threshold is not a dislike
    assert event_confidence("rate", 2.0, None) == -CFG.negative_weight
    assert event_confidence("rate", 0.5, None) == -CFG.negative_weight
    off = WeightingConfig(negative_below=0.0)
    assert event_confidence("rate", 0.5, None, off) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="kind"):
        event_confidence("click", 1.0, None)


def test_combination_rule() -> None:
    hist = [
        Interaction("a", "watch", 900, 1800, 1),  # 2.0
        Interaction("a", "watch", 1800, 1800, 2),  # +4.0 -> 6.0
        Interaction("b", "watch", 1800, 1800, 3),  # 4.0
        Interaction("b", "rate", 1.0, None, 4),  # dislike wins: -2
        Interaction("c", "rate", 1.0, None, 5),
        Interaction("c", "rate", 5.0, None, 6),  # latest rating replaces: 5
        Interaction("c", "watch", 1800, 1800, 7),  # +4 = 9
        Interaction("d", "watch", 10, 1800, 8),  # skim: 0 -> dropped
        Interaction("e", "watch", 1800, 1800, 9),
        Interaction("e", "watch", 1800, 1800, 10),
        Interaction("e", "rate", 5.0, None, 11),  # 4+4+5 = 13 -> capped at 10
        Interaction("f", "rate", 4.0, None, 20),
        Interaction("f", "rate", 1.0, None, 12),  # older ts: the ts-20 rating stays
    ]
    got = user_confidences(hist)
    assert got == {
        "a": pytest.approx(6.0),
        "b": -2.0,
        "c": pytest.approx(9.0),
        "e": 10.0,
        "f": pytest.approx(4.0),
    }


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        WeightingConfig(watch_weight=0)
    with pytest.raises(ValueError):
        WeightingConfig(watch_min_fraction=2)


_event = st.tuples(
    st.sampled_from(["u1", "u2", "u3"]),
    st.sampled_from(["i1", "i2", "i3", "i4"]),
    st.sampled_from(["watch", "rate"]),
    st.integers(0, 10),  # rating half-stars 0.5..5 or watch seconds
    st.sampled_from([None, 600.0, 3600.0]),
    st.integers(0, 5),  # few distinct ts: ties exercise the tie rule
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_event, max_size=40))
def test_columnar_rule_agrees_with_per_user_rule(events: list[tuple]) -> None:
    rows = []
    for user, item, kind, v, dur, ts in events:
        value = max(0.5, v / 2) if kind == "rate" else float(v * 300)
        rows.append((user, item, kind, value, dur if kind == "watch" else None, ts))
    log = InteractionLog.from_columns(
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [r[4] for r in rows],
        [r[5] for r in rows],
    )
    matrix = confidence_matrix(log).toarray()
    for u, user in enumerate(log.users.ids):
        hist = [Interaction(r[1], r[2], r[3], r[4], r[5]) for r in rows if r[0] == user]
        expected = user_confidences(hist)
        got = {log.items.ids[i]: float(matrix[u, i]) for i in np.flatnonzero(matrix[u])}
        assert got.keys() == expected.keys()
        for item, value in expected.items():
            assert got[item] == pytest.approx(value, rel=1e-6)
