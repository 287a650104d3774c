"""The Redis contract between the worker (writer) and the API (reader).

Keys, all under the configurable prefix ``P`` (``FRESHREC_KEY_PREFIX``):

``P recs:<user_id>``
    A hash for one user's list, with two fields:

    ``data``
        the :class:`RecList` as JSON (see :func:`encode`); the API reads this
        one field with one ``HGET``.
    ``order``
        ``"<newest event ts ms, 15 digits>|<model version>"``; a writer replaces
        the list only when its own order string is not smaller, compared in one
        atomic script, so a replay or a late zombie worker never rolls a user
        back, while a newer model version for the same events does win.
``P popular``
    The same hash shape holding the popular fallback (``user`` is null,
    ``source`` is ``"popular"``).
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

Model version ids sort lexicographically in creation order, which is what makes
the ``order`` comparison mean "newer".

This module is the one codec of the ``data`` field, for both sides: the plain
:func:`encode` and :func:`decode`, and two fast paths that produce and read
exactly the same bytes. The worker writes a batch's lists from index arrays
with per-model item fragments (:class:`ItemFragments`, :func:`list_head`):
building a dict per item (150 per user) and serialising it took as long as
the fold-in, top-k and explanations together. The API parses only the head
of a stored list (:func:`parse_head`): parsing all 150 items into Python
objects was most of a request's JSON cost when only ``k`` are served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

if TYPE_CHECKING:
    import numpy as np

Source = Literal["personal", "popular"]

DATA_FIELD = "data"
ORDER_FIELD = "order"


def user_key(prefix: str, user_id: str) -> str:
    """Redis key of one user's list."""
    return f"{prefix}recs:{user_id}"


def popular_key(prefix: str) -> str:
    """Redis key of the popular fallback list."""
    return f"{prefix}popular"


def epoch_key(prefix: str, tag: str | None = None) -> str:
    """Redis key of the token that names the data Redis holds now (see the module doc);
    with ``tag``, one primary's token on a Redis Cluster."""
    return f"{prefix}epoch" if tag is None else f"{prefix}epoch:{{{tag}}}"


def order_token(newest_event_ts: int, model_version: str | None) -> str:
    """The string a writer compares to decide whether its list is newer than the stored one.

    The timestamp is zero-padded so that string order equals numeric order.
    """
    return f"{max(0, newest_event_ts):015d}|{model_version or ''}"


def order_model_version(token: str) -> str | None:
    """The model version an :func:`order_token` names (None for a list made without a model)."""
    return token.partition("|")[2] or None


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

    @property
    def order(self) -> str:
        return order_token(self.updated_at, self.model_version)


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
        "items": items,
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
    )


def encode(recs: RecList) -> bytes:
    """Serialise for the ``data`` field."""
    return orjson.dumps(to_dict(recs))


def decode(data: bytes | str) -> RecList:
    """Parse a ``data`` field written by :func:`encode`; raises ``ValueError`` on garbage."""
    try:
        doc = orjson.loads(data)
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
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
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


def list_head(
    user: str | None, source: Source, model_version: str | None, updated_at: int, written_at: int
) -> bytes:
    """A list's bytes up to and including the ``[`` that opens its items.

    ``list_head(...) + body`` is a whole list, for a ``body`` from
    :meth:`ItemFragments.bodies`.
    """
    return orjson.dumps(envelope(user, source, model_version, updated_at, written_at, []))[:-2]


class ItemFragments:
    """The JSON pieces of a catalogue's items, made once per model version, from which
    :meth:`bodies` encodes a whole batch of lists given as index arrays.

    ``item[i]`` opens item ``i``'s entry up to its score; ``because[j]`` closes an
    entry whose explanation is item ``j``, and ``because[-1]`` one without.
    Each closing piece ends with a comma, dropped after a list's last entry.

    numpy is imported here, not with the module: the API reads lists with this
    module and has no other use for numpy (a process's worth of memory and
    start time).
    """

    def __init__(self, names: Sequence[str]) -> None:
        import numpy as np

        self.item = np.array(
            [b'{"item":' + orjson.dumps(name) + b',"score":' for name in names], dtype=object
        )
        self.because = np.array(
            [b',"because":' + orjson.dumps(name) + b"}," for name in names] + [b"},"],
            dtype=object,
        )

    def bodies(
        self, items: np.ndarray, scores: np.ndarray, because: np.ndarray, rows: np.ndarray
    ) -> list[bytes | None]:
        """Per row of the ``(users, k)`` arrays, the encoded items and the closing ``]}``
        of its list (None where ``rows`` is False).

        ``items`` and ``because`` index the names given at construction (``-1``:
        an unfilled slot, which only trails a row; no explanation); ``scores``
        are formatted exactly as :func:`encode` formats a float. The scores of
        the whole batch go through one ``orjson`` call, and a list is one
        ``bytes.join`` of its fragments.
        """
        import numpy as np

        n_users, k = items.shape
        out: list[bytes | None] = [None] * n_users
        if k == 0 or not rows.any():
            return [b"]}" if r else None for r in rows.tolist()]
        filled = items >= 0
        values = np.where(filled, scores, 0.0).astype(np.float64)
        cells = np.empty((n_users, k, 3), dtype=object)
        cells[:, :, 0] = self.item[np.maximum(items, 0)]
        # one orjson call formats every score of the batch exactly as in a dict
        cells[:, :, 1] = np.array(
            orjson.dumps(values.ravel().tolist())[1:-1].split(b","), dtype=object
        ).reshape(n_users, k)
        cells[:, :, 2] = self.because[because]
        counts = filled.sum(axis=1).tolist()
        flat = cells.reshape(n_users, 3 * k).tolist()
        for row, wanted in enumerate(rows.tolist()):
            if wanted:
                # drop the unfilled tail and the last entry's trailing comma
                out[row] = b"".join(flat[row][: 3 * counts[row]])[:-1] + b"]}"
        return out


#: How :func:`encode` (orjson, compact) writes the start of the items array.
_ITEMS_KEY = b'"items":['
#: The fields around the items, as :func:`envelope` names them.
_ENVELOPE = tuple(k for k in envelope(None, "popular", None, None, None, []) if k != "items")


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
