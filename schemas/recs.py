"""The Redis contract between the worker (writer) and the API (reader).

Keys, all under the configurable prefix ``P`` (``FRESHREC_KEY_PREFIX``):

``P recs:<user_id>``
    A hash for one user's list, with these fields:

    ``data``
        the list, in one of two formats told apart by its first byte (below);
        the API reads this one field with one ``HGET``.
    ``order``
        ``"<newest event ts ms>|~<pointer generation>|<model version>"``
        (:func:`order_token`); a writer replaces the list only when its own
        order string is not smaller, compared in one atomic script, so a replay
        or a late zombie worker never rolls a user back, while a list made after
        the model pointer moved (a publish, and a rollback to an older version
        too) does win for the same events.
    ``recent``
        the user's own newest items, beside the list (its own codec:
        :mod:`schemas.recent`); written in the same compare-and-set as the
        list, absent from lists of workers that predate it. The API reads it
        only when a request asks (``?recent=n``).
``P popular``
    The same hash shape holding the popular fallback (``user`` is null,
    ``source`` is ``"popular"``), always JSON.
``P items:<model version>``
    A string: the model version's item ids in index order, as a JSON array
    (:func:`encode_items`), which compact lists index into. The worker writes
    it when it adopts the version and again after Redis lost its data (both
    before it writes a list made with the version); it is never changed, as a
    version's items never are. The API reads it once per version per process
    and keeps it in memory, so a request stays one ``HGET`` of one key (one
    round trip to one node on a Redis Cluster). The jobs that prune model
    versions delete the tables of versions the store no longer holds
    (:mod:`retrain.item_tables`).
``P similar:<model version>``
    A hash: item id -> the item's nearest neighbours by the version's item
    factors (cosine, :mod:`models.similar`), best first, each with its score,
    in the compact format below (``source`` ``personal``, no explanations,
    ``updated_at`` 0), indexing into ``P items:<model version>``. Written for
    every item when the version is published, before the pointer moves to it
    (:mod:`retrain.similar_lists`); deleted with the version when it is pruned
    (:mod:`retrain.item_tables`). The API reads one field per request.
``P epoch``
    A string: a random token that names the data Redis holds now. The first
    worker to find it missing writes it; a Redis that restarted empty or was
    flushed loses it with the lists, so a worker that finds a token other than
    the one it saw last knows its lists are gone and writes them again. The
    API never reads it.
``P epoch:{<tag>}``
    On a Redis Cluster, one such token per primary: the lists are spread over
    the primaries and one node can restart empty alone, so each primary holds
    a token of its own, under the first hash tag (``0``, ``1``, ...) whose slot
    it serves (:func:`epoch_key` with ``tag``). The worker's epoch is all of
    them together.

The ``order`` comparison means "newer" through the pointer's generation, not
the version id: ids sort in creation order, which a rollback goes against.

The ``data`` field has two formats, and readers take both, so that lists of
either kind coexist while workers are upgraded and until each list is written
again:

1. JSON (:func:`encode`): ``{"user", "source", "model_version", "updated_at",
   "written_at", "items": [{"item", "score", "because"?, "source"?}, ...]}``
   (an entry's ``source``, ``fold`` or ``content``, marks an item the model
   version does not know: :mod:`schemas.interim`). Lists made
   without a model (``model_version`` null: the worker's popularity before any
   model exists) and ``P popular`` are written so; older workers wrote every
   list so. About 6 KB for 150 items.
2. Compact (:class:`ItemTable`), first byte ``0x02``: a binary header and
   columns of item indices into ``P items:<model version>``, float16 scores
   and explanations. Every list a model ranked is written so: 800-1,000
   bytes for 150 items, which with the hash's own overhead is 1.2-1.4 KB of
   Redis memory per user against 6-12 KB as JSON (``loadtests/bench_api.py``,
   ``loadtests/bench_memory.py``). The hash is past
   ``hash-max-listpack-value`` (64 bytes), so Redis keeps it as a hash
   table: about 340 bytes over the list, which a listpack or a plain string
   would cut by 100, not worth a key type that older workers' lists and the
   ``order`` compare-and-set do not share.

This module is the one codec of the ``data`` field, for both sides: the plain
:func:`encode` and :func:`decode`, and the fast paths. The worker writes a
batch's compact lists from the model's index arrays (:meth:`ItemTable.encode`,
a few numpy calls per batch and one ``bytes.join`` per list). The API parses
only the head of a stored list (:func:`parse_head`, :func:`parse_compact`):
parsing all 150 items into Python objects was most of a request's cost when
only ``k`` are served.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

if TYPE_CHECKING:
    import numpy as np

Source = Literal["personal", "popular"]
#: Which arm of a canary release made a list: ``current`` (also every list outside a
#: canary, and every list written before variants existed) or ``canary``.
Variant = Literal["current", "canary"]

DATA_FIELD = "data"
ORDER_FIELD = "order"


def user_key(prefix: str, user_id: str) -> str:
    """Redis key of one user's list."""
    return f"{prefix}recs:{user_id}"


