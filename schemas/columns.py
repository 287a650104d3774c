"""The state record's history columns in binary (format 4 of :mod:`schemas.state`).

After a history's item ids, a format-4 record holds its other columns: kinds,
a bit per row (1 = rate, 0 = watch), ``ceil(rows / 8)`` bytes; timestamps,
zigzag-coded differences, *packed*; values and durations, a mode byte, then
packed integer halves or hundredths, or float64 each (the module doc of
:mod:`schemas.state` has the whole layout). Packed: a width byte (0, 1, 2, 4
or 8), every value at that width (the narrowest that leaves at most 1 in 16
values over it; those are written as the width's largest value, then at 8
bytes each after the column).

Each coder exists twice, equal byte for byte (``tests/schemas/test_columns.py``
holds them to it): numpy's, a handful of calls per column whatever its length,
for long histories; and plain Python's, a loop over the rows, for short ones.
The worker encodes every changed user of every batch, most of them with a few
rows in a stream of many users, and there numpy's fixed cost per call was the
whole price: about 40 calls per record, 167 µs to encode a two-row record and
62 µs to decode it, the largest stage of the worker's profile in the uniform
mix (issue 27). In plain Python a row costs about a microsecond: best of five,
on the 2-core machine, encoding took 24 µs in Python against 135 with numpy at
one row, 133 against 158 at 100 rows, 232 against 170 at 200; decoding 8
against 37 at one row, 54 against 56 at 100, 95 against 71 at 200.
:data:`SHORT_ROWS` is about where the two cross.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

#: Histories of at most this many rows are coded in plain Python, longer ones by numpy.
SHORT_ROWS = 100

#: Number modes: integer halves (ratings), integer hundredths (watch times), or float64.
SCALES = {0: 2.0, 1: 100.0}
MODE_FLOAT = 255
#: Largest scaled value stored as an integer (exact in a float64).
MAX_SCALED = 2.0**52
#: Widths in bytes an integer column may be packed at (0: every value is 0).
WIDTHS = (0, 1, 2, 4, 8)
#: Share of a column's values that may be exceptions to its width.
MAX_EXCEPTIONS = 1 / 16
_STRUCT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}
_RATE = "rate"
#: Each kind's letter (a kind not here is a ``KeyError``, as :mod:`schemas.state` has it).
KIND_LETTERS = {"watch": "w", "rate": "r"}


class ColumnsError(ValueError):
    """The columns' bytes are not a valid encoding: a user-state record that cannot be read."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"unreadable user state: {reason}")


def encode_columns(
    kinds: Sequence[str],
    ts: Sequence[int],
    values: Sequence[float],
    durations: Sequence[float | None],
) -> bytes:
    """Kinds (``"watch"``/``"rate"``), timestamps (epoch ms), values and durations (None:
    unknown) of a history, oldest first, in the record's binary layout."""
    if len(kinds) <= SHORT_ROWS:
        return _encode_short(kinds, ts, values, durations)
    return _encode_long(kinds, ts, values, durations)


class Cursor:
    """Where a reader is in a record: its bytes and the offset of the next one."""

    __slots__ = ("at", "raw")

    def __init__(self, raw: memoryview, at: int) -> None:
        self.raw = raw
        self.at = at

    def take(self, size: int) -> memoryview:
        """The next ``size`` bytes; :class:`ColumnsError` past the end."""
        if self.at + size > len(self.raw):
            raise ColumnsError("the record ends early")
        part = self.raw[self.at : self.at + size]
        self.at += size
        return part


def decode_columns(
    cursor: Cursor, n: int
) -> tuple[str, list[int], list[float], list[float | None]]:
    """Inverse of :func:`encode_columns` for ``n`` rows read at ``cursor``: kinds as one
    letter per row (``w`` watch, ``r`` rate), timestamps, values, durations."""
    if n <= SHORT_ROWS:
        return _decode_short(cursor, n)
    return _decode_long(cursor, n)


# --- plain Python: short histories ------------------------------------------------


