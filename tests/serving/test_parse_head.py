"""``parse_head``: a stored list with only its first n items parsed, equal to a full parse cut to n.

The shortcut relies on how ``schemas.recs.encode`` writes lists; these tests
pin that every departure from it (other key order, spacing, braces or quotes
inside ids, short lists, garbage) still gives exactly what a full parse gives.
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


def prefix(doc: dict[str, Any], n: int) -> dict[str, Any]:
    return {**doc, "items": doc["items"][:n]}


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
    assert parse_head(data, n) == prefix(orjson.loads(data), n)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_other_key_order_and_spacing_fall_back_to_a_full_parse(n: int) -> None:
    doc = {
        "items": [{"item": f"i{r}", "score": 1.0 - r / 10} for r in range(4)],
        "user": "u1",
        "source": "personal",
        "model_version": "v1",
        "updated_at": 1,
        "written_at": 2,
    }
    for data in (orjson.dumps(doc), json.dumps(doc).encode(), json.dumps(doc, indent=2).encode()):
        head = parse_head(data, n)
        assert head["items"][:n] == doc["items"][:n]
        assert {k: v for k, v in head.items() if k != "items"} == {
            k: v for k, v in doc.items() if k != "items"
        }


@pytest.mark.parametrize("garbage", [b"", b"{", b'{"items":[', b'{"items":[{"item":"a"}', b"[1]"])
def test_garbage_raises_like_a_full_parse(garbage: bytes) -> None:
    try:
        expected: Any = orjson.loads(garbage)
    except orjson.JSONDecodeError:
        with pytest.raises(orjson.JSONDecodeError):
            parse_head(garbage, 3)
    else:
        assert parse_head(garbage, 3) == expected
