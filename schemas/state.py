"""The user-state record: one user's state as the worker keeps it and the retrain job reads it.

The worker writes one record per user to its state table's changelog topic
(the table is :class:`streams.state.StateTable`); the retrain job reads that
compacted topic as its snapshot. Both sides call :func:`encode` and
:func:`decode` here, so the record has one codec.

One record holds the history *and* the ids of the events it includes, so that
a single changelog write carries both: whatever version of the record survives
a crash, its event ids match its history exactly, and a redelivered event is
either in both or in neither.

Format 4, binary, since histories are whole (issue 25): a user's record holds
up to ``FRESHREC_HISTORY_LENGTH`` rows, hundreds to thousands for heavy users
of rating data, and is rewritten on every event of theirs, so its size is what
the changelog carries per event. Counts and lengths are LEB128 varints (7
bits a byte); integer columns are *packed*: a width byte (0, 1, 2, 4 or 8),
every value at that width (the narrowest that leaves at most 1 in 16 values
over it; those are written as the width's largest value, then at 8 bytes each
after the column), coded by :mod:`schemas.columns` (plain Python for short
histories, numpy for long ones, byte for byte the same).
In order:

- the byte ``0x04`` (a JSON record starts with ``{``), ``forgotten_at`` (epoch
  ms of the user's last forget, 0 for never), the number of history rows;
- item ids, oldest first, joined by newlines (ids follow the event schema:
  no newlines), as a length-prefixed UTF-8 string;
- kinds, a bit per row (1 = rate, 0 = watch), ``ceil(rows / 8)`` bytes;
- timestamps (epoch ms): the first, then the difference to the previous one,
  zigzag-coded (an out-of-order row costs a sign), packed. The history is in
  event-time order, so the differences are small (4 bytes against 13 digits
  in JSON);
- values (seconds watched, or the rating) and durations: a mode byte, then
  mode 0 or 1, integer halves or hundredths, packed (durations: 0 for
  unknown, the integer plus one otherwise): the coarsest that holds every
  known number exactly (a half-star rating in a byte); or mode 255, float64
  each (NaN for an unknown duration), for anything else;
- the newest event ids (the dedupe window), oldest first, then the seen items
  (sorted unique ids of items the user interacted with that are no longer in
  the history because the cap dropped them): each a count and a
  length-prefixed, newline-joined string.
- the top of the list the worker last wrote for the user (:class:`ShownList`,
  for the online metrics), a length-prefixed JSON array whose first element is
  the field's own format, ``[1, generation, version, arm, [item ids]]``, empty
  for none. A format of it this code does not know reads as no list shown:
  the field is versioned on its own, so that it and the record's format change
  independently. Format 3 records carry it as their optional key ``l``.
- optionally (absent when empty, so older format 4 records read as none), the
  user's contributions to items the model did not know (issue 23,
  :attr:`UserState.interim`): a length-prefixed JSON array
  ``[1, {item: [version, confidence, [vector]]}]``.

``loadtests/bench_state.py`` and ``loadtests/bench_history.py`` measure its
size and cost per history length (docs/worker.md, "History length").

Formats 1 to 3 (JSON objects; ``v`` their version) are still read: changelogs
written before format 4 hold them. Format 3 held the history by column
(``h``: ``i`` item ids, ``k`` kinds as letters, ``v`` values, ``d``
durations, ``t`` timestamps), ``s`` the event ids, ``x`` the seen items, ``f``
``forgotten_at``; formats 1 and 2 ``h`` as rows ``[item_id, kind, value,
duration_s, ts]`` (format 1 without ``x`` and ``f``).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

import orjson

from schemas.columns import KIND_LETTERS, Cursor, decode_columns, encode_columns
from schemas.events import InteractionEvent, WatchEvent

#: Name of the worker's state table; Faust names the table's changelog topic after it.
STATE_TABLE = "user-state"

#: Version :func:`encode` writes.
FORMAT = 4
#: Versions :func:`decode` reads.
READABLE_FORMATS = (1, 2, 3, 4)

#: Kind names and their one-letter codes in format 3.
_KIND_NAME = {"w": "watch", "r": "rate"}


class Interaction(NamedTuple):
    """One event of one user's history: the streaming worker's view of a watch or rating."""

    item_id: str
    kind: str  # "watch" or "rate"
    value: float  # watch: seconds watched; rate: rating 0.5..5
    duration_s: float | None  # watch only; None when unknown
    ts: int  # epoch milliseconds

    @classmethod
    def of(cls, event: InteractionEvent) -> Interaction:
        """The history row of a watch or rate event."""
        if isinstance(event, WatchEvent):
            return cls(event.item_id, "watch", event.watched_s, event.duration_s, event.ts)
        return cls(event.item_id, "rate", event.rating, None, event.ts)


#: A user's contribution to an interim item: model version, stored confidence, vector.
InterimContribution = tuple[str, float, tuple[float, ...]]
#: The format of the optional trailing interim field that :func:`encode` writes.
INTERIM_FORMAT = 1

#: The format of the ``l`` field (:class:`ShownList`) that :func:`encode` writes.
SHOWN_FORMAT = 1


@dataclass(frozen=True, slots=True)
class ShownList:
    """The top of the list the worker last wrote for a user: what the user's next watch
    or rating is compared with (the online metrics, :mod:`streams.online`)."""

    generation: int
    """The model pointer's generation the list was made under: an event counts for
    ``version`` only while the pointer has not moved since (after a move the worker
    rewrote the list with another model, without touching the state)."""
    version: str
    arm: str
    """The user's arm: ``current`` (or ``canary``, the candidate of a canary release)."""
    items: tuple[str, ...]
    """The list's first item ids, best first (``FRESHREC_ONLINE_TOP_K`` of them)."""

    def rank(self, item: str) -> int | None:
        """``item``'s 1-based place in the list, None when it is not in it."""
        try:
            return self.items.index(item) + 1
        except ValueError:
            return None


