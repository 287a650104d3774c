"""The list codec: both formats, and the fast paths against the plain ``encode`` and ``decode``.

``encode_list`` must write exactly the bytes ``encode`` writes. ``parse_head``,
the API's parse of a stored JSON list with only its first n items (or all, as
a fallback), relies on how ``encode`` writes lists; these tests pin that every
departure from it (other key order, spacing, braces or quotes inside ids, short
lists, garbage) still gives what a full parse gives, cut to at least n items.
Both formats round-trip: ``decode`` gives back the list either encoder wrote.
The compact format (``ItemTable``) must decode to the lists it was given, with
float16 scores (float32 where float16 cannot hold them), in any width.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.recs import (
    ItemTable,
    RecItem,
    RecList,
    Source,
    compact_version,
    decode,
    decode_items,
    encode,
    encode_items,
    encode_list,
    order_generation,
    order_model_version,
    order_token,
    parse_compact,
    parse_head,
)

#: An event time (epoch ms) for order tokens.
BASE = 1_735_689_600_000

#: Any id orjson can write (no lone surrogates), escapes and braces included.
ids = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
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


rec_lists = st.builds(
    RecList,
    user=st.none() | ids,
    source=st.sampled_from(["personal", "popular"]),
    model_version=st.none() | ids,
    updated_at=st.integers(0, 2**63 - 1),
    written_at=st.integers(0, 2**63 - 1),
    items=st.lists(
        st.builds(RecItem, ids, st.floats(allow_nan=False, allow_infinity=False), st.none() | ids),
        max_size=20,
    ).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(recs=rec_lists)
def test_a_json_list_decodes_to_what_was_encoded_by_either_encoder(recs: RecList) -> None:
    data = encode(recs)
    assert decode(data) == recs
    assert compact_version(data) is None
    columns = encode_list(
        recs.user,
        recs.source,
        recs.model_version,
        recs.updated_at,
        recs.written_at,
        [i.item for i in recs.items],
        [i.score for i in recs.items],
        [i.because for i in recs.items],
    )
    assert columns == data


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


def same_scores(decoded: RecList, scores: np.ndarray) -> bool:
    """The decoded scores are ``scores`` as the compact format keeps them: float16 (back
    as the shortest decimal of the same float16), or float32 for a row with a score
    beyond float16's range."""
    got = np.array([i.score for i in decoded.items], dtype=np.float64)
    with np.errstate(over="ignore"):
        half = scores.astype(np.float16)
    if not np.isfinite(half).all():
        return got.tolist() == scores.astype(np.float64).tolist()
    return got.astype(np.float16).tolist() == half.tolist()


@settings(max_examples=300, deadline=None)
@given(
    batch=batches(),
    user=ids,
    version=ids.filter(bool),
    times=st.tuples(st.integers(0, 2**53), st.integers(0, 2**53)),
    source=st.sampled_from(["personal", "popular"]),
)
def test_a_compact_list_decodes_to_what_was_encoded(
    batch: tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    user: str,
    version: str,
    times: tuple[int, int],
    source: Source,
) -> None:
    names, items, scores, because, rows = batch
    updated = [times[0] + row for row in range(len(rows))]
    lists = ItemTable(version, names).encode(
        items, scores, because, rows, updated, times[1], source
    )
    for row, data in enumerate(lists):
        if not rows[row]:
            assert data is None
            continue
        filled = items[row] >= 0
        expected = RecList(
            user,
            source,
            version,
            updated[row],
            times[1],
            tuple(
                RecItem(names[i], s, None if b < 0 else names[b])
                for i, s, b in zip(
                    items[row][filled],
                    scores[row][filled].tolist(),
                    because[row][filled],
                    strict=True,
                )
            ),
        )
        assert data is not None and compact_version(data) == version
        decoded = decode(data, names, user)
        assert same_scores(decoded, scores[row][filled])
        assert [(i.item, i.because) for i in decoded.items] == [
            (i.item, i.because) for i in expected.items
        ]
        assert replace(decoded, items=()) == replace(expected, items=())
        for n in (0, 1, 3):
            head = parse_compact(data, names, n)
            assert [
                RecItem(i["item"], i["score"], i.get("because")) for i in head["items"]
            ] == list(decoded.items[:n])


