"""``parse_head``: a stored list with only its first n items parsed (or all, as a fallback).

The shortcut relies on how ``schemas.recs.encode`` writes lists; these tests
pin that every departure from it (other key order, spacing, braces or quotes
inside ids, short lists, garbage) still gives what a full parse gives, cut
to at least n items.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.recs import RecItem, RecList, encode
from serving.recs import parse_head


def assert_head_of(head: dict[str, Any], full: dict[str, Any], n: int) -> None:
    """``head`` has the envelope of ``full`` and a prefix of its items at least ``n`` long
    (or all of them): what ``render`` needs to serve ``n`` items."""
    items = head["items"]
    assert items == full["items"][: len(items)]
    assert len(items) >= min(n, len(full["items"]))
    assert {k: v for k, v in head.items() if k != "items"} == {
        k: v for k, v in full.items() if k != "items"
    }


def stored(items: list[tuple[str, float, str | None]], version: str | None = "v1") -> bytes:
    return encode(
        RecList(
            user="u1",
            source="personal",
            model_version=version,
            updated_at=1,
            written_at=2,
            items=tuple(RecItem(*entry) for entry in items),
        )
    )


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(
        st.tuples(
            st.text(max_size=8),
            st.floats(allow_nan=False, allow_infinity=False),
            st.none() | st.text(max_size=8),
        ),
        max_size=30,
    ),
    version=st.none() | st.text(max_size=12),
    n=st.integers(min_value=0, max_value=40),
)
def test_equals_a_full_parse_cut_to_n_for_any_ids(
    items: list[tuple[str, float, str | None]], version: str | None, n: int
) -> None:
    data = stored(items, version)
    assert_head_of(parse_head(data, n), orjson.loads(data), n)


def test_a_brace_inside_an_id_falls_back_to_the_whole_list() -> None:
    # Found by the property test above: the cut lands inside a string.
    data = stored([("", 0.0, "}"), ("", 0.0, None)])
    assert parse_head(data, 1) == orjson.loads(data)


def test_a_brace_inside_an_id_never_shortens_the_list() -> None:
    # Found by the property test: the n-th brace may be a real item end after a brace
    # inside a string, which parses fine but holds fewer than n items.
    data = stored([("a", 3.0, "}"), ("b", 2.0, None), ("c", 1.0, None)])
    assert [i["item"] for i in parse_head(data, 3)["items"]] == ["a", "b", "c"]


def test_contract_ids_take_the_shortcut() -> None:
    data = stored([(f"i{n}", 1.0, "h1") for n in range(150)])
    assert parse_head(data, 10)["items"] == orjson.loads(data)["items"][:10]


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_other_key_order_and_spacing_fall_back_to_a_full_parse(n: int) -> None:
    doc: dict[str, Any] = {
        "items": [{"item": f"i{r}", "score": 1.0 - r / 10} for r in range(4)],
        "user": "u1",
        "source": "personal",
        "model_version": "v1",
        "updated_at": 1,
        "written_at": 2,
    }
    for data in (orjson.dumps(doc), json.dumps(doc).encode(), json.dumps(doc, indent=2).encode()):
        assert_head_of(parse_head(data, n), doc, n)


@pytest.mark.parametrize("garbage", [b"", b"{", b'{"items":[', b'{"items":[{"item":"a"}', b"[1]"])
def test_garbage_raises_like_a_full_parse(garbage: bytes) -> None:
    try:
        expected: Any = orjson.loads(garbage)
    except orjson.JSONDecodeError:
        with pytest.raises(orjson.JSONDecodeError):
            parse_head(garbage, 3)
    else:
        assert parse_head(garbage, 3) == expected
