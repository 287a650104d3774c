"""Turn a batch of user states into their encoded lists: one batched fold-in for the whole batch.

With a model, every user of the batch goes through a single
:meth:`Recommender.rank` call (one batched solve, one matrix product, seen
items masked, top-k with explanations), their events combined with the
model's own weighting rule (the one it was trained with). Without one, each
user gets the worker's local popularity, marked ``source="popular"``.

A list never holds an item the user interacted with: the history's items,
and the items the history cap dropped (``UserState.seen_items``), are left
out of personal and popular lists alike.

Nor does it hold an item taken down (:attr:`ListBuilder.unavailable`, the
takedown set the worker reads with each batch: :mod:`streams.catalog`); the
API filters those at serve time anyway, within a second of the takedown, and
this keeps lists written afterwards free of them.

Each list comes with the user's own newest items (:mod:`schemas.recent`),
written beside it in the same script call, so a page can show what the list
was made from.

Lists come out already encoded. A list the model ranked is in the contract's
compact format, from the model's index arrays (:meth:`Recommender.rank`), the
whole batch at once by :meth:`schemas.recs.ItemTable.encode` (one per model
version); so is a user's popular fallback under a model. Lists made without a
model are JSON (:func:`schemas.recs.encode_list`): they name items no model
table holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from models.canary import in_canary
from models.item_foldin import merge_interim
from models.recommender import Ranking, Recommender
from models.weighting import WeightingConfig, user_confidences
from schemas.recent import encode_history as encode_recent
from schemas.recs import ItemTable, Variant, encode_list, envelope, order_token
from schemas.state import ShownList, UserState
from streams.interim import EMPTY, InterimBlock
from streams.model_follower import ModelFollower
from streams.popularity import Popularity


@dataclass(frozen=True, slots=True)
class UserList:
    """One user's list ready for Redis: the ``order`` token, the ``data`` field and the
    ``recent`` field (the user's own newest items, :mod:`schemas.recent`; empty: none)."""

    user: str
    order: str
    data: bytes
    recent: bytes = b""


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


#: Users' confidences under a weighting, from their states (same order): the
#: worker's come from its state cache (:meth:`streams.state.StateTable.confidences`).
Histories = Callable[
    [Sequence[str], Sequence[UserState], WeightingConfig], Sequence[dict[str, float]]
]


def _computed(
    users: Sequence[str], states: Sequence[UserState], weighting: WeightingConfig
) -> list[dict[str, float]]:
    return [user_confidences(state.history, weighting) for state in states]


class ListBuilder:
    """Builds users' lists of ``list_length`` items."""

    def __init__(
        self,
        list_length: int,
        follower: ModelFollower,
        popularity: Popularity,
        histories: Histories = _computed,
        shown_top: int = 0,
    ) -> None:
        self._n = list_length
        #: Items of each list noted in its user's state (``state.shown``) for the
        #: online metrics (:mod:`streams.online`); 0 notes nothing.
        self._shown_top = shown_top
        self._histories = histories
        self._follower = follower
        self._popularity = popularity
        #: The list encoders of the model versions in use (the current one, a canary).
        self._tables: dict[str, ItemTable] = {}
        #: Their item ids as numpy object arrays, for :meth:`_note_shown`.
        self._names: dict[str, np.ndarray] = {}
        #: Items taken down: left out of every list built (set before each build).
        self.unavailable: frozenset[str] = frozenset()
        #: The current version's interim items (streams.interim), ranked with the
        #: model's own (set before each build).
        self.interim: InterimBlock = EMPTY

    def build(
        self, users: Sequence[str], states: Sequence[UserState], written_at: int
    ) -> list[UserList]:
        """The lists of ``users`` (same order), stamped with each state's newest event.

        During a canary release, the users :func:`models.canary.in_canary` puts in
        the canary are ranked by the candidate and their lists marked ``canary``;
        the others by the current model, marked ``current``.

        With ``shown_top``, each state's ``shown`` becomes the top of its list (a
        list made with a model; the worker's popularity before any model is not
        measured): the caller persists it with the state, or drops it with a copy.
        """
        if not users:
            return []
        recommender = self._follower.recommender
        if recommender is None:
            return self._popular(users, states, written_at)
        canary = self._follower.canary
        in_use = {recommender.version_id} | ({canary.version_id} if canary else set())
        self._tables = {v: t for v, t in self._tables.items() if v in in_use}
        if canary is None:
            return self._ranked(recommender, "current", users, states, written_at)
        fraction = self._follower.fraction
        arms = [in_canary(user, canary.version_id, fraction) for user in users]
        built: dict[str, UserList] = {}
        arm_models: tuple[tuple[Variant, Recommender, bool], ...] = (
            ("current", recommender, False),
            ("canary", canary, True),
        )
        for variant, model, wanted in arm_models:
            rows = [row for row, arm in enumerate(arms) if arm is wanted]
            if rows:
                lists = self._ranked(
                    model,
                    variant,
                    [users[row] for row in rows],
                    [states[row] for row in rows],
                    written_at,
                )
                built.update((x.user, x) for x in lists)
        return [built[user] for user in users]

    def _ranked(
        self,
        recommender: Recommender,
        variant: Variant,
        users: Sequence[str],
        states: Sequence[UserState],
        written_at: int,
    ) -> list[UserList]:
        """The lists of ``users`` ranked by ``recommender``, marked ``variant``."""
        histories = self._histories(users, states, recommender.weighting)
        exclude = _unranked(states, histories)
        down = self.unavailable
        if down:
            exclude = [[*items, *down] for items in exclude]
        ranking = recommender.rank(histories, self._n, exclude_seen=True, exclude=exclude)
        table = self._tables.get(recommender.version_id)
        if table is None:
            table = ItemTable(recommender.version_id, recommender.item_ids.ids)
            self._tables[recommender.version_id] = table
        stamps = [state.newest_ts for state in states]
        personal = ranking.personal
        data = table.encode(
            ranking.items,
            ranking.scores,
            ranking.because,
            personal,
            stamps,
            written_at,
            variant=variant,
        )
        data = self._with_interim(
            recommender, variant, users, states, ranking, data, stamps, written_at
        )
        fallback = np.flatnonzero(~personal).tolist()
        top = self._shown_top
        chosen = ranking.items[:, :top]
        if fallback:  # no usable history: the model's popular list, one encode for them all
            items = np.full((len(users), self._n), -1, dtype=np.int64)
            scores = np.zeros((len(users), self._n), dtype=np.float32)
            for row in fallback:
                names, values = recommender.fallback(ranking.seen(row), self._n + len(down))
                if down:
                    kept = [(i, v) for i, v in zip(names, values, strict=True) if i not in down]
                    names, values = [i for i, _ in kept][: self._n], [v for _, v in kept][: self._n]
                indices = recommender.item_ids.indices(names)
                known = indices >= 0  # the model's popular items are its own: all, but be sure
                items[row, : known.sum()] = indices[known]
                scores[row, : known.sum()] = np.asarray(values, dtype=np.float32)[known]
            because = np.full_like(items, -1)
            popular = table.encode(
                items, scores, because, ~personal, stamps, written_at, "popular", variant
            )
            data = [p if d is None else d for d, p in zip(data, popular, strict=True)]
            chosen = np.where(personal[:, None], chosen, items[:, : chosen.shape[1]])
        version = recommender.version_id
        generation = self._follower.generation
        if top:
            self._note_shown(recommender, variant, states, chosen)
        # every row is personal or a fallback, so every one has its list
        return [
            UserList(
                user, order_token(stamp, version, generation), body, encode_recent(state.history)
            )
            for user, state, stamp, body in zip(users, states, stamps, data, strict=True)
            if body is not None
        ]

    def _with_interim(
        self,
        recommender: Recommender,
        variant: Variant,
        users: Sequence[str],
        states: Sequence[UserState],
        ranking: Ranking,
        data: list[bytes | None],
        stamps: Sequence[int],
        written_at: int,
    ) -> list[bytes | None]:
        """``data`` with the lists an interim item enters rewritten to hold it.

        Those lists are in the codec's JSON form, which names its items: the
        compact form indexes the version's immutable item table, which an
        interim item is not in. A user who interacted with an interim item, or
        an item taken down, never gets it."""
        block = self.interim
        if (
            not block.ids
            or block.version != recommender.version_id
            or ranking.vectors is None
            or ranking.items.shape[1] == 0
        ):
            return data
        # Only an interim item that beats a row's last model item can enter it: the
        # membership checks (a set of the user's items each) are for those rows alone.
        extra = ranking.vectors @ block.vectors.T
        last = np.where(ranking.items[:, -1] >= 0, ranking.scores[:, -1], -np.inf)
        beats = (extra > last[:, None]) & ranking.personal[:, None]
        if not beats.any():
            return data
        place = {item: j for j, item in enumerate(block.ids)}
        excluded = np.zeros((len(users), len(block.ids)), dtype=bool)
        for row in np.flatnonzero(beats.any(axis=1)).tolist():
            for item in states[row].items().intersection(place):
                excluded[row, place[item]] = True
        for item in self.unavailable.intersection(place):
            excluded[:, place[item]] = True
        n_model = len(recommender.item_ids)
        items, scores, entered = merge_interim(
            ranking.items,
            ranking.scores,
            ranking.vectors,
            ranking.personal,
            block.vectors,
            excluded,
            n_model,
        )
        if not entered.any():
            return data
        names = recommender.item_ids.ids
        out = list(data)
        for row in np.flatnonzero(entered).tolist():
            why = {
                int(i): int(b)
                for i, b in zip(ranking.items[row], ranking.because[row], strict=True)
                if i >= 0 and b >= 0
            }
            entries = []
            for i, s in zip(items[row].tolist(), scores[row].tolist(), strict=True):
                if i < 0:
                    break
                if i < n_model:
                    entry = {"item": names[i], "score": s}
                else:  # an interim item says where its vector comes from: fold, content
                    entry = {"item": block.ids[i - n_model], "score": s}
                    entry["source"] = block.sources[i - n_model]
                if i in why:
                    entry["because"] = names[why[i]]
                entries.append(entry)
            out[row] = orjson.dumps(
                envelope(
                    users[row],
                    "personal",
                    recommender.version_id,
                    stamps[row],
                    written_at,
                    entries,
                    variant,
                )
            )
        return out

    def _note_shown(
        self,
        recommender: Recommender,
        variant: Variant,
        states: Sequence[UserState],
        chosen: np.ndarray,
    ) -> None:
        """Each state's ``shown``: the ids of its row of ``chosen`` (item indices, -1 for
        an unfilled slot, which only trails), by one numpy take over the batch."""
        names = self._names.get(recommender.version_id)
        if names is None:
            names = np.asarray(recommender.item_ids.ids, dtype=object)
            self._names = {recommender.version_id: names} | {
                v: n for v, n in self._names.items() if v in self._tables
            }
        picked = names[np.maximum(chosen, 0)].tolist()
        filled = (chosen >= 0).sum(axis=1).tolist()
        generation, version = self._follower.generation, recommender.version_id
        for state, ids, n in zip(states, picked, filled, strict=True):
            state.shown = ShownList(generation, version, variant, tuple(ids[:n]))

    def _popular(
        self, users: Sequence[str], states: Sequence[UserState], written_at: int
    ) -> list[UserList]:
        # One ranking for the batch, long enough that excluding any one user's
        # history still leaves ``n`` items.
        longest = max(len(s.history) + len(s.seen_items) for s in states)
        down = self.unavailable
        ranked = self._popularity.top(self._n + longest + len(down))
        lists = []
        for user, state in zip(users, states, strict=True):
            seen = state.items() | down if down else state.items()
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
            recent = encode_recent(state.history)
            lists.append(UserList(user, order_token(state.newest_ts, None), data, recent))
        return lists