def _shown_field(shown: ShownList | None) -> dict[str, Any]:
    """The record's ``l`` key, or nothing when no list was shown."""
    if shown is None:
        return {}
    return {"l": [SHOWN_FORMAT, shown.generation, shown.version, shown.arm, shown.items]}


def _decode_shown(value: Any) -> ShownList | None:
    """The ``l`` field; None when absent or of a format this code does not read."""
    if type(value) is not list or not value or value[0] != SHOWN_FORMAT:
        return None
    try:
        _, generation, version, arm, items = value
        return ShownList(int(generation), str(version), str(arm), tuple(map(str, items)))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"unreadable user state: bad shown list ({exc!r})") from exc


@dataclass(slots=True)
class UserState:
    """One user's state: newest interactions and newest event ids (both oldest first),
    the items the history cap dropped, and when the user last forgot.

    ``history`` and ``seen_items`` never share an item: together they are every
    item the user interacted with since their last forget, which is what a list
    must never offer them again.
    """

    history: list[Interaction] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    seen_items: list[str] = field(default_factory=list)
    """Sorted, unique; grows with the user's lifetime (an id per item, not per event)."""
    forgotten_at: int = 0
    """Epoch ms of the user's newest forget, 0 for never: every event of the user at or
    before it is dropped, in whatever order it arrives. A state with an empty history
    and ``forgotten_at`` set is a forget marker: no user, as far as lists and the
    retrain snapshot go."""
    shown: ShownList | None = None
    """The top of the list last written for the user (None before one, after a forget)."""
    interim: dict[str, InterimContribution] = field(default_factory=dict)
    """Per item the model did not know when the user last interacted with it, the
    contribution the user made to its statistics then (:mod:`schemas.interim`): what
    the next event on the item, or a forget, takes back."""

    @property
    def newest_ts(self) -> int:
        """Timestamp (epoch ms) of the newest interaction kept; 0 when there is none."""
        return self.history[-1].ts if self.history else 0

    @property
    def is_marker(self) -> bool:
        """Whether this is a forget marker (no history left): a user that does not exist."""
        return not self.history

    def copy(self) -> UserState:
        """A state the caller may change without touching this one.

        The lists are new, their rows shared: :class:`Interaction` rows and ids
        are immutable, and every change (:meth:`apply`, :meth:`forget`) goes
        through the lists. Three list copies cost about a microsecond, against
        tens for :func:`decode`: what lets the worker keep decoded states in
        memory and hand a batch copies it may throw away if the batch fails.
        """
        return UserState(
            list(self.history),
            list(self.event_ids),
            list(self.seen_items),
            self.forgotten_at,
            self.shown,
            dict(self.interim),
        )

    def forget(self, ts: int) -> None:
        """Forget everything at or before ``ts`` (epoch ms), and remember that time.

        A forget that arrives after newer events (topics are not ordered among
        themselves) keeps those newer interactions: they started a new history.
        A forget at or before the last one (a redelivery, a replay) changes
        nothing: everything it covers is gone already, and the items the cap
        dropped since then are the new history's, kept in ``seen_items``.
        """
        if ts <= self.forgotten_at:
            return
        self.forgotten_at = ts
        self.shown = None
        self.interim = {}
        cutoff = self.forgotten_at
        self.history = [i for i in self.history if i.ts > cutoff]
        self.seen_items = []
        if not self.history:
            self.event_ids = []

    def items(self) -> set[str]:
        """Every item the user interacted with since their last forget."""
        return {i.item_id for i in self.history}.union(self.seen_items)

    def apply(self, event: InteractionEvent, history_length: int, dedupe_window: int) -> bool:
        """Add ``event`` unless its id was seen; False for a duplicate.

        The history is kept in event-time order so that "newest kept" means the
        newest by ``ts`` even when events arrive out of order. Interactions the
        cap of ``history_length`` drops leave their item in ``seen_items``
        (unless the item is still in the kept history); an item the user comes
        back to leaves ``seen_items`` again, since the history holds it.
        """
        if event.event_id in self.event_ids:
            return False
        interaction = Interaction.of(event)
        history = self.history
        position = len(history)
        while position and history[position - 1].ts > interaction.ts:
            position -= 1
        history.insert(position, interaction)
        excess = max(0, len(history) - history_length)
        dropped = history[:excess]
        del history[:excess]
        seen_items = self.seen_items
        if seen_items and position >= excess:  # the new interaction is kept
            _discard(seen_items, interaction.item_id)
        if dropped:
            # Item ids by a C-level scan: a full history drops a row per event, and
            # building a set of the kept ids for it cost as much as the rest of apply.
            for old in dropped:
                if old.item_id not in map(_ITEM_ID, history):
                    _add(seen_items, old.item_id)
        self.event_ids.append(event.event_id)
        del self.event_ids[: max(0, len(self.event_ids) - dedupe_window)]
        return True