def test_float16_scores_come_back_as_their_shortest_decimal() -> None:
    data = ItemTable("v1", ["a", "b"]).encode(
        np.array([[0, 1]]),
        np.array([[0.835, -0.1]], dtype=np.float32),
        np.array([[-1, 0]]),
        np.array([True]),
        [1],
        2,
    )[0]
    assert data is not None
    assert decode(data, ["a", "b"], "u") == RecList(
        "u", "personal", "v1", 1, 2, (RecItem("a", 0.835), RecItem("b", -0.1, "a"))
    )


def test_a_score_beyond_float16_keeps_its_row_in_float32() -> None:
    scores = np.array([[70000.5, 0.1], [0.5, 0.25]], dtype=np.float32)
    lists = ItemTable("v1", ["a", "b"]).encode(
        np.array([[0, 1], [1, 0]]), scores, np.full((2, 2), -1), np.array([True, True]), [1, 1], 2
    )
    wide, narrow = (decode(d, ["a", "b"]) for d in lists if d is not None)
    assert [i.score for i in wide.items] == [70000.5, float(np.float32(0.1))]
    assert [i.score for i in narrow.items] == [0.5, 0.25]
    assert lists[0] is not None and lists[1] is not None and len(lists[0]) > len(lists[1])


def test_a_catalogue_past_uint16_and_many_explanations_widen_their_columns() -> None:
    names = [f"i{n}" for n in range(70_000)]
    k = 300  # more distinct explanations than a uint8 slot can name
    items = np.arange(69_000, 69_000 + k).reshape(1, k)
    because = np.arange(k).reshape(1, k)
    because[0, ::10] = -1
    scores = np.linspace(1, 0, k, dtype=np.float32).reshape(1, k)
    data = ItemTable("v1", names).encode(items, scores, because, np.array([True]), [1], 2)[0]
    assert data is not None
    decoded = decode(data, names)
    assert [i.item for i in decoded.items] == [names[i] for i in items[0]]
    assert [i.because for i in decoded.items] == [None if b < 0 else names[b] for b in because[0]]


def test_a_150_item_list_fits_a_1_kib_allocation() -> None:
    # The bound behind redis_bytes_per_user <= 1,500 (loadtests/bench_api.py): Redis
    # stores the field in an allocation of 1,024 bytes (its sds header is 5 + 1 bytes),
    # and the hash around it costs about 320 more.
    rng = np.random.default_rng(7)
    names = [f"item-{n}" for n in range(20_000)]
    history = rng.choice(len(names), 100, replace=False)  # the worker's history length
    items = rng.choice(len(names), (50, 150))
    because = history[rng.integers(0, 100, (50, 150))]
    scores = np.sort(rng.random((50, 150)).astype(np.float32))[:, ::-1]
    version = "20260101T000000000000Z-3f2a9c1b"
    lists = ItemTable(version, names).encode(
        items, scores, because, np.ones(50, dtype=bool), [1_767_225_600_000] * 50, 1_767_225_600_500
    )
    sizes = [len(d) for d in lists if d is not None]
    assert max(sizes) <= 1_018, max(sizes)
    json_size = len(encode(decode(lists[0] or b"", names, "u000000000001")))
    assert json_size > 5 * max(sizes), json_size


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[:10],  # cut inside the header
        lambda d: d[:30],  # cut inside the columns
        lambda d: d + b"\0",  # a byte too many
        lambda d: d[:1] + b"\xff" + d[2:],  # unknown flags
    ],
)
def test_a_damaged_compact_list_raises_value_error(damage: Any) -> None:
    data = ItemTable("v1", ["a", "b"]).encode(
        np.array([[0, 1, 0, 1]]),
        np.ones((1, 4), dtype=np.float32),
        np.array([[1, 1, -1, 0]]),
        np.array([True]),
        [1],
        2,
    )[0]
    assert data is not None
    with pytest.raises(ValueError):
        decode(damage(data), ["a", "b"])


