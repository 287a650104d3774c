"""Contributions to items the model does not know, pure: hand-made batches through the
batch step and :func:`streams.interim.contributions`, applied with the item agent's
:func:`streams.item_stats.apply_entries`.

What crash safety rests on: the entries a batch makes depend on the events and the
state before them, not on where the batch was cut, and a redelivered entry is
counted once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from models.ids import IdMap
from models.item_foldin import ItemStats, user_gram
from models.recommender import Recommender
from models.weighting import user_confidences
from schemas.interim import ContributionMessage, StatsRecord
from schemas.state import UserState
from streams.batch import Inbound, step
from streams.interim import contributions, is_interim
from streams.item_stats import apply_entries
from tests.streams.test_batch import BASE_TS, KINDS, forget, watch

F = 4


def _model(version: str = "v1", items: Sequence[str] = ("a", "b", "c", "d")) -> Recommender:
    rng = np.random.default_rng(3)
    factors = rng.normal(size=(len(items), F)).astype(np.float32)
    users = rng.normal(size=(50, F))
    return Recommender(
        version, IdMap(list(items)), factors, 0.1, 2.0, user_gram=user_gram(users, 0.1)
    )


def _msg(event: dict[str, Any], offset: int) -> Inbound:
    return Inbound(event["type"], 0, offset, event["user_id"].encode(), orjson.dumps(event))


class Worker:
    """Just enough of a worker: user states, batches, the messages it sends."""

    def __init__(self, model: Recommender) -> None:
        self.model = model
        self.states: dict[str, UserState] = {}
        self.sent: list[ContributionMessage] = []

    def batch(self, messages: Sequence[Inbound], persist: bool = True) -> None:
        current = {u: s.copy() for u, s in self.states.items()}
        result = step(
            messages,
            current.get,
            KINDS,
            50,
            50,
            is_interim=is_interim(self.model),
            interim_version=self.model.version_id,
        )
        sent, held = contributions(result.interim, self.model)
        self.sent.extend(sent)
        for user, t in result.touched.items():
            assert t.state is not None
            if user in held:
                t.state.interim = held[user]
        if persist:  # a crash before the state write keeps the old states
            self.states.update({u: t.state for u, t in result.touched.items() if t.state})


def _applied(messages: Sequence[ContributionMessage], item: str, version: str) -> StatsRecord:
    record = StatsRecord.empty(F)
    for m in messages:
        if m.item == item and m.version == version:
            apply_entries(record, m, 1)
    return record


def _recomputed(
    model: Recommender, states: dict[str, UserState], item: str, whole: bool = False
) -> ItemStats:
    """The item's statistics from the users' histories: each user's vector and confidence
    just after their last event on the item (``whole``: after their last event)."""
    stats = ItemStats.empty(F)
    for state in states.values():
        rows = [n for n, i in enumerate(state.history) if i.item_id == item]
        if not rows:
            continue
        end = len(state.history) if whole else rows[-1] + 1
        conf = user_confidences(state.history[:end], model.weighting)
        encoded, _ = model.encode([conf])
        if not (encoded.confidences > 0).any():  # nothing known to fold in: no vector
            continue
        x = model.foldin.user_vectors(encoded)[0]
        stats.add(x, model.foldin.alpha * conf[item])
    return stats


def _events() -> list[Inbound]:
    """Four users: a known item, the new one, another known one, the new one again (which
    replaces their contribution), interleaved."""
    events = []
    for n in range(16):
        user, item = f"u{n % 4}", ("a", "new", "bc"[n % 2], "new")[n // 4]
        events.append(_msg(watch(f"e{n}", user, item, BASE_TS + n), n))
    return events


def _same(record: StatsRecord, stats: ItemStats) -> None:
    np.testing.assert_allclose(record.a, stats.a, atol=1e-9)
    np.testing.assert_allclose(record.b, stats.b, atol=1e-9)
    assert record.users == stats.users


def test_entries_sum_to_each_users_latest_contribution_however_batches_are_cut() -> None:
    model = _model()
    events = _events()
    whole, cut = Worker(model), Worker(model)
    whole.batch(events)
    for chunk in (events[:5], events[5:7], events[7:]):
        cut.batch(chunk)
    expected = _recomputed(model, whole.states, "new")
    assert expected.users == 4
    _same(_applied(whole.sent, "new", "v1"), expected)
    _same(_applied(cut.sent, "new", "v1"), expected)


def test_a_crash_before_the_state_write_redelivers_entries_that_count_once() -> None:
    """The batch's messages were acknowledged, its states never written: the redelivered
    events, cut differently, make the same entries, and the watermarks drop them."""
    model = _model()
    events = _events()
    worker = Worker(model)
    worker.batch(events[:4])
    worker.batch(events[4:9], persist=False)  # the crash
    worker.batch(events[4:6])
    worker.batch(events[6:])
    _same(_applied(worker.sent, "new", "v1"), _recomputed(model, worker.states, "new"))


def test_a_forget_takes_every_contribution_back() -> None:
    model = _model()
    worker = Worker(model)
    worker.batch(_events())
    worker.batch([_msg(forget("f", "u0", BASE_TS + 100), 50)])
    record = _applied(worker.sent, "new", "v1")
    _same(record, _recomputed(model, worker.states, "new"))
    assert record.users == 3
    assert worker.states["u0"].interim == {}


def test_at_a_new_version_a_users_next_event_makes_their_contributions_again() -> None:
    """The hand-over: contributions to an item the new version still does not know are made
    again under it; those to an item it knows are dropped."""
    old = _model("v1")
    worker = Worker(old)
    worker.batch([_msg(watch("e0", "u1", "b", BASE_TS), 0)])
    worker.batch([_msg(watch("e1", "u1", "new", BASE_TS + 1), 1)])
    worker.batch([_msg(watch("e2", "u1", "other", BASE_TS + 2), 2)])
    assert set(worker.states["u1"].interim) == {"new", "other"}
    worker.model = new = _model("v2", ("a", "b", "c", "d", "other"))
    worker.batch([_msg(watch("e3", "u1", "a", BASE_TS + 3), 3)])
    assert set(worker.states["u1"].interim) == {"new"}
    assert worker.states["u1"].interim["new"][0] == "v2"
    record = _applied(worker.sent, "new", "v2")
    assert record.users == 1
    # made again with the vector of the event that made it again (the user's newest)
    _same(record, _recomputed(new, worker.states, "new", whole=True))
    assert _applied(worker.sent, "other", "v2").users == 0
