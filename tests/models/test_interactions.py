from __future__ import annotations

import numpy as np
import pytest

from models.interactions import KIND_RATE, KIND_WATCH, Interaction, InteractionLog


def test_from_columns_encodes_and_history_orders_by_time() -> None:
    log = InteractionLog.from_columns(
        ["u1", "u2", "u1"],
        ["a", "b", "b"],
        ["watch", "rate", "rate"],
        [600.0, 4.0, 2.0],
        [1200.0, None, None],
        [30, 10, 20],
    )
    assert log.users.ids == ["u1", "u2"] and log.items.ids == ["a", "b"]
    assert log.kind.tolist() == [KIND_WATCH, KIND_RATE, KIND_RATE]
    assert log.history("u1") == [
        Interaction("b", "rate", 2.0, None, 20),
        Interaction("a", "watch", 600.0, 1200.0, 30),
    ]
    assert log.history("nobody") == []
    part = log.take(np.array([True, False, True]))
    assert len(part) == 2 and part.users is log.users


def test_defaults_and_errors() -> None:
    log = InteractionLog.from_columns(["u"], ["i"], ["rate"], [3.0])
    assert log.ts.tolist() == [0] and np.isnan(log.duration_s).all()
    with pytest.raises(ValueError, match="unknown interaction kind"):
        InteractionLog.from_columns(["u"], ["i"], ["click"], [1.0])
    with pytest.raises(ValueError, match="different length"):
        InteractionLog(
            log.users,
            log.items,
            log.user,
            log.item,
            log.kind,
            log.value,
            log.duration_s,
            np.zeros(3),
        )