#: A history row's item id (rows are tuples: a C-level getter).
_ITEM_ID = itemgetter(0)


def _add(items: list[str], item: str) -> None:
    """Insert ``item`` into the sorted unique ``items``, unless it is there."""
    at = bisect_left(items, item)
    if at == len(items) or items[at] != item:
        items.insert(at, item)


def _discard(items: list[str], item: str) -> None:
    """Remove ``item`` from the sorted unique ``items``, if it is there."""
    at = bisect_left(items, item)
    if at < len(items) and items[at] == item:
        del items[at]


@dataclass(frozen=True, slots=True)
class HistoryColumns:
    """A record's history by column, as decoded (see the module doc's ``h``)."""

    items: list[str]
    kinds: str
    """One letter per row: ``w`` watch, ``r`` rate."""
    values: list[float]
    durations: list[float | None]
    ts: list[int]

    def __len__(self) -> int:
        return len(self.items)


def encode(state: UserState) -> bytes:
    """The changelog value of a user's state (format 4, see the module doc).

    The columns come from one C-level transpose (``zip(*history)``) and are
    coded by :mod:`schemas.columns`: the worker encodes every changed user of
    every batch, whose histories run from one row to thousands.
    """
    history = state.history
    n = len(history)
    items, kinds, values, durations, ts = zip(*history, strict=True) if history else ((),) * 5
    out = bytearray((FORMAT,))
    _put_uint(out, state.forgotten_at)
    _put_uint(out, n)
    _put_text(out, _joined(items, "item id"))
    out += encode_columns(kinds, ts, values, durations)
    _put_uint(out, len(state.event_ids))
    _put_text(out, _joined(state.event_ids, "event id"))
    _put_uint(out, len(state.seen_items))
    _put_text(out, _joined(state.seen_items, "item id"))
    shown = _shown_field(state.shown)
    _put_blob(out, orjson.dumps(shown["l"]) if shown else b"")
    if state.interim:
        _put_blob(out, orjson.dumps([INTERIM_FORMAT, state.interim]))
    return bytes(out)


