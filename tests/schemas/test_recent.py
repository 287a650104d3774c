"""The ``recent`` field's codec (issue 26, item 8): newest first, each item once."""

from __future__ import annotations

import pytest

from schemas.recent import (
    RECENT_LENGTH,
    RecentItem,
    decode,
    encode,
    encode_history,
    newest_items,
)
from schemas.state import Interaction


def row(item: str, ts: int, kind: str = "watch") -> Interaction:
    value = 4.0 if kind == "rate" else 60.0
    return Interaction(item, kind, value, None if kind == "rate" else 120.0, ts)


def test_newest_items_are_newest_first_each_once_at_their_newest_interaction() -> None:
    history = [row("a", 1), row("b", 2), row("a", 3, "rate"), row("c", 4)]  # oldest first
    assert newest_items(history) == [
        RecentItem("c", 4, "watch"),
        RecentItem("a", 3, "rate"),
        RecentItem("b", 2, "watch"),
    ]


def test_newest_items_stop_at_the_length() -> None:
    history = [row(f"i{n}", n) for n in range(40)]
    kept = newest_items(history)
    assert len(kept) == RECENT_LENGTH
    assert [k.item for k in kept] == [f"i{n}" for n in range(39, 29, -1)]
    assert [k.item for k in newest_items(history, 2)] == ["i39", "i38"]


def test_a_stored_history_reads_back_as_the_api_serves_it() -> None:
    data = encode_history([row("a", 1_700_000_000_001), row("b", 1_700_000_000_002, "rate")])
    assert decode(data) == [
        {"item": "b", "ts": 1_700_000_000_002, "kind": "rate"},
        {"item": "a", "ts": 1_700_000_000_001, "kind": "watch"},
    ]
    assert decode(data, 1) == [{"item": "b", "ts": 1_700_000_000_002, "kind": "rate"}]
    assert decode(encode([])) == []


def test_a_missing_field_is_an_empty_history() -> None:
    """Lists written by workers that predate the field have none."""
    assert decode(None) == []


@pytest.mark.parametrize(
    "garbage",
    [
        b"not json",
        b'{"item": "a"}',
        b'[{"item": "a", "ts": "1", "kind": "watch"}]',
        b'[{"item": "a", "ts": 1, "kind": "click"}]',
        b'[{"item": 7, "ts": 1, "kind": "watch"}]',
        b"[1]",
    ],
)
def test_garbage_is_refused(garbage: bytes) -> None:
    with pytest.raises(ValueError, match="not a freshrec recent history"):
        decode(garbage)
