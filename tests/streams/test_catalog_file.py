"""Catalog files as item records: JSON lines and CSV, the old catalog's spellings accepted."""

from __future__ import annotations

from streams.catalog_file import read_records

NOW = 1_763_870_000_000


def test_json_lines_take_id_for_item_id_piped_tags_and_stamp_a_missing_ts() -> None:
    raw = (
        b'{"id": "m1", "title": "Heat", "tags": "crime|drama"}\n'
        b"\n"
        b'{"item_id": "m2", "ts": 5, "tags": ["war"], "available": false}\n'
        b"not json\n"
        b"[1, 2]\n"
    )
    rows = list(read_records("items.jsonl", raw, NOW))
    assert rows[0] == (1, {"item_id": "m1", "title": "Heat", "tags": ["crime", "drama"], "ts": NOW})
    assert rows[1] == (3, {"item_id": "m2", "ts": 5, "tags": ["war"], "available": False})
    assert rows[2:] == [(4, b"not json"), (5, b"[1, 2]")]  # left to the validator to refuse


def test_csv_columns_become_fields_and_the_rest_attributes() -> None:
    raw = (
        b"item_id,title,tags,available,ts,year,studio\n"
        b"m1,Heat,crime|drama,,,1995,\n"
        b"m2,Ran,war,no,7,1985,Herald\n"
        b"m3,Odd,,maybe,x,,\n"
    )
    rows = list(read_records("items.csv", raw, NOW))
    assert rows[0] == (
        2,
        {
            "item_id": "m1",
            "title": "Heat",
            "tags": ["crime", "drama"],
            "available": True,
            "attrs": {"year": "1995"},
            "ts": NOW,
        },
    )
    assert rows[1][1]["available"] is False and rows[1][1]["ts"] == 7
    assert rows[1][1]["attrs"] == {"year": "1985", "studio": "Herald"}
    assert rows[2][1]["available"] == "maybe" and rows[2][1]["ts"] == "x"  # the validator says why