def popular_key(prefix: str) -> str:
    """Redis key of the popular fallback list."""
    return f"{prefix}popular"


def similar_key(prefix: str, model_version: str) -> str:
    """Redis key of a model version's similar-item lists (see the module doc)."""
    return f"{prefix}similar:{model_version}"


def epoch_key(prefix: str, tag: str | None = None) -> str:
    """Redis key of the token that names the data Redis holds now (see the module doc);
    with ``tag``, one primary's token on a Redis Cluster."""
    return f"{prefix}epoch" if tag is None else f"{prefix}epoch:{{{tag}}}"


#: Marks an order token that carries a pointer generation (format 2). It sorts
#: after every character a version id starts with, so at the same event time a
#: list with a generation replaces one written before generations existed.
_GENERATION_MARK = "~"


def order_token(newest_event_ts: int, model_version: str | None, generation: int = 0) -> str:
    """The string a writer compares to decide whether its list is newer than the stored one.

    ``"<newest event ts ms, 15 digits>|~<pointer generation, 12 digits>|<model version>"``:
    the newest event first, then the generation of the model pointer the list was
    made under (:class:`freshrec.model_store.Pointer`), which every publish,
    rollback, promote or abort raises, so a list made after a rollback replaces one
    made before it although its version id is older. The version only names the
    model. Numbers are zero-padded so that string order equals numeric order.
    Tokens written before generations (``"<ts>|<model version>"``) sort below any
    token of the same event time with one.
    """
    return (
        f"{max(0, newest_event_ts):015d}|{_GENERATION_MARK}{generation:012d}|{model_version or ''}"
    )


def order_model_version(token: str) -> str | None:
    """The model version an :func:`order_token` names (None for a list made without a model)."""
    rest = token.partition("|")[2]
    if rest.startswith(_GENERATION_MARK):
        rest = rest.partition("|")[2]
    return rest or None


def order_generation(token: str) -> int | None:
    """The pointer generation an :func:`order_token` names; None for a token written
    before generations (or one that is not a token)."""
    rest = token.partition("|")[2]
    if not rest.startswith(_GENERATION_MARK):
        return None
    digits = rest[1:].partition("|")[0]
    return int(digits) if digits.isdigit() else None


@dataclass(frozen=True, slots=True)
class RecItem:
    """One recommended item; ``because`` is the history item that contributed most."""

    item: str
    score: float
    because: str | None = None


@dataclass(frozen=True, slots=True)
class RecList:
    """A user's ranked list as stored in Redis and served by the API.

    ``updated_at`` is the timestamp (epoch ms) of the newest event the list
    includes; ``written_at`` is when the writer stored it (epoch ms), so
    ``written_at - updated_at`` is the list's freshness lag.
    """

    user: str | None
    source: Source
    model_version: str | None
    updated_at: int
    written_at: int
    items: tuple[RecItem, ...] = field(default_factory=tuple)
    generation: int = 0
    """The model pointer's generation the list was made under (its ``order``, not its data)."""
    variant: Variant = "current"

    @property
    def order(self) -> str:
        return order_token(self.updated_at, self.model_version, self.generation)


def _item_dict(item: RecItem) -> dict[str, Any]:
    out: dict[str, Any] = {"item": item.item, "score": item.score}
    if item.because is not None:
        out["because"] = item.because
    return out