def test_a_compact_list_needs_an_item_table_that_holds_its_indices() -> None:
    data = ItemTable("v1", ["a", "b", "c"]).encode(
        np.array([[2]]),
        np.ones((1, 1), dtype=np.float32),
        np.array([[-1]]),
        np.array([True]),
        [1],
        2,
    )[0]
    assert data is not None
    with pytest.raises(ValueError, match="item table"):
        decode(data)
    with pytest.raises(ValueError):
        decode(data, ["a", "b"])  # an older or other model's table
    assert decode(data, ["a", "b", "c"]).items == (RecItem("c", 1.0),)


def test_a_json_list_has_no_compact_version() -> None:
    assert compact_version(stored([("a", 1.0, None)])) is None
    with pytest.raises(ValueError):
        compact_version(b"\x02")


def test_the_item_table_round_trips_and_refuses_garbage() -> None:
    assert decode_items(encode_items(["a", 'q"\u00e9', "}"])) == ["a", 'q"\u00e9', "}"]
    for garbage in (b"{", b'{"a": 1}', b"[1, 2]"):
        with pytest.raises(ValueError):
            decode_items(garbage)


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


def test_a_list_made_after_a_rollback_outranks_the_one_it_replaces() -> None:
    """Issue 24: tokens compared the version id, so after a rollback to an older id the
    refresh's lists looked older and were refused; they compare the generation now."""
    newer_id_older_generation = order_token(BASE, "20261207T020000000000Z-bbbb", 4)
    rollback = order_token(BASE, "20261101T010000000000Z-aaaa", 5)
    assert rollback > newer_id_older_generation
    assert order_token(BASE + 1, "x", 1) > rollback, "a newer event still comes first"
    assert order_generation(rollback) == 5
    assert order_model_version(rollback) == "20261101T010000000000Z-aaaa"
    assert order_model_version(order_token(BASE, None, 0)) is None


def test_tokens_written_before_generations_still_parse_and_are_replaced() -> None:
    legacy = f"{BASE:015d}|20261207T020000000000Z-bbbb"
    assert order_generation(legacy) is None
    assert order_model_version(legacy) == "20261207T020000000000Z-bbbb"
    assert order_token(BASE, "20261101T010000000000Z-aaaa", 0) > legacy
    assert order_token(BASE, "v", 0) > f"{BASE:015d}|"  # a list made without a model


def test_a_canarys_compact_list_says_so_and_older_lists_read_as_current() -> None:
    """Issue 24, item 4: lists carry the arm that made them (a header flag in the compact
    format, a key in JSON); lists written before canaries have neither."""
    table = ItemTable("v2", ["a", "b", "c"])
    items = np.array([[2, 0]])
    scores = np.array([[0.5, 0.25]], dtype=np.float32)
    none = np.full_like(items, -1)
    rows = np.array([True])
    (canary,) = table.encode(items, scores, none, rows, [1], 2, variant="canary")
    (plain,) = table.encode(items, scores, none, rows, [1], 2)
    assert canary is not None and plain is not None
    assert decode(canary, ["a", "b", "c"], "u").variant == "canary"
    assert decode(plain, ["a", "b", "c"], "u").variant == "current"
    assert parse_compact(canary, ["a", "b", "c"])["variant"] == "canary"
    old_json = orjson.loads(stored([("a", 1.0, None)]))
    del old_json["variant"]
    assert decode(orjson.dumps(old_json)).variant == "current"
    assert parse_head(orjson.dumps(old_json), 1)["items"] == [{"item": "a", "score": 1.0}]
