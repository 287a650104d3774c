"""The user-state record: applying events, the history cap's seen items, and the codec."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import RateEvent, WatchEvent
from schemas.state import (
    FORMAT,
    HistoryColumns,
    Interaction,
    ShownList,
    UserState,
    decode,
    encode,
    history_columns,
)


def w(event_id: str, item: str, ts: int) -> WatchEvent:
    return WatchEvent(event_id, "u1", item, 600.0, ts, 1200.0)


def test_apply_drops_a_repeated_event_id() -> None:
    state = UserState()
    assert state.apply(w("e1", "a", 10), history_length=10, dedupe_window=10)
    assert not state.apply(w("e1", "a", 10), history_length=10, dedupe_window=10)
    assert [i.item_id for i in state.history] == ["a"]


def test_history_keeps_the_newest_by_event_time_even_out_of_order() -> None:
    state = UserState()
    for n, ts in enumerate([50, 10, 40, 20, 30]):
        state.apply(w(f"e{n}", f"i{ts}", ts), history_length=3, dedupe_window=10)
    assert [i.ts for i in state.history] == [30, 40, 50]
    assert state.newest_ts == 50


def test_event_ids_are_bounded_and_forget_the_oldest() -> None:
    state = UserState()
    for n in range(5):
        state.apply(w(f"e{n}", "a", n), history_length=10, dedupe_window=3)
    assert state.event_ids == ["e2", "e3", "e4"]
    # e0 fell out of the window: a repeat that late is taken as new (documented bound)
    assert state.apply(w("e0", "a", 0), history_length=10, dedupe_window=3)


def test_a_redelivered_forget_keeps_the_seen_items_of_the_new_history() -> None:
    """Regression (found by issue 16's restart test): a forget delivered again after the
    user came back emptied ``seen_items``, so items the cap had dropped from the new
    history were offered to the user again."""
    state = UserState()
    state.apply(w("e0", "old", 5), history_length=2, dedupe_window=10)
    state.forget(10)
    for n, item in enumerate(["a", "b", "c"]):
        state.apply(w(f"e{n + 1}", item, 20 + n), history_length=2, dedupe_window=10)
    assert (state.seen_items, [i.item_id for i in state.history]) == (["a"], ["b", "c"])
    state.forget(10)
    state.forget(3)
    assert (state.seen_items, [i.item_id for i in state.history]) == (["a"], ["b", "c"])
    assert state.forgotten_at == 10
    state.forget(21)  # a newer forget: the history at or before it goes, and the seen items
    assert (state.seen_items, [i.item_id for i in state.history]) == ([], ["c"])


def test_items_the_cap_drops_become_seen_items_sorted_and_unique() -> None:
    state = UserState()
    for n, item in enumerate(["c", "a", "c", "b", "d", "e"]):
        state.apply(w(f"e{n}", item, n), history_length=2, dedupe_window=10)
    assert [i.item_id for i in state.history] == ["d", "e"]
    assert state.seen_items == ["a", "b", "c"]
    assert state.items() == {"a", "b", "c", "d", "e"}


def test_an_item_still_in_the_kept_history_is_not_a_seen_item() -> None:
    state = UserState()
    for n, item in enumerate(["a", "b", "a"]):
        state.apply(w(f"e{n}", item, n), history_length=2, dedupe_window=10)
    assert [i.item_id for i in state.history] == ["b", "a"]
    assert state.seen_items == []


def test_an_event_older_than_a_full_history_goes_straight_to_seen_items() -> None:
    state = UserState()
    for n, item in enumerate(["a", "b"]):
        state.apply(w(f"e{n}", item, 100 + n), history_length=2, dedupe_window=10)
    assert state.apply(w("late", "z", 1), history_length=2, dedupe_window=10)
    assert [i.item_id for i in state.history] == ["a", "b"]
    assert state.seen_items == ["z"]


def test_an_item_back_in_the_history_leaves_seen_items() -> None:
    state = UserState()
    for n, item in enumerate(["a", "b", "c", "a"]):
        state.apply(w(f"e{n}", item, n), history_length=2, dedupe_window=10)
    assert [i.item_id for i in state.history] == ["c", "a"]
    assert state.seen_items == ["b"]


def test_encode_round_trips_watch_and_rate() -> None:
    state = UserState(seen_items=["old"], forgotten_at=7)
    state.apply(w("e1", "a", 1), 10, 10)
    state.apply(RateEvent("e2", "u1", "b", 4.5, 2), 10, 10)
    state.apply(WatchEvent("e3", "u1", "c", 30.0, 3, None), 10, 10)
    assert decode(encode(state)) == state
    assert encode(state)[0] == FORMAT == 4


def test_a_format_3_record_still_decodes() -> None:
    """Issue 25: format 4 is binary; the JSON records changelogs already hold still read."""
    raw = orjson.dumps(
        {
            "v": 3,
            "h": {"i": ["a", "b"], "k": "wr", "v": [600.0, 4.5], "d": [1200.0, None], "t": [1, 2]},
            "s": ["e1", "e2"],
            "x": ["z"],
            "f": 5,
        }
    )
    state = decode(raw)
    assert state == UserState(
        [Interaction("a", "watch", 600.0, 1200.0, 1), Interaction("b", "rate", 4.5, None, 2)],
        ["e1", "e2"],
        ["z"],
        5,
    )
    assert decode(encode(state)) == state
    assert history_columns(raw) == history_columns(encode(state))


def test_a_long_history_costs_a_few_bytes_a_row_beside_its_item_ids() -> None:
    """Issue 25: the record is rewritten on every event, and whole histories run to
    thousands of rows. Beside the item ids, a rated row costs under 6 bytes (a day's
    timestamp step in 4, the half-star rating in 1, a kind bit, nothing for an unknown
    duration), against 24 in format 3's JSON."""
    state = UserState()
    for n in range(2000):
        event = RateEvent(
            f"e{n}", "u1", f"item-{n * 7919 % 3600}", 1.0 + n % 9 / 2, 10**12 + n * 86_400_123
        )
        state.apply(event, history_length=2000, dedupe_window=200)
    raw = encode(state)
    ids = sum(len(i.item_id) + 1 for i in state.history) + sum(len(e) + 1 for e in state.event_ids)
    assert (len(raw) - ids) / len(state.history) < 6
    assert decode(raw) == state


def test_numbers_neither_halves_nor_hundredths_round_trip_exactly() -> None:
    state = UserState(
        [
            Interaction("a", "watch", 12.345, 1e300, 3),
            Interaction("b", "watch", -1.0, None, 1),  # out of order, negative: still exact
        ]
    )
    assert decode(encode(state)) == state


def test_an_id_with_a_newline_is_refused_by_encode() -> None:
    with pytest.raises(ValueError, match="newline"):
        encode(UserState([Interaction("a\nb", "rate", 4.0, None, 1)]))


ids = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\n"), max_size=12)
values = st.floats(allow_nan=False, allow_infinity=False)
interactions = st.builds(
    Interaction,
    ids,
    st.sampled_from(["watch", "rate"]),
    values,
    st.none() | values,
    st.integers(min_value=0, max_value=2**53),
)


@settings(max_examples=200, deadline=None)
@given(
    history=st.lists(interactions, max_size=20),
    event_ids=st.lists(ids, max_size=20),
    seen_items=st.lists(ids, max_size=20, unique=True).map(sorted),
    forgotten_at=st.integers(min_value=0, max_value=2**53),
)
def test_decode_inverts_encode_for_any_state(
    history: list[Interaction], event_ids: list[str], seen_items: list[str], forgotten_at: int
) -> None:
    state = UserState(history, event_ids, seen_items, forgotten_at)
    assert decode(encode(state)) == state


def test_a_format_1_record_still_decodes() -> None:
    # what workers wrote before format 2, as existing changelogs hold it
    raw = b'{"v":1,"h":[["a","watch",600.0,1200.0,10],["b","rate",4.5,null,20]],"s":["e1","e2"]}'
    assert decode(raw) == UserState(
        [Interaction("a", "watch", 600.0, 1200.0, 10), Interaction("b", "rate", 4.5, None, 20)],
        ["e1", "e2"],
        [],
        0,
    )


def test_a_format_2_record_still_decodes_and_gives_its_columns() -> None:
    raw = (
        b'{"v":2,"h":[["a","watch",600.0,1200.0,10],["b","rate",4.5,null,20]],'
        b'"s":["e1","e2"],"x":["z"],"f":5}'
    )
    state = decode(raw)
    assert state.seen_items == ["z"] and state.forgotten_at == 5
    assert decode(encode(state)) == state
    assert (
        history_columns(raw)
        == history_columns(encode(state))
        == HistoryColumns(["a", "b"], "wr", [600.0, 4.5], [1200.0, None], [10, 20])
    )


def test_history_columns_of_a_forget_marker_are_empty() -> None:
    assert len(history_columns(encode(UserState(forgotten_at=9)))) == 0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not JSON"),
        (b"[]", "a JSON list, not an object"),
        (b'{"v": 99, "h": [], "s": []}', "unknown format 99"),
        (b'{"h": [], "s": []}', "unknown format None"),
        (b'{"v": 1}', "field 'h' is None"),
        (b'{"v": 2, "h": {}, "s": []}', "field 'h' is {}"),
        (b'{"v": 2, "h": [], "s": [], "x": "a"}', "field 'x' is 'a'"),
        (b'{"v": 2, "h": [], "s": [], "f": 1.5}', "field 'f' is 1.5"),
        (b'{"v": 2, "h": [["a", "watch", 1.0]], "s": []}', "bad history row"),
        (b'{"v": 2, "h": [7], "s": []}', "bad history row"),
        (b'{"v": 3, "h": [], "s": []}', "field 'h' is []"),
        (b'{"v": 3, "h": {"i": ["a"], "k": "w", "v": [1.0], "d": [null]}, "s": []}', "column 't'"),
        (
            b'{"v": 3, "h": {"i": ["a"], "k": "ww", "v": [1.0], "d": [null], "t": [1]}, "s": []}',
            "differ in length",
        ),
        (
            b'{"v": 3, "h": {"i": ["a"], "k": "q", "v": [1.0], "d": [null], "t": [1]}, "s": []}',
            "bad history",
        ),
    ],
)
def test_decode_refuses_a_bad_record_saying_why(raw: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match="unreadable user state") as info:
        decode(raw)
    assert reason in str(info.value)