def envelope(
    user: str | None,
    source: Source,
    model_version: str | None,
    updated_at: int | None,
    written_at: int | None,
    items: list[Any],
    variant: Variant = "current",
) -> dict[str, Any]:
    """A list's JSON object around already-built ``items``: the one place its fields are named.

    The fast encoders and the API's renderer build their items their own way
    for speed, and wrap them with this, so the stored value and the response
    body cannot drift apart from :func:`encode`.
    """
    return {
        "user": user,
        "source": source,
        "model_version": model_version,
        "updated_at": updated_at,
        "written_at": written_at,
        "variant": variant,
        "items": items,  # last: parse_head reads the envelope before it
    }


def to_dict(recs: RecList) -> dict[str, Any]:
    """The list as a JSON-ready dict (the API's response body starts from this)."""
    return envelope(
        recs.user,
        recs.source,
        recs.model_version,
        recs.updated_at,
        recs.written_at,
        [_item_dict(i) for i in recs.items],
        recs.variant,
    )


def encode(recs: RecList) -> bytes:
    """Serialise for the ``data`` field."""
    return orjson.dumps(to_dict(recs))


def decode(
    data: bytes | str, names: Sequence[str] | None = None, user: str | None = None
) -> RecList:
    """Parse a ``data`` field of either format; raises ``ValueError`` on garbage.

    A compact list (:class:`ItemTable`) needs ``names``, its model's item table
    (:func:`compact_version` names the model, :func:`items_key` the table's
    key), and does not store its user (the key names it): its ``user`` is
    ``user``. A JSON list (:func:`encode`) needs neither.
    """
    if isinstance(data, bytes) and data[:1] == _COMPACT_BYTE:
        if names is None:
            raise ValueError("a compact list: decoding it needs its model's item table")
        doc = parse_compact(data, names)
        doc["user"] = user
    else:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not a freshrec list: {exc}") from exc
    try:
        items = tuple(
            RecItem(str(i["item"]), float(i["score"]), i.get("because")) for i in doc["items"]
        )
        return RecList(
            user=doc["user"],
            source=doc["source"],
            model_version=doc["model_version"],
            updated_at=int(doc["updated_at"]),
            written_at=int(doc["written_at"]),
            items=items,
            variant=_VARIANTS[doc.get("variant", "current")],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a freshrec list: {exc}") from exc


def encode_list(
    user: str | None,
    source: Source,
    model_version: str | None,
    updated_at: int,
    written_at: int,
    items: Sequence[str],
    scores: Sequence[float],
    because: Sequence[str | None],
) -> bytes:
    """:func:`encode` of the list of these parallel columns, without building a :class:`RecList`."""
    entries: list[dict[str, Any]] = [
        {"item": i, "score": s} if b is None else {"item": i, "score": s, "because": b}
        for i, s, b in zip(items, scores, because, strict=True)
    ]
    return orjson.dumps(envelope(user, source, model_version, updated_at, written_at, entries))


#: The stored ``variant`` values, each to itself (a lookup that refuses any other).
_VARIANTS: dict[str, Variant] = {"current": "current", "canary": "canary"}


def variant_of(doc: dict[str, Any]) -> Variant:
    """A parsed list's ``variant`` (``current`` for lists written before variants);
    ``KeyError`` for an unknown one."""
    return _VARIANTS[doc.get("variant", "current")]


#: The first byte of a compact list (:class:`ItemTable`): the format's version. A
#: JSON list (:func:`encode`, format 1) starts with ``{``, so one byte tells them apart.
COMPACT_FORMAT = 2
_COMPACT_BYTE = bytes([COMPACT_FORMAT])

#: A compact list's header: format, flags, item count, explanation-table size,
#: ``updated_at``, ``written_at``, and the length of the model version's UTF-8
#: bytes, which follow it.
_HEAD = struct.Struct("<BBHHqqB")
#: Header flags: the source is ``personal`` (else ``popular``); the scores are
#: float32 (else float16); the item indices are uint32 (else uint16); the
#: explanation slots are uint16 (else uint8); the list is a canary's (variant
#: ``canary``, else ``current``; lists written before canaries never set it).
_PERSONAL, _SCORES_F32, _INDEX_U32, _BECAUSE_U16, _CANARY = 1, 2, 4, 8, 16
_FLAGS = _PERSONAL | _SCORES_F32 | _INDEX_U32 | _BECAUSE_U16 | _CANARY
#: An explanation slot meaning "no explanation", for uint8 and uint16 slots.
NO_BECAUSE_U8, NO_BECAUSE_U16 = 0xFF, 0xFFFF
#: The most items a model may have for uint16 item indices.
_U16_ITEMS = 1 << 16


def items_key(prefix: str, model_version: str) -> str:
    """Redis key of a model version's item table (see the module doc)."""
    return f"{prefix}items:{model_version}"


def encode_items(ids: Sequence[str]) -> bytes:
    """A model version's item ids, in index order, for ``P items:<version>``."""
    return orjson.dumps(list(ids))


def decode_items(data: bytes | str) -> list[str]:
    """Parse an item table written by :func:`encode_items`; raises ``ValueError`` on garbage."""
    try:
        ids = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not a freshrec item table: {exc}") from exc
    if type(ids) is not list or any(type(i) is not str for i in ids):
        raise ValueError("not a freshrec item table: not a list of ids")
    return ids


class ItemTable:
    """One model version's item ids, and the encoder of lists ranked with it in the
    compact format (format 2): the worker's fast path.

    A compact list is the header (:data:`_HEAD`, then the model version), then
    four columns: the list's distinct explanation items (indices into the
    model's item table), the items' indices, their scores, and per item its
    explanation's place in that small table (:data:`NO_BECAUSE_U8` for none).
    Item indices are uint16 when the model has at most 65,536 items, else
    uint32; scores are float16 (about three significant digits, plenty for a
    score whose rank the order already carries) unless one of the list's
    scores is beyond float16's range, then float32; explanation slots are
    uint8 unless the list explains with more than 254 distinct items. A
    150-item list is 800-1,000 bytes, against 6-12 KB as JSON.

    numpy is imported here, not with the module: the API reads lists with this
    module and has no other use for numpy (a process's worth of memory and
    start time).
    """

    def __init__(self, version: str, ids: Sequence[str]) -> None:
        import numpy as np

        self.version = version
        self.ids = ids
        self._version = version.encode()
        if not 0 < len(self._version) < 256:
            raise ValueError(f"a model version of 1 to 255 bytes, not {version!r}")
        self._index = np.dtype("<u2" if len(ids) <= _U16_ITEMS else "<u4")
        self._index_flag = 0 if len(ids) <= _U16_ITEMS else _INDEX_U32

    def encode(
        self,
        items: np.ndarray,
        scores: np.ndarray,
        because: np.ndarray,
        rows: np.ndarray,
        updated_at: Sequence[int],
        written_at: int,
        source: Source = "personal",
        variant: Variant = "current",
    ) -> list[bytes | None]:
        """Per row of the ``(users, k)`` arrays, its whole compact list (None where ``rows``
        is False), stamped with the row's ``updated_at``.

        ``items`` and ``because`` index the ids given at construction (``-1``:
        an unfilled slot, which only trails a row; no explanation). Each column
        of the whole batch is converted with one numpy call and a list is one
        ``bytes.join`` of slices of those buffers.
        """
        import numpy as np

        n_users, k = items.shape
        out: list[bytes | None] = [None] * n_users
        wanted = np.flatnonzero(rows).tolist()
        if not wanted:
            return out
        if k >= _U16_ITEMS:
            raise ValueError(f"a list holds at most {_U16_ITEMS - 1} items, not {k}")
        width = self._index.itemsize
        filled = items >= 0
        counts = filled.sum(axis=1).tolist()
        index = np.where(filled, items, 0).astype(self._index).tobytes()
        values = np.where(filled, scores, 0.0).astype("<f4")
        with np.errstate(over="ignore"):
            half = values.astype("<f2")
        single_rows = (~np.isfinite(half) & np.isfinite(values)).any(axis=1).tolist()
        halves, singles = half.tobytes(), values.tobytes()
        # Each row's distinct explanations, sorted, and each slot's place among them:
        # a row-wise sort (ids past the catalogue for "none", sorted last), the
        # starts of runs, their running count put back in slot order.
        beyond = len(self.ids)
        keyed = np.where(filled & (because >= 0), because, beyond)
        if beyond < _U16_ITEMS:  # numpy sorts uint16 by radix: 4x faster than int64
            order = np.argsort(keyed.astype(np.uint16), axis=1, kind="stable")
        else:
            order = np.argsort(keyed, axis=1)
        ranked = np.take_along_axis(keyed, order, axis=1)
        explained = ranked < beyond
        first = explained.copy()
        first[:, 1:] &= ranked[:, 1:] != ranked[:, :-1]
        place = np.where(explained, np.cumsum(first, axis=1) - 1, -1)
        slots = np.empty_like(place)
        np.put_along_axis(slots, order, place, axis=1)
        sizes = first.sum(axis=1)
        table = ranked[first].astype(self._index).tobytes()
        starts = [0, *np.cumsum(sizes).tolist()]
        narrow = np.where(slots < 0, NO_BECAUSE_U8, slots).astype(np.uint8).tobytes()
        wide_rows = (sizes >= NO_BECAUSE_U8).tolist()
        wide = (
            np.where(slots < 0, NO_BECAUSE_U16, slots).astype("<u2").tobytes()
            if any(wide_rows)
            else b""
        )
        flags = self._index_flag | (_PERSONAL if source == "personal" else 0)
        flags |= _CANARY if variant == "canary" else 0
        pack = _HEAD.pack
        version = self._version
        for row in wanted:
            n, at = counts[row], row * k
            low, high = starts[row], starts[row + 1]
            head = flags
            if single_rows[row]:
                head |= _SCORES_F32
                score_bytes = singles[4 * at : 4 * (at + n)]
            else:
                score_bytes = halves[2 * at : 2 * (at + n)]
            if wide_rows[row]:
                head |= _BECAUSE_U16
                slot_bytes = wide[2 * at : 2 * (at + n)]
            else:
                slot_bytes = narrow[at : at + n]
            out[row] = b"".join(
                (
                    pack(
                        COMPACT_FORMAT,
                        head,
                        n,
                        high - low,
                        updated_at[row],
                        written_at,
                        len(version),
                    ),
                    version,
                    table[width * low : width * high],
                    index[width * at : width * (at + n)],
                    score_bytes,
                    slot_bytes,
                )
            )
        return out


def compact_version(data: bytes) -> str | None:
    """The model version whose item table decodes this compact list; None for a JSON list.

    Raises ``ValueError`` for a compact list cut short.
    """
    if data[:1] != _COMPACT_BYTE:
        return None
    end = _HEAD.size + data[_HEAD.size - 1] if len(data) >= _HEAD.size else 0
    if len(data) < end or not end:
        raise ValueError("a compact list cut short")
    try:
        return data[_HEAD.size : end].decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"a compact list's model version is not UTF-8: {exc}") from exc


