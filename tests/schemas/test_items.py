"""The item record's contract: its schema, validator and Redis takedown value."""

from __future__ import annotations

import orjson
import pytest

from schemas.items import (
    NO_TAKEDOWN,
    ItemRecord,
    Takedown,
    decode_record,
    decode_takedown,
    encode_record,
    encode_takedown,
)
from schemas.validator import MAX_EVENT_BYTES, Rejection, validate, validate_item

ITEM = {
    "type": "item",
    "item_id": "movie-1",
    "ts": 1_763_870_000_000,
    "title": "Heat",
    "tags": ["Crime", "Sci-Fi"],
    "available": False,
    "attrs": {"year": "1995"},
}


def test_a_full_record_validates_and_round_trips() -> None:
    record = validate_item(orjson.dumps(ITEM))
    assert record == ItemRecord(
        "movie-1", 1_763_870_000_000, "Heat", ("Crime", "Sci-Fi"), False, {"year": "1995"}
    )
    assert isinstance(record, ItemRecord)
    assert decode_record(encode_record(record)) == record
    assert validate_item(encode_record(record)) == record


def test_type_is_optional_and_defaults_fill_in() -> None:
    record = validate_item(b'{"item_id": "m-2", "ts": 1763870000000}')
    assert record == ItemRecord("m-2", 1_763_870_000_000)
    assert isinstance(record, ItemRecord) and record.available and record.tags == ()


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"item_id": "has space"}, "item_id", "pattern"),
        ({"ts": "now"}, "ts", "type"),
        ({"tags": ["a,b"]}, "tags[0]", "pattern"),
        ({"tags": ["x"] * 21}, "tags", "maxItems"),
        ({"tags": ["x", "x"]}, "tags", "uniqueItems"),
        ({"available": "no"}, "available", "type"),
        ({"attrs": {"year": 1995}}, "attrs.year", "type"),
        ({"colour": "red"}, "colour", "additionalProperties"),
        ({"type": "watch"}, "type", "const"),
    ],
)
def test_bad_records_name_their_field_and_rule(change: dict, field: str, rule: str) -> None:
    result = validate_item(orjson.dumps({**ITEM, **change}))
    assert isinstance(result, Rejection)
    assert (result.field, result.rule) == (field, rule), str(result)


def test_missing_id_size_limit_and_garbage_are_refused() -> None:
    missing = validate_item(b'{"ts": 1763870000000}')
    assert isinstance(missing, Rejection) and missing.field == "item_id"
    big = validate_item(orjson.dumps({**ITEM, "title": "x" * MAX_EVENT_BYTES}))
    assert isinstance(big, Rejection) and big.rule == "maxBytes"
    assert isinstance(validate_item(b"\xff"), Rejection)


def test_an_item_record_is_not_an_event() -> None:
    """POST /events and the event topics take events only: an item record there is refused
    (it would be keyed by a user id it does not have)."""
    result = validate(orjson.dumps(ITEM))
    assert isinstance(result, Rejection) and result.field == "type"


def test_takedown_value_parses_and_keeps_its_set_when_only_the_revision_moves() -> None:
    first = decode_takedown(encode_takedown(3, {"a", "b"}))
    assert first == Takedown(3, frozenset({"a", "b"}))
    moved = decode_takedown(encode_takedown(4, {"b", "a"}), first)
    assert moved.revision == 4 and moved.unavailable is first.unavailable
    assert decode_takedown(None) is NO_TAKEDOWN
    assert decode_takedown(b"7\n{}") == Takedown(7, frozenset())  # Lua's empty table
    for garbage in (b"x\n[]", b"5", b"6\n[1]", b"8\nnope"):
        with pytest.raises(ValueError):
            decode_takedown(garbage)