GOOD = encode(UserState([Interaction("a", "rate", 4.0, None, 1)], ["e1"]))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (GOOD[:-1], "ends early"),
        (b"\x04\x00\x02\x01a", "1 ids where 2 were counted"),
        (GOOD[:6], "ends early"),
        (GOOD + b"x", "bytes after the record's end"),
        (b"\x04\x00\x01\x01a\x00\x01\x00\x07", "unknown number mode 7"),
        (b"\x04\x00\x01\x01a\x00\x03", "unknown width 3"),
    ],
)
def test_decode_refuses_a_bad_binary_record_saying_why(raw: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match="unreadable user state") as info:
        decode(raw)
    assert reason in str(info.value)


def test_the_shown_list_round_trips_and_a_record_without_it_reads_as_none() -> None:
    """Issue 24: the top of the last written list rides in the record (``l``), on a format
    of its own, so that it and the history's encoding change independently."""
    state = UserState()
    state.apply(w("e1", "a", 1000), 10, 10)
    assert decode(encode(state)).shown is None and encode(state).endswith(b"\x00")
    state.shown = ShownList(3, "v1", "current", ("x", "y", "z"))
    back = decode(encode(state))
    assert back == state and back.shown is not None and back.shown.rank("y") == 2
    assert back.shown.rank("a") is None
    raw = encode(state)
    field = b'[1,3,"v1","current",["x","y","z"]]'
    assert raw.endswith(field)
    # a later format of the field: no shown list, the rest still reads
    later = decode(raw[: -len(field)] + b"[9" + field[2:])
    assert later.shown is None and later.history == state.history


def test_a_forget_drops_the_shown_list() -> None:
    state = UserState()
    state.apply(w("e1", "a", 1000), 10, 10)
    state.shown = ShownList(1, "v1", "current", ("x",))
    state.forget(2000)
    assert state.shown is None and state.copy().shown is None