def parse_compact(data: bytes, names: Sequence[str], n: int | None = None) -> dict[str, Any]:
    """A compact list as ``orjson.loads`` returns its JSON form (``user`` null), with its
    first ``n`` items (all when None); ``names`` is its model's item table.

    float16 scores come back as the shortest decimal that is the same float16
    (``0.835``, not ``0.8349609375``). Raises ``ValueError`` for a list that is
    not what :class:`ItemTable` writes, or whose indices ``names`` lacks.
    """
    try:
        fmt, flags, count, size, updated_at, written_at, length = _HEAD.unpack_from(data)
        start = _HEAD.size + length
        if fmt != COMPACT_FORMAT or flags & ~_FLAGS:
            raise ValueError(f"format {fmt}, flags {flags}")
        index, width = ("I", 4) if flags & _INDEX_U32 else ("H", 2)
        score_width = 4 if flags & _SCORES_F32 else 2
        slot, slot_width, none = ("H", 2, NO_BECAUSE_U16) if flags & _BECAUSE_U16 else ("B", 1, 255)
        if len(data) != start + size * width + count * (width + score_width + slot_width):
            raise ValueError(f"{len(data)} bytes for {count} items")
        m = count if n is None else min(n, count)
        table = _column(size, index).unpack_from(data, start)
        at = start + size * width
        ids = _column(m, index).unpack_from(data, at)
        at += count * width
        if score_width == 4:
            scores: Sequence[float] = _column(m, "f").unpack_from(data, at)
        else:
            halves = _HALVES
            scores = [
                half if (half := halves[bits]) is not None else _half(bits)
                for bits in _column(m, "H").unpack_from(data, at)
            ]
        at += count * score_width
        items: list[dict[str, Any]] = [
            {"item": names[i], "score": score}
            if place == none
            else {"item": names[i], "score": score, "because": names[table[place]]}
            for i, score, place in zip(
                ids, scores, _column(m, slot).unpack_from(data, at), strict=True
            )
        ]
        version = data[_HEAD.size : start].decode()
    except (struct.error, IndexError, ValueError) as exc:
        raise ValueError(f"not a freshrec compact list: {exc}") from exc
    source: Source = "personal" if flags & _PERSONAL else "popular"
    variant: Variant = "canary" if flags & _CANARY else "current"
    return envelope(None, source, version, updated_at, written_at, items, variant)


