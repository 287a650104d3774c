"""A batch of events in one body: each judged alone by the validator, the body refused only
when it is not a batch at all."""

from __future__ import annotations

import orjson
import pytest

from freshrec.errors import BadInputError
from schemas.batch import parse_array, parse_lines
from schemas.events import WatchEvent
from schemas.validator import Rejection

EVENT = {
    "type": "watch",
    "event_id": "e1",
    "user_id": "u:1",
    "item_id": "m1",
    "watched_s": 60,
    "ts": 1_763_870_000_000,
}


def test_array_and_lines_give_the_same_outcomes() -> None:
    bad = EVENT | {"event_id": "e2", "watched_s": -1}
    events = [EVENT, bad]
    from_array = parse_array(orjson.dumps(events))
    from_lines = parse_lines(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    assert from_array == from_lines
    assert isinstance(from_array[0], WatchEvent)
    assert isinstance(from_array[1], Rejection) and from_array[1].field == "watched_s"


def test_one_object_is_a_batch_of_one() -> None:
    assert len(parse_array(orjson.dumps(EVENT))) == 1


def test_a_duplicate_key_inside_one_event_rejects_that_event_alone() -> None:
    one = orjson.dumps(EVENT)
    twice = one[:-1] + b',"item_id":"m2"}'
    outcomes = parse_array(b"[" + one + b"," + twice + b"]")
    assert isinstance(outcomes[0], WatchEvent)
    assert isinstance(outcomes[1], Rejection)
    assert (outcomes[1].field, outcomes[1].rule) == ("item_id", "duplicateKey")


@pytest.mark.parametrize("body", [b"{", b"42", b'"x"', b"[NaN]"])
def test_a_body_that_is_not_a_batch_is_refused_whole(body: bytes) -> None:
    with pytest.raises(BadInputError):
        parse_array(body)


def test_a_number_past_64_bits_nested_under_a_repeated_key_is_refused_not_a_500() -> None:
    """Regression (the lead's copy of the fuzz's find): the repeated key is nested, so the
    element itself is not flagged and goes back through orjson, which cannot write the
    number; it must be a rejection with a reason, never an exception."""
    good = orjson.dumps(EVENT)
    body = b"[" + good + b',{"n": 123456789012345678901234567890, "x": {"y": 1, "y": 2}}]'
    first, second = parse_array(body)
    assert isinstance(first, WatchEvent)
    assert isinstance(second, Rejection)
