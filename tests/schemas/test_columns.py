"""The history columns' two coders (plain Python for short histories, numpy for long ones)
write the same bytes and read them back alike: a record written by either path is read
by the other, whatever the length a history had when it was written."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.columns import (
    SHORT_ROWS,
    ColumnsError,
    Cursor,
    _decode_long,
    _decode_short,
    _encode_long,
    _encode_short,
    decode_columns,
    encode_columns,
)

TS_MIN, TS_MAX = 946_684_800_000, 4_102_444_800_000  # the event schemas' bounds

#: Ratings (halves), watch times (hundredths) and numbers that are neither.
numbers = st.one_of(
    st.integers(0, 10).map(lambda n: n / 2),
    st.integers(0, 10**7).map(lambda n: n / 100),
    st.floats(allow_nan=False, allow_infinity=True),
)


@st.composite
def histories(draw: st.DrawFn, max_rows: int = 3 * SHORT_ROWS) -> tuple[list, ...]:
    n = draw(st.integers(0, max_rows))
    kinds = draw(st.lists(st.sampled_from(["watch", "rate"]), min_size=n, max_size=n))
    # mostly ordered stamps with small steps, and now and then any stamp in range
    start = draw(st.integers(TS_MIN, TS_MAX))
    steps = st.one_of(st.integers(0, 10**6), st.integers(TS_MIN - TS_MAX, TS_MAX - TS_MIN))
    ts, stamp = [], start
    for step in draw(st.lists(steps, min_size=n, max_size=n)):
        stamp = min(TS_MAX, max(TS_MIN, stamp + step))
        ts.append(stamp)
    uniform = draw(st.booleans())  # one kind of number per column, as real histories have
    pick = st.integers(0, 10).map(lambda k: k / 2) if uniform else numbers
    values = draw(st.lists(pick, min_size=n, max_size=n))
    durations = draw(st.lists(st.one_of(st.none(), numbers), min_size=n, max_size=n))
    return kinds, ts, values, durations


def _same(a: list, b: list) -> bool:
    return all(
        (x is None and y is None) or (x == y) or (math.isnan(x) and math.isnan(y))
        for x, y in zip(a, b, strict=True)
    )


@settings(max_examples=150, deadline=None)
@given(histories())
def test_both_coders_write_the_same_bytes_and_read_them_back_alike(history: tuple) -> None:
    kinds, ts, values, durations = history
    raw = _encode_short(kinds, ts, values, durations)
    assert raw == _encode_long(kinds, ts, values, durations)
    n = len(kinds)
    for read in (_decode_short, _decode_long):
        cursor = Cursor(memoryview(raw), 0)
        got_kinds, got_ts, got_values, got_durations = read(cursor, n)
        assert cursor.at == len(raw)
        assert got_kinds == "".join("r" if k == "rate" else "w" for k in kinds)
        assert got_ts == ts
        assert _same(got_values, [float(v) for v in values])
        assert _same(got_durations, durations)


@pytest.mark.parametrize("n", [0, 1, SHORT_ROWS, SHORT_ROWS + 1, 4 * SHORT_ROWS])
def test_the_public_coder_round_trips_on_either_side_of_the_switch(n: int) -> None:
    kinds = ["rate" if i % 3 else "watch" for i in range(n)]
    ts = [TS_MIN + 1000 * i - (5000 if i % 7 == 6 else 0) for i in range(n)]
    values = [4.5 if k == "rate" else 61.25 for k in kinds]
    durations = [None if i % 2 else 120.0 for i in range(n)]
    raw = encode_columns(kinds, ts, values, durations)
    assert decode_columns(Cursor(memoryview(raw), 0), n) == (
        "".join("r" if k == "rate" else "w" for k in kinds),
        ts,
        values,
        durations,
    )


def test_a_long_gap_is_an_exception_to_the_width_not_a_wider_column() -> None:
    # 32 steps of a second (2 bytes each, zigzagged 2,000), then one of a year: with the
    # first stamp, two exceptions of 33 values (2 allowed), each 8 bytes after the column
    n = 33
    ts = [TS_MIN + 1000 * i for i in range(n - 1)] + [TS_MIN + 365 * 86_400_000]
    args = (["watch"] * n, ts, [1.0] * n, [None] * n)
    raw = _encode_short(*args)
    assert raw == _encode_long(*args)
    kinds = (n + 7) // 8
    assert raw[kinds] == 2  # the timestamps' width
    stamps = 1 + 2 * n + 8 * 2
    values = 1 + 1 + n  # mode, width, a byte each (halves)
    durations = 1 + 1  # mode, width 0: every one unknown
    assert len(raw) == kinds + stamps + values + durations


@pytest.mark.parametrize("read", [_decode_short, _decode_long])
def test_a_record_cut_short_or_of_an_unknown_width_is_refused_saying_why(read: object) -> None:
    raw = _encode_short(["rate"] * 3, [TS_MIN] * 3, [4.0] * 3, [None] * 3)
    with pytest.raises(ColumnsError, match="ends early"):
        read(Cursor(memoryview(raw[:-2]), 0), 3)  # type: ignore[operator]
    bad = bytearray(raw)
    bad[1] = 3  # the timestamps' width byte
    with pytest.raises(ColumnsError, match="unknown width 3"):
        read(Cursor(memoryview(bytes(bad)), 0), 3)  # type: ignore[operator]


def test_an_unknown_kind_is_refused_by_both_coders() -> None:
    for encode in (_encode_short, _encode_long):
        with pytest.raises(KeyError):
            encode(["click"], [TS_MIN], [1.0], [None])