#: Compiled little-endian formats of ``n`` values of one type, by ``(n, code)``: a
#: request reads ``k + len(exclude)`` of a list's columns, so a process needs a few
#: hundred at most (``n`` is at most a list's length).
_COLUMNS: dict[tuple[int, str], struct.Struct] = {}


def _column(n: int, code: str) -> struct.Struct:
    column = _COLUMNS.get((n, code))
    if column is None:
        column = _COLUMNS[n, code] = struct.Struct(f"<{n}{code}")
    return column


#: Per float16 bit pattern, the shortest float that reads back as that float16
#: (filled as met: a list's scores use few of the 65,536).
_HALVES: list[float | None] = [None] * (1 << 16)


def _half(bits: int) -> float:
    value = _HALVES[bits]
    if value is None:
        packed = bits.to_bytes(2, "little")
        value = exact = struct.unpack("<e", packed)[0]
        if math.isfinite(exact):
            for digits in range(1, 6):
                near = float(f"{exact:.{digits}g}")
                try:
                    if struct.pack("<e", near) == packed:
                        value = near
                        break
                except OverflowError:
                    continue
        _HALVES[bits] = value
    return value


#: How :func:`encode` (orjson, compact) writes the start of the items array.
_ITEMS_KEY = b'"items":['
#: The fields around the items, as :func:`envelope` names them.
#: (``variant`` is not required: lists written before it lack it.)
_ENVELOPE = tuple(
    k for k in envelope(None, "popular", None, None, None, []) if k not in ("items", "variant")
)