def decode(raw: bytes) -> UserState:
    """Inverse of :func:`encode` (formats 1 to 3 too); ``ValueError`` saying why when bad."""
    if raw[:1] == _BINARY:
        reader = _Reader(raw)
        cols = reader.columns()
        event_ids = reader.texts()
        seen_items = reader.texts()
        shown = reader.blob()
        interim = _trailing_interim(reader)
        reader.done()
        forgotten_at = reader.forgotten_at
        doc = {"l": _json(bytes(shown))} if len(shown) else {}
    else:
        doc = _load(raw)
        version = doc["v"]
        cols = _columns(doc)
        event_ids = _field(doc, "s", list)
        seen_items = _field(doc, "x", list, []) if version >= 2 else []
        forgotten_at = _field(doc, "f", int, 0) if version >= 2 else 0
        interim = {}
    try:
        history = list(
            map(
                Interaction,
                cols.items,
                [_KIND_NAME[k] for k in cols.kinds],
                cols.values,
                cols.durations,
                cols.ts,
            )
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"unreadable user state: bad history ({exc!r})") from exc
    return UserState(
        history, event_ids, seen_items, forgotten_at, _decode_shown(doc.get("l")), interim
    )


_BINARY = bytes((FORMAT,))


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"unreadable user state: bad shown list ({exc})") from exc


def _joined(texts: Any, what: str) -> bytes:
    """``texts`` newline-joined as UTF-8; ``ValueError`` for a text holding a newline."""
    joined = "\n".join(texts)
    if texts and joined.count("\n") != len(texts) - 1:
        raise ValueError(f"an {what} holds a newline: the state record cannot store it")
    return joined.encode()


def _put_uint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError(f"the state record stores no negative count or time ({value})")
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_blob(out: bytearray, blob: bytes) -> None:
    _put_uint(out, len(blob))
    out += blob


_put_text = _put_blob


class _Reader(Cursor):
    """Reads a format-4 record front to back, checking each part as it goes."""

    def __init__(self, raw: bytes) -> None:
        super().__init__(memoryview(raw), 1)
        self.forgotten_at = self.uint()

    def uint(self) -> int:
        value, shift = 0, 0
        raw = self.raw
        while True:
            if self.at >= len(raw):
                raise ValueError("unreadable user state: the record ends early")
            byte = raw[self.at]
            self.at += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def blob(self) -> memoryview:
        return self.take(self.uint())

    def split(self, count: int) -> list[str]:
        text = self.blob()
        if count == 0:
            if len(text):
                raise ValueError("unreadable user state: text where none was counted")
            return []
        parts = bytes(text).decode().split("\n")
        if len(parts) != count:
            raise ValueError(f"unreadable user state: {len(parts)} ids where {count} were counted")
        return parts

    def texts(self) -> list[str]:
        return self.split(self.uint())

    def columns(self) -> HistoryColumns:
        n = self.uint()
        items = self.split(n)
        kinds, ts, values, durations = decode_columns(self, n)
        return HistoryColumns(items, kinds, values, durations, ts)

    @property
    def more(self) -> bool:
        """Whether bytes remain (an optional trailing field)."""
        return self.at < len(self.raw)

    def done(self) -> None:
        if self.at != len(self.raw):
            raise ValueError("unreadable user state: bytes after the record's end")


