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
    update_confidences,
    user_confidences,
)
from schemas.events import RateEvent, WatchEvent
from schemas.state import UserState

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


#: One step of a user's life: ("watch"|"rate", item, value, ts) or ("forget", ts).
_STEP = st.one_of(
    st.tuples(
        st.sampled_from(["watch", "rate"]),
        st.sampled_from("abcdefgh"),
        st.sampled_from([0.5, 1.0, 3.0, 5.0]),
        st.integers(0, 60),
    ),
    st.tuples(st.just("forget"), st.integers(0, 60)),
)


@settings(max_examples=300, deadline=None)
@given(
    batches=st.lists(st.lists(_STEP, min_size=1, max_size=6), min_size=1, max_size=12),
    history_length=st.integers(1, 8),
    in_order=st.booleans(),
)
def test_update_confidences_equals_a_recompute_in_values_and_order(
    batches: list[list[tuple]], history_length: int, in_order: bool
) -> None:
    """Issue 16: the worker keeps each user's confidences and updates them per batch;
    whatever the batches do (cap drops, forgets, late events), the result must be
    exactly user_confidences of the new history, key order included (the fold-in's
    arithmetic follows it)."""
    state, clock, n = UserState(), 0, 0
    previous: dict[str, float] = {}
    for batch in batches:
        old = state.copy()
        for step in batch:
            n += 1
            clock = clock + 1 if in_order else step[-1]
            if step[0] == "forget":
                state.forget(clock)
                continue
            kind, item, value, _ = step
            event = (
                WatchEvent(f"e{n}", "u", item, value * 600, clock, 1800.0)
                if kind == "watch"
                else RateEvent(f"e{n}", "u", item, value, clock)
            )
            state.apply(event, history_length, 100)
        expected = user_confidences(state.history)
        got = update_confidences(previous, old.history, state.history)
        assert list(got.items()) == list(expected.items())
        assert previous == user_confidences(old.history)  # not changed in place
        previous = got


def test_update_confidences_recomputes_a_history_changed_in_the_middle() -> None:
    a = Interaction("a", "watch", 1800, 1800, 1)
    b = Interaction("b", "watch", 900, 1800, 2)
    c = Interaction("c", "rate", 4.0, None, 3)
    old = [a, c]
    new = [a, b, c]  # b arrived late: inserted, not appended
    got = update_confidences(user_confidences(old), old, new)
    assert list(got.items()) == list(user_confidences(new).items())
