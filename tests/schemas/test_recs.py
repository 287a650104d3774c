"""The list codec's fast paths against its plain ``encode`` and ``decode``.

The worker's encoder (``ItemFragments`` and ``list_head``, ``encode_list``)
must write exactly the bytes ``encode`` writes. ``parse_head``, the API's
parse of a stored list with only its first n items (or all, as a fallback),
relies on how ``encode`` writes lists; these tests pin that every departure
from it (other key order, spacing, braces or quotes inside ids, short lists,
garbage) still gives what a full parse gives, cut to at least n items.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.recs import (
    ItemFragments,
    RecItem,
    RecList,
    decode,
    encode,
    encode_list,
    list_head,
    parse_head,
)

#: Any id orjson can write (no lone surrogates), escapes and braces included.
ids = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)


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


@pytest.mark.parametrize("version", [None, "20260101T000000000000Z-abcd"])
def test_encode_list_writes_exactly_the_contract_bytes(version: str | None) -> None:
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


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Item names and a ranked batch over them as the worker's arrays: per row a
    filled prefix of item indices (-1 after), float32 scores, explanations or -1."""
    names = draw(st.lists(ids, min_size=1, max_size=6, unique=True))
    n_users = draw(st.integers(min_value=0, max_value=4))
    k = draw(st.integers(min_value=0, max_value=5))
    index = st.integers(min_value=0, max_value=len(names) - 1)
    items = np.full((n_users, k), -1, dtype=np.int64)
    scores = np.full((n_users, k), -np.inf, dtype=np.float32)
    because = np.full((n_users, k), -1, dtype=np.int64)
    for row in range(n_users):
        filled = draw(st.integers(min_value=0, max_value=k))
        for slot in range(filled):
            items[row, slot] = draw(index)
            scores[row, slot] = draw(float32s)
            because[row, slot] = draw(st.integers(min_value=-1, max_value=len(names) - 1))
    rows = np.array(draw(st.lists(st.booleans(), min_size=n_users, max_size=n_users)), dtype=bool)
    return names, items, scores, because, rows


@settings(max_examples=200, deadline=None)
@given(
    batch=batches(),
    user=ids,
    version=st.none() | ids,
    times=st.tuples(st.integers(0, 2**53), st.integers(0, 2**53)),
)
def test_the_fragment_encoder_writes_exactly_what_encode_writes(
    batch: tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    user: str,
    version: str | None,
    times: tuple[int, int],
) -> None:
    names, items, scores, because, rows = batch
    bodies = ItemFragments(names).bodies(items, scores, because, rows)
    for row, body in enumerate(bodies):
        if not rows[row]:
            assert body is None
            continue
        entries = tuple(
            RecItem(names[i], float(s), None if b < 0 else names[b])
            for i, s, b in zip(items[row], scores[row], because[row], strict=True)
            if i >= 0
        )
        expected = RecList(user, "personal", version, *times, entries)
        assert body is not None
        data = list_head(user, "personal", version, *times) + body
        assert data == encode(expected)
        assert decode(data) == expected


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(st.builds(RecItem, ids, float32s.map(float), st.none() | ids), max_size=20),
    n=st.integers(min_value=0, max_value=25),
)
def test_the_head_parse_agrees_with_a_full_decode(items: list[RecItem], n: int) -> None:
    recs = RecList("u1", "personal", "v1", 1, 2, tuple(items))
    head = parse_head(encode(recs), n)
    parsed = [RecItem(i["item"], i["score"], i.get("because")) for i in head["items"]]
    full = decode(encode(recs))
    assert parsed == list(full.items[: len(parsed)]) and len(parsed) >= min(n, len(items))