def _encode_short(
    kinds: Sequence[str],
    ts: Sequence[int],
    values: Sequence[float],
    durations: Sequence[float | None],
) -> bytes:
    n = len(kinds)
    bits = bytearray((n + 7) // 8)
    for row, kind in enumerate(kinds):
        if kind == _RATE:
            bits[row >> 3] |= 0x80 >> (row & 7)
        elif kind != "watch":
            raise KeyError(kind)
    zigzag = []
    before = 0
    for stamp in ts:
        step = stamp - before
        before = stamp
        zigzag.append(step << 1 if step >= 0 else ((-step) << 1) - 1)
    out = bits + _packed_short(zigzag)
    out += _numbers_short([float(v) for v in values], optional=False)
    out += _numbers_short([math.nan if d is None else float(d) for d in durations], optional=True)
    return bytes(out)


def _packed_short(values: list[int]) -> bytes:
    if not any(values):
        return b"\x00"
    allowed = int(len(values) * MAX_EXCEPTIONS)
    for width in WIDTHS[1:-1]:
        top = (1 << (8 * width)) - 1
        escaped = [v for v in values if v >= top]
        if len(escaped) <= allowed:
            code = _STRUCT_CODES[width]
            return b"".join(
                (
                    bytes((width,)),
                    struct.pack(f"<{len(values)}{code}", *[min(v, top) for v in values]),
                    struct.pack(f"<{len(escaped)}Q", *escaped),
                )
            )
    return b"\x08" + struct.pack(f"<{len(values)}Q", *values)


def _numbers_short(numbers: list[float], optional: bool) -> bytes:
    for mode, scale in SCALES.items():
        codes = []
        for x in numbers:
            if optional and x != x:
                codes.append(0)
                continue
            scaled = x * scale
            if not math.isfinite(scaled):
                break
            whole = round(scaled)
            if not (0 <= whole < MAX_SCALED and whole / scale == x):
                break
            codes.append(whole + 1 if optional else whole)
        else:
            return bytes((mode,)) + _packed_short(codes)
    return bytes((MODE_FLOAT,)) + struct.pack(f"<{len(numbers)}d", *numbers)


def _decode_short(cursor: Cursor, n: int) -> tuple[str, list[int], list[float], list[float | None]]:
    bits = cursor.take((n + 7) // 8)
    kinds = "".join("r" if bits[row >> 3] & (0x80 >> (row & 7)) else "w" for row in range(n))
    ts = []
    stamp = 0
    for code in _unpacked_short(cursor, n):
        stamp += -((code + 1) >> 1) if code & 1 else code >> 1
        ts.append(stamp)
    values: list[float] = _numbers_read_short(cursor, n, optional=False)  # type: ignore[assignment]
    durations = _numbers_read_short(cursor, n, optional=True)
    return kinds, ts, values, durations


def _unpacked_short(cursor: Cursor, n: int) -> list[int]:
    width = cursor.take(1)[0]
    if width == 0:
        return [0] * n
    code = _STRUCT_CODES.get(width)
    if code is None:
        raise ColumnsError(f"unknown width {width}")
    out = list(struct.unpack(f"<{n}{code}", cursor.take(width * n)))
    if width < 8:
        top = (1 << (8 * width)) - 1
        escaped = [row for row, v in enumerate(out) if v == top]
        if escaped:
            wide = struct.unpack(f"<{len(escaped)}Q", cursor.take(8 * len(escaped)))
            for row, v in zip(escaped, wide, strict=True):
                out[row] = v
    return out


def _numbers_read_short(cursor: Cursor, n: int, optional: bool) -> list[float | None]:
    mode = cursor.take(1)[0]
    if mode == MODE_FLOAT:
        numbers = struct.unpack(f"<{n}d", cursor.take(8 * n))
        if optional:
            return [None if x != x else x for x in numbers]
        return list(numbers)
    scale = SCALES.get(mode)
    if scale is None:
        raise ColumnsError(f"unknown number mode {mode}")
    codes = _unpacked_short(cursor, n)
    if optional:
        return [None if c == 0 else (float(c) - 1.0) / scale for c in codes]
    return [float(c) / scale for c in codes]


# --- numpy: long histories ------------------------------------------------------


def _encode_long(
    kinds: Sequence[str],
    ts: Sequence[int],
    values: Sequence[float],
    durations: Sequence[float | None],
) -> bytes:
    codes = "".join(map(KIND_LETTERS.__getitem__, kinds))
    out = bytearray(np.packbits(np.frombuffer(codes.encode(), np.uint8) == ord("r")).tobytes())
    stamps = np.array(ts, np.int64)
    steps = np.diff(stamps, prepend=np.int64(0))
    out += _packed_long(((steps << 1) ^ (steps >> 63)).view(np.uint64))
    out += _numbers_long(np.array(values, np.float64), optional=False)
    out += _numbers_long(np.array(durations, np.float64), optional=True)
    return bytes(out)


def _numbers_long(numbers: np.ndarray, optional: bool) -> bytes:
    """A mode byte, then the numbers as integer halves or hundredths (the coarsest that
    holds every known number exactly; an optional unknown one as 0, the others plus
    one), or as float64 (NaN for unknown) when neither does."""
    known = ~np.isnan(numbers) if optional else slice(None)
    given = numbers[known]
    for mode, scale in SCALES.items():
        with np.errstate(over="ignore", invalid="ignore"):  # a huge number: float64 it is
            scaled = np.round(given * scale)
        if bool(
            np.all((scaled >= 0) & (scaled < MAX_SCALED)) and np.array_equal(scaled / scale, given)
        ):
            if optional:
                codes = np.zeros(numbers.size, np.uint64)
                codes[known] = scaled.astype(np.uint64) + np.uint64(1)
            else:
                codes = scaled.astype(np.uint64)
            return bytes((mode,)) + _packed_long(codes)
    return bytes((MODE_FLOAT,)) + numbers.astype("<f8").tobytes()


def _packed_long(values: np.ndarray) -> bytes:
    """Non-negative integers at the narrowest width whose exceptions stay few.

    A handful of numpy calls per column whatever its length (a varint coder in
    numpy takes four times as many, in Python a microsecond a value), and nearly
    as small as varints: a history's time steps fit 4 bytes but for the odd long gap.
    """
    v = values.astype(np.uint64)
    if not v.size or not v.any():
        return b"\x00"
    allowed = int(v.size * MAX_EXCEPTIONS)
    for width in WIDTHS[1:-1]:
        top = np.uint64((1 << (8 * width)) - 1)
        escaped = v >= top
        if int(np.count_nonzero(escaped)) <= allowed:
            kind = f"<u{width}"
            return b"".join(
                (
                    bytes((width,)),
                    np.minimum(v, top).astype(kind).tobytes(),
                    v[escaped].astype("<u8").tobytes(),
                )
            )
    return b"\x08" + v.astype("<u8").tobytes()


def _decode_long(cursor: Cursor, n: int) -> tuple[str, list[int], list[float], list[float | None]]:
    bits = np.unpackbits(np.frombuffer(cursor.take((n + 7) // 8), np.uint8), count=n)
    kinds = np.where(bits == 1, ord("r"), ord("w")).astype(np.uint8).tobytes().decode()
    zigzag = _unpacked_long(cursor, n)
    steps = (zigzag >> np.uint64(1)).view(np.int64) ^ -(zigzag & np.uint64(1)).view(np.int64)
    ts = np.cumsum(steps).tolist()
    values: list[float] = _numbers_read_long(cursor, n, optional=False)  # type: ignore[assignment]
    durations = _numbers_read_long(cursor, n, optional=True)
    return kinds, ts, values, durations


def _unpacked_long(cursor: Cursor, count: int) -> np.ndarray:
    width = cursor.take(1)[0]
    if width == 0:
        return np.zeros(count, np.uint64)
    if width not in WIDTHS:
        raise ColumnsError(f"unknown width {width}")
    out = np.frombuffer(cursor.take(width * count), f"<u{width}").astype(np.uint64)
    if width < 8:
        escaped = out == np.uint64((1 << (8 * width)) - 1)
        n = int(np.count_nonzero(escaped))
        if n:
            out[escaped] = np.frombuffer(cursor.take(8 * n), "<u8")
    return out


def _numbers_read_long(cursor: Cursor, count: int, optional: bool) -> list[float | None]:
    mode = cursor.take(1)[0]
    if mode == MODE_FLOAT:
        numbers = np.frombuffer(cursor.take(8 * count), "<f8")
        if optional:
            return [None if x != x else x for x in numbers.tolist()]
        out: list[float | None] = numbers.tolist()
        return out
    scale = SCALES.get(mode)
    if scale is None:
        raise ColumnsError(f"unknown number mode {mode}")
    codes = _unpacked_long(cursor, count).astype(np.float64)
    if optional:
        known = ((codes - 1.0) / scale).tolist()
        return [None if c == 0 else x for c, x in zip(codes.tolist(), known, strict=True)]
    listed: list[float | None] = (codes / scale).tolist()
    return listed
