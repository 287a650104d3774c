from __future__ import annotations

import numpy as np
import pytest

from models.ids import IdMap


def test_from_ids_keeps_first_seen_order_and_dedups() -> None:
    m = IdMap.from_ids(["b", "a", "b", "c", "a"])
    assert m.ids == ["b", "a", "c"]
    assert len(m) == 3
    assert "a" in m and "z" not in m
    assert [m.index(x) for x in ["b", "a", "c", "z"]] == [0, 1, 2, -1]


def test_indices_marks_unknown_with_minus_one() -> None:
    m = IdMap.from_ids(["x", "y"])
    out = m.indices(["y", "nope", "x"])
    assert out.dtype == np.int64
    assert out.tolist() == [1, -1, 0]
    assert m.indices([]).tolist() == []


def test_factorize_matches_from_ids() -> None:
    ids = ["u3", "u1", "u3", "u2", "u1", "u10"]
    m, codes = IdMap.factorize(ids)
    assert m == IdMap.from_ids(ids)
    assert [m.ids[c] for c in codes] == ids
    empty, none = IdMap.factorize([])
    assert len(empty) == 0 and none.size == 0


def test_duplicate_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="unique"):
        IdMap(["a", "a"])
