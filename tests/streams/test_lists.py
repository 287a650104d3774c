"""The list builder: its batch encoder writes the model's lists in the contract's compact format."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.canary import in_canary
from models.ids import IdMap
from models.recommender import Recommender
from models.weighting import Interaction, WeightingConfig, user_confidences
from schemas.recent import decode as decode_recent
from schemas.recs import RecItem, RecList, Source, compact_version, decode, order_generation
from schemas.state import UserState
from streams.lists import ListBuilder
from streams.popularity import Popularity


class _Follower:
    def __init__(self, recommender: Recommender | None) -> None:
        self.recommender = recommender
        self.generation = 7
        self.canary: Recommender | None = None
        self.fraction = 0.0


def _recommender(n_items: int) -> Recommender:
    rng = np.random.default_rng(5)
    names = [f"it\u00e9m-{i}" if i % 7 else f'q"{i}' for i in range(n_items)]  # escaping
    factors = rng.standard_normal((n_items, 4)).astype(np.float32)
    return Recommender(
        "20260101T000000000000Z-abcd",
        IdMap(names),
        factors,
        0.1,
        2.0,
        popular_items=names[::-1],
        popular_scores=[float(i) for i in range(n_items)],
    )


def _state(*items: str) -> UserState:
    return UserState(
        [Interaction(item, "watch", 600.0, 1200.0, 100 + i) for i, item in enumerate(items)]
    )


def _expected(rec: Recommender, users: list[str], states: list[UserState], n: int) -> list[Any]:
    recs = rec.recommend([user_confidences(s.history) for s in states], n, exclude_seen=True)
    out = []
    for row, (user, state) in enumerate(zip(users, states, strict=True)):
        items = tuple(
            RecItem(i, s, b)
            for i, s, b in zip(recs.items[row], recs.scores[row], recs.because[row], strict=True)
        )
        source: Source = "personal" if recs.personal[row] else "popular"
        out.append(RecList(user, source, rec.version_id, state.newest_ts, 999, items))
    return out


def _half(recs: RecList) -> RecList:
    """``recs`` with its scores as the compact format keeps them (float16)."""
    items = tuple(RecItem(i.item, float(np.float16(i.score)), i.because) for i in recs.items)
    return RecList(
        recs.user, recs.source, recs.model_version, recs.updated_at, recs.written_at, items
    )


def _read(rec: Recommender, user: str, data: bytes) -> RecList:
    """A built list decoded as the API decodes it, with the model's item table."""
    return decode(data, rec.item_ids.ids, user)


def test_batch_encoder_matches_the_model_for_every_kind_of_user() -> None:
    rec = _recommender(12)
    names = rec.item_ids.ids
    users = ["a", "b", "c", "d"]
    states = [
        _state(names[1]),  # short history
        _state(*names[:9]),  # only 3 items left: the list has an unfilled tail
        _state("not-in-the-model"),  # no usable history: the popular fallback
        _state(names[2], names[5], names[7]),
    ]
    built = ListBuilder(5, _Follower(rec), Popularity()).build(users, states, 999)  # type: ignore[arg-type]
    assert [x.user for x in built] == users
    assert all(compact_version(x.data) == rec.version_id for x in built)
    assert all(order_generation(x.order) == 7 for x in built), "ordered by the pointer's move"
    decoded = [_half(_read(rec, x.user, x.data)) for x in built]
    assert decoded == [_half(e) for e in _expected(rec, users, states, 5)]
    assert decoded[2].source == "popular" and decoded[3].source == "personal"
    assert len(decoded[1].items) == 3


def test_the_worker_combines_events_with_the_models_own_weighting_rule() -> None:
    # Bug: the worker combined every history with the default rule, whatever the
    # model was trained with; with negative feedback off (negative_below=0) a
    # 1-star rating is a weak positive, so this user has a personal list.
    rec = _recommender(12)
    rec = Recommender(
        rec.version_id,
        rec.item_ids,
        rec.foldin.item_factors,
        0.1,
        2.0,
        weighting=WeightingConfig(negative_below=0),
    )
    state = UserState([Interaction(rec.item_ids.ids[3], "rate", 1.0, None, 100)])
    built = ListBuilder(5, _Follower(rec), Popularity()).build(["a"], [state], 999)  # type: ignore[arg-type]
    listed = _read(rec, "a", built[0].data)
    assert listed.source == "personal"
    assert rec.item_ids.ids[3] not in {i.item for i in listed.items}


def test_items_the_history_cap_dropped_never_make_any_list() -> None:
    rec = _recommender(12)
    names = rec.item_ids.ids
    personal = UserState([Interaction(names[0], "watch", 600.0, 1200.0, 100)])
    personal.seen_items = sorted(names[1:8])
    fallback = UserState([Interaction("not-in-the-model", "watch", 600.0, 1200.0, 100)])
    fallback.seen_items = sorted(names[::2])
    skim = UserState(
        [
            Interaction(names[0], "watch", 600.0, 1200.0, 100),
            Interaction(names[9], "watch", 1.0, 1200.0, 101),
        ]
    )  # confidence 0
    users, states = ["p", "f", "s"], [personal, fallback, skim]
    popularity = Popularity()
    popularity.rebuild([[Interaction(n, "watch", 1.0, None, 1)] for n in names])
    with_model = ListBuilder(20, _Follower(rec), popularity).build(users, states, 999)  # type: ignore[arg-type]
    without = ListBuilder(20, _Follower(None), popularity).build(users, states, 999)  # type: ignore[arg-type]
    for built in (with_model, without):
        for user_list, state in zip(built, states, strict=True):
            listed = {i.item for i in decode(user_list.data, names).items}
            assert listed and not listed & state.items(), user_list.user
    assert decode(with_model[0].data, names).source == "personal"
    assert decode(with_model[1].data, names).source == "popular"
    assert compact_version(without[0].data) is None  # no model: JSON