def history_columns(raw: bytes) -> HistoryColumns:
    """A record's history without building a :class:`UserState`; empty for a forget marker.

    The retrain job's path: it reads a whole changelog into columns, and
    building an :class:`Interaction` per row first would take as long as the
    read itself. Checks the record's layout as :func:`decode` does.
    """
    if raw[:1] == _BINARY:
        return _Reader(raw).columns()
    return _columns(_load(raw))


def _load(raw: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"unreadable user state: not JSON ({exc})") from exc
    if type(doc) is not dict:
        raise ValueError(f"unreadable user state: a JSON {type(doc).__name__}, not an object")
    if doc.get("v") not in READABLE_FORMATS:
        raise ValueError(f"unreadable user state: unknown format {doc.get('v')!r}")
    return doc


def _columns(doc: dict[str, Any]) -> HistoryColumns:
    """The ``h`` field of a loaded record of any readable format, by column."""
    if doc["v"] >= 3:
        h = _field(doc, "h", dict)
        try:
            cols = HistoryColumns(h["i"], h["k"], h["v"], h["d"], h["t"])
        except KeyError as exc:
            raise ValueError(f"unreadable user state: history lacks column {exc}") from exc
        n = len(cols.items)
        if not (
            type(cols.kinds) is str
            and len(cols.kinds) == len(cols.values) == len(cols.durations) == len(cols.ts) == n
        ):
            raise ValueError("unreadable user state: history columns differ in length")
        return cols
    rows = _field(doc, "h", list)
    try:
        return HistoryColumns(
            [r[0] for r in rows],
            "".join([KIND_LETTERS[r[1]] for r in rows]),
            [r[2] for r in rows],
            [r[3] for r in rows],
            [r[4] for r in rows],
        )
    except (IndexError, KeyError, TypeError) as exc:
        raise ValueError(f"unreadable user state: bad history row ({exc!r})") from exc


def _trailing_interim(reader: _Reader) -> dict[str, InterimContribution]:
    """The optional last field; bytes that are not one are bytes after the record's end."""
    if not reader.more:
        return {}
    try:
        return _decode_interim(reader.blob())
    except ValueError:
        raise ValueError("unreadable user state: bytes after the record's end") from None


def _decode_interim(blob: memoryview) -> dict[str, InterimContribution]:
    """The optional trailing field of interim contributions; a format this code does not
    read reads as none (as ``l`` does)."""
    try:
        value = orjson.loads(bytes(blob))
        if value[0] != INTERIM_FORMAT:
            return {}
        return {
            str(item): (str(v), float(c), tuple(float(e) for e in x))
            for item, (v, c, x) in value[1].items()
        }
    except (orjson.JSONDecodeError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"unreadable user state: bad interim contributions ({exc!r})") from exc


def changelog_topic(app_id: str) -> str:
    """The changelog topic of the worker's state table (Faust's naming): the retrain's snapshot."""
    return f"{app_id}-{STATE_TABLE}-changelog"


def _field(doc: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    value = doc.get(key, default)
    if value is None or type(value) is not kind:
        raise ValueError(
            f"unreadable user state: field {key!r} is {value!r:.40}, expected a {kind.__name__}"
        )
    return value