def parse_head(data: bytes, n: int) -> Any:
    """The stored list as ``orjson.loads`` returns it, but usually with only its first ``n`` items.

    Item and explanation ids are event-contract ids (no braces, quotes or
    backslashes), so each item :func:`encode` writes ends at the next ``}``.
    Anything unexpected (other spacing, another key order, a brace inside a
    string, a list shorter than ``n``) makes a slice that is not valid JSON,
    lacks a key, or holds fewer than ``n`` items (the ``n`` braces were not all
    item ends), and the whole document is parsed instead (all items, still in
    order): never a wrong answer, only a slower one. Raises what
    ``orjson.loads`` raises on garbage.
    """
    start = data.find(_ITEMS_KEY)
    if start < 0:
        return orjson.loads(data)
    items_text = data[start + len(_ITEMS_KEY) :]
    pieces = items_text.split(b"}", n)
    if len(pieces) <= n:
        return orjson.loads(data)
    try:
        head = orjson.loads(data[:start] + b'"items":[]}')
        items = orjson.loads(b"[" + items_text[: len(items_text) - len(pieces[-1])] + b"]")
    except orjson.JSONDecodeError:
        return orjson.loads(data)
    if len(items) != n or type(head) is not dict or any(key not in head for key in _ENVELOPE):
        return orjson.loads(data)
    head["items"] = items
    return head