def test_each_state_records_the_top_of_its_new_list_for_the_online_metrics() -> None:
    """Issue 24, item 3: the worker keeps each user's last list's first ids in the state,
    for personal lists and the popular fallback alike."""
    rec = _recommender(12)
    names = rec.item_ids.ids
    users = ["a", "b", "c"]
    states = [_state(names[1]), _state("not-in-the-model"), _state(*names[:9])]
    builder = ListBuilder(5, _Follower(rec), Popularity(), shown_top=4)  # type: ignore[arg-type]
    built = builder.build(users, states, 999)
    for state, x in zip(states, built, strict=True):
        listed = tuple(i.item for i in _read(rec, x.user, x.data).items)
        assert state.shown is not None
        assert (state.shown.generation, state.shown.version) == (7, rec.version_id)
        assert state.shown.items == listed[:4] and state.shown.arm == "current"
    assert len(states[2].shown.items) == 3  # type: ignore[union-attr]  # only 3 items left
    plain = [_state(names[1])]
    ListBuilder(5, _Follower(rec), Popularity()).build(["a"], plain, 999)  # type: ignore[arg-type]
    assert plain[0].shown is None, "shown_top 0: the online metrics are off"


def test_a_canary_ranks_its_users_with_the_candidate_and_marks_their_lists() -> None:
    """Issue 24, item 4: the stable hash puts a user in the canary; their list comes from
    the candidate's model and says ``variant: canary``; everyone else's from the current."""
    rec = _recommender(12)
    candidate = Recommender(
        "20260202T000000000000Z-cafe",
        rec.item_ids,
        rec.foldin.item_factors[::-1].copy(),
        0.1,
        2.0,
        popular_items=list(rec.item_ids.ids),
        popular_scores=[1.0] * 12,
    )
    follower = _Follower(rec)
    follower.canary, follower.fraction = candidate, 0.5
    names = rec.item_ids.ids
    users = [f"user-{n}" for n in range(200)]
    states = [_state(names[n % 12]) for n in range(200)]
    builder = ListBuilder(5, follower, Popularity(), shown_top=3)  # type: ignore[arg-type]
    built = builder.build(users, states, 999)
    assert [x.user for x in built] == users
    arms = [in_canary(u, candidate.version_id, 0.5) for u in users]
    assert 70 < sum(arms) < 130
    for x, state, arm in zip(built, states, arms, strict=True):
        model = candidate if arm else rec
        got = decode(x.data, model.item_ids.ids, x.user)
        assert compact_version(x.data) == model.version_id == got.model_version
        assert got.variant == ("canary" if arm else "current")
        assert state.shown is not None and state.shown.arm == got.variant
        assert state.shown.version == model.version_id


def test_an_interim_item_enters_lists_by_name_never_to_who_saw_it_nor_when_taken_down() -> None:
    """Lists an interim item enters are in the JSON form, which names it (the compact form
    indexes the version's item table, which it is not in); the others stay compact."""
    from streams.interim import InterimBlock

    rec = _recommender(12)
    names = rec.item_ids.ids
    builder = ListBuilder(5, _Follower(rec), Popularity())  # type: ignore[arg-type]
    users = ["fan", "saw-it", "cold"]
    states = [_state(names[0], names[1]), _state(names[0], names[1], "new"), _state(names[2])]
    fan = rec.foldin.user_vectors(rec.encode([user_confidences(states[0].history)])[0])[0]
    # an item every user with the fan's taste ranks first
    block = InterimBlock(rec.version_id, ("new",), (fan * 100)[None, :], ("fold",))
    builder.interim = block
    lists = builder.build(users, states, 999)
    first = _read(rec, "fan", lists[0].data)
    assert compact_version(lists[0].data) is None
    assert first.items[0].item == "new" and first.items[0].because is None
    assert [i.item for i in first.items[1:]] == [
        i.item for i in _expected(rec, ["fan"], states[:1], 4)[0].items
    ]
    assert all(i.item != "new" for i in _read(rec, "saw-it", lists[1].data).items)
    builder.unavailable = frozenset({"new"})
    again = builder.build(users[:1], states[:1], 999)
    assert compact_version(again[0].data) is not None  # no interim item: compact as before
    builder.unavailable = frozenset()
    builder.interim = InterimBlock("another-version", ("new",), block.vectors, ("fold",))
    assert compact_version(builder.build(users[:1], states[:1], 999)[0].data) is not None


def test_every_list_carries_its_users_newest_items() -> None:
    """Issue 26, item 8: the page shows the user's own history beside the list; the worker
    builds it from the same state as the list, with a model or without one."""
    rec = _recommender(12)
    names = rec.item_ids.ids
    state = UserState(
        [
            Interaction(names[0], "watch", 600.0, 1200.0, 100),
            Interaction(names[1], "rate", 4.0, None, 200),
            Interaction("not-in-the-model", "watch", 600.0, 1200.0, 300),
        ]
    )
    popularity = Popularity()
    popularity.rebuild([[Interaction(n, "watch", 1.0, None, 1)] for n in names])
    for follower in (_Follower(rec), _Follower(None)):
        (built,) = ListBuilder(20, follower, popularity).build(["u"], [state], 999)  # type: ignore[arg-type]
        assert decode_recent(built.recent) == [
            {"item": "not-in-the-model", "ts": 300, "kind": "watch"},
            {"item": names[1], "ts": 200, "kind": "rate"},
            {"item": names[0], "ts": 100, "kind": "watch"},
        ]
