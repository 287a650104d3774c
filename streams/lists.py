"""Turn a batch of user states into their encoded lists: one batched fold-in for the whole batch.

With a model, every user of the batch goes through a single
:meth:`Recommender.rank` call (one batched solve, one matrix product, seen
items masked, top-k with explanations), their events combined with the
model's own weighting rule (the one it was trained with). Without one, each
user gets the worker's local popularity, marked ``source="popular"``.

A list never holds an item the user interacted with: the history's items,
and the items the history cap dropped (``UserState.seen_items``), are left
out of personal and popular lists alike.

Lists come out already encoded, in exactly the bytes :func:`schemas.recs.encode`
writes (tests hold the two together). A personal list is assembled from the
model's index arrays (:meth:`Recommender.rank`) and per-item JSON fragments made
once per model version: the scores of the whole batch are formatted by one
``orjson`` call, and a list is one ``bytes.join`` of its fragments. Building a
dict per item (150 per user) and serialising it took as long as the fold-in,
top-k and explanations together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from models.recommender import Ranking, Recommender
from models.weighting import user_confidences
from schemas.recs import Source, envelope, order_token
from schemas.state import UserState
from streams.model_follower import ModelFollower
from streams.popularity import Popularity


@dataclass(frozen=True, slots=True)
class UserList:
    """One user's list ready for Redis: the ``order`` token and the ``data`` field."""

    user: str
    order: str
    data: bytes


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
    """The ``data`` field of a list, identical to ``schemas.recs.encode`` of the same list."""
    entries: list[dict[str, Any]] = [
        {"item": i, "score": s} if b is None else {"item": i, "score": s, "because": b}
        for i, s, b in zip(items, scores, because, strict=True)
    ]
    return orjson.dumps(envelope(user, source, model_version, updated_at, written_at, entries))


class _Fragments:
    """The JSON pieces of one model's items, made once per model version.

    ``item[i]`` opens item ``i``'s entry up to its score; ``because[j]`` closes an
    entry whose explanation is item ``j``, and ``because[-1]`` one without.
    Each closing piece ends with a comma, dropped after a list's last entry.
    """

    def __init__(self, recommender: Recommender) -> None:
        self.version = recommender.version_id
        names = recommender.item_ids.ids
        self.item = np.array(
            [b'{"item":' + orjson.dumps(name) + b',"score":' for name in names], dtype=object
        )
        self.because = np.array(
            [b',"because":' + orjson.dumps(name) + b"}," for name in names] + [b"},"],
            dtype=object,
        )


def _head(
    user: str, source: Source, version: str | None, updated_at: int, written_at: int
) -> bytes:
    """A list's bytes up to and including the ``[`` that opens its items."""
    return orjson.dumps(envelope(user, source, version, updated_at, written_at, []))[:-2]


def _unranked(
    states: Sequence[UserState], histories: Sequence[dict[str, float]]
) -> list[list[str]]:
    """Per user, the items they interacted with that their confidences leave out: those
    the history cap dropped (``seen_items``) and those of confidence 0 (skims), which
    the model's own exclusion of the history does not cover."""
    out = []
    for state, confidences in zip(states, histories, strict=True):
        zero = [i.item_id for i in state.history if i.item_id not in confidences]
        out.append(zero + state.seen_items if zero else state.seen_items)
    return out


class ListBuilder:
    """Builds users' lists of ``list_length`` items."""

    def __init__(self, list_length: int, follower: ModelFollower, popularity: Popularity) -> None:
        self._n = list_length
        self._follower = follower
        self._popularity = popularity
        self._fragments: _Fragments | None = None

    def build(
        self, users: Sequence[str], states: Sequence[UserState], written_at: int
    ) -> list[UserList]:
        """The lists of ``users`` (same order), stamped with each state's newest event."""
        if not users:
            return []
        recommender = self._follower.recommender
        if recommender is None:
            return self._popular(users, states, written_at)
        weighting = recommender.weighting
        histories = [user_confidences(state.history, weighting) for state in states]
        ranking = recommender.rank(
            histories, self._n, exclude_seen=True, exclude=_unranked(states, histories)
        )
        bodies = self._bodies(recommender, ranking)
        version = recommender.version_id
        lists = []
        for row, (user, state) in enumerate(zip(users, states, strict=True)):
            body = bodies[row]
            if body is None:  # no usable history: the model's popular list
                items, scores = recommender.fallback(ranking.seen(row), self._n)
                data = encode_list(
                    user,
                    "popular",
                    version,
                    state.newest_ts,
                    written_at,
                    items,
                    scores,
                    [None] * len(items),
                )
            else:
                head = _head(user, "personal", version, state.newest_ts, written_at)
                data = head + body
            lists.append(UserList(user, order_token(state.newest_ts, version), data))
        return lists

    def _bodies(self, recommender: Recommender, ranking: Ranking) -> list[bytes | None]:
        """Per user, the encoded items of a personal list and the closing ``]}``; None otherwise."""
        fragments = self._fragments
        if fragments is None or fragments.version != recommender.version_id:
            fragments = self._fragments = _Fragments(recommender)
        n_users, k = ranking.items.shape
        personal = ranking.personal
        out: list[bytes | None] = [None] * n_users
        if k == 0 or not personal.any():
            return [b"]}" if p else None for p in personal.tolist()]
        filled = ranking.items >= 0
        scores = np.where(filled, ranking.scores, 0.0).astype(np.float64)
        cells = np.empty((n_users, k, 3), dtype=object)
        cells[:, :, 0] = fragments.item[np.maximum(ranking.items, 0)]
        # one orjson call formats every score of the batch exactly as in a dict
        cells[:, :, 1] = np.array(
            orjson.dumps(scores.ravel().tolist())[1:-1].split(b","), dtype=object
        ).reshape(n_users, k)
        cells[:, :, 2] = fragments.because[ranking.because]
        counts = filled.sum(axis=1).tolist()
        flat = cells.reshape(n_users, 3 * k).tolist()
        for row, p in enumerate(personal.tolist()):
            if p:
                # drop the unfilled tail and the last entry's trailing comma
                out[row] = b"".join(flat[row][: 3 * counts[row]])[:-1] + b"]}"
        return out

    def _popular(
        self, users: Sequence[str], states: Sequence[UserState], written_at: int
    ) -> list[UserList]:
        # One ranking for the batch, long enough that excluding any one user's
        # history still leaves ``n`` items.
        longest = max(len(s.history) + len(s.seen_items) for s in states)
        ranked = self._popularity.top(self._n + longest)
        lists = []
        for user, state in zip(users, states, strict=True):
            seen = state.items()
            kept = [(item, score) for item, score in ranked if item not in seen][: self._n]
            data = encode_list(
                user,
                "popular",
                None,
                state.newest_ts,
                written_at,
                [item for item, _ in kept],
                [score for _, score in kept],
                [None] * len(kept),
            )
            lists.append(UserList(user, order_token(state.newest_ts, None), data))
        return lists
