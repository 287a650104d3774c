"""The dead-letter record: round trips through headers, one letter per source, reasons."""

from __future__ import annotations

import pytest

from schemas.validator import Rejection
from streams.dead_letter import DeadLetter, count_by_reason, unique


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
