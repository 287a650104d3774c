"""Popularity and the dead-letter record: pure pieces with known answers.

The user-state record is tested with its contract, in tests/schemas/test_state.py.
"""

from __future__ import annotations

import pytest

from schemas.recs import RecItem, RecList, decode, encode
from schemas.state import Interaction
from schemas.validator import Rejection
from streams.dead_letter import DeadLetter, count_by_reason, unique
from streams.lists import encode_list
from streams.popularity import Popularity


def watched(item: str, ts: int) -> Interaction:
    return Interaction(item, "watch", 600.0, 1200.0, ts)


def test_popularity_counts_users_per_item_and_breaks_ties_by_id() -> None:
    pop = Popularity()
    pop.rebuild([[watched("b", 1), watched("b", 2)], [watched("b", 3), watched("a", 4)]])
    pop.add(["c"])
    assert pop.top(3) == [("b", 2.0), ("a", 1.0), ("c", 1.0)]


def test_dead_letter_round_trips_through_headers() -> None:
    letter = DeadLetter.of(
        "watch", 3, 17, b"u1", b"\xff\x00", Rejection("payload", "utf8", "is not valid UTF-8")
    )
    again = DeadLetter.from_record(letter.key, letter.value, letter.headers())
    assert again == letter
    assert again.reason == "payload: is not valid UTF-8"


def test_dead_letter_of_a_missing_value_keeps_empty_bytes() -> None:
    letter = DeadLetter.of("watch", 0, 1, None, None, Rejection("payload", "empty", "no value"))
    assert letter.value == b""
    assert DeadLetter.from_record(None, None, letter.headers()).value == b""


def test_from_record_refuses_a_record_without_our_headers() -> None:
    with pytest.raises(ValueError, match="not a freshrec dead letter"):
        DeadLetter.from_record(b"k", b"v", [("other", b"x")])


def test_unique_keeps_one_letter_per_source_offset_and_counts_reasons() -> None:
    a = DeadLetter.of("t", 0, 1, None, b"x", Rejection("payload", "json", "bad"))
    b = DeadLetter.of("t", 0, 2, None, b"y", Rejection("ts", "minimum", "too small"))
    letters = unique([a, b, a])
    assert letters == [a, b]
    assert count_by_reason([a, b, a]) == {"payload/json": 2, "ts/minimum": 1}


@pytest.mark.parametrize("version", [None, "20260101T000000000000Z-abcd"])
def test_the_fast_list_encoder_writes_exactly_the_contract_bytes(version: str | None) -> None:
    items = (RecItem("a", 0.5, "x"), RecItem("b", -1.25), RecItem("c", 3.0, "y"))
    expected = RecList("u1", "personal", version, 123, 456, items)
    fast = encode_list(
        "u1",
        "personal",
        version,
        123,
        456,
        [i.item for i in items],
        [i.score for i in items],
        [i.because for i in items],
    )
    assert fast == encode(expected)
    assert decode(fast) == expected
