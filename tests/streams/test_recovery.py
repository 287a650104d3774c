"""A restarted worker recovers every user's state from the changelog, whatever its record batches.

The worker sends a batch's changelog records together, so one producer batch
carries many records of one changelog partition. Tansu (the test and local
broker) answers ListOffsets(LATEST) with the base offset of a partition's last
record batch + 1, and Faust's recovery reads each changelog partition only up
to what ListOffsets says; without the transport's correction
(``streams/transport.py``) a restarted worker lost every user written in a
partition's last batch but its first one.
"""

from __future__ import annotations

import random
from collections import Counter
from functools import partial

import pytest
import redis

from freshrec.settings import Settings
from schemas.events import RateEvent, WatchEvent
from schemas.recs import RecList
from schemas.state import UserState
from tests.streams.worker import (
    BASE_TS,
    StartWorker,
    changelog_states,
    committed_past,
    lists_caught_up,
    newest_offsets,
    publish,
    publish_model,
    rate,
    read_list,
    synthetic,
    watch,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USERS = [f"u{n}" for n in range(200)]


def test_a_restarted_worker_holds_every_user_written_in_one_changelog_batch(
    worker_settings: Settings, start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    s = worker_settings
    # One event per user, all published at once, and a batch wait long enough
    # for the first worker to take them in one micro-batch, which writes its
    # users' records to each changelog partition in one producer batch.
    old = [watch(f"old-{u}", u, "item-1", BASE_TS + n) for n, u in enumerate(USERS)]
    first = start_worker(s.replace(batch_max_wait_s=1.0))
    publish(s, old)
    first.wait_for(
        lambda: lists_caught_up(s, redis_client, old),
        60,
        "every user's first list",
    )
    offsets = newest_offsets(s)
    first.wait_for(lambda: committed_past(s, offsets), 30, "the first worker's commit")
    first.stop()

    # The same events again, waiting when the next worker starts, then a new
    # event per user. The restarted worker must know every repeated event (its
    # recovered state holds their ids) and drop it; each history must end up
    # with the old item and the new one.
    publish(s, old)
    second = start_worker()
    new = [watch(f"new-{u}", u, "item-2", BASE_TS + 1000 + n) for n, u in enumerate(USERS)]
    publish(s, new)
    second.wait_for(
        lambda: lists_caught_up(s, redis_client, new),
        60,
        "every user's list after the new events",
    )
    # Only the new events are new. (Faust may deliver some of the repeats
    # twice around the restart: at-least-once; they are duplicates all the same.)
    metrics = second.metrics()
    consumed, valid, duplicate = (
        sum(v for k, v in metrics.items() if k.startswith(f"freshrec_worker_events_{what}_total{{"))
        for what in ("consumed", "valid", "duplicate")
    )
    assert valid == len(new), (
        f"{valid - len(new):.0f} repeated events were taken as new: "
        "the restarted worker lost those users' state"
    )
    assert duplicate == consumed - valid
    assert metrics["freshrec_worker_users{}"] == len(USERS)
    states = changelog_states(s)
    lost = [
        u
        for n, u in enumerate(USERS)
        if (state := states.get(u)) is None
        or Counter((i.item_id, i.ts) for i in state.history)
        != Counter({("item-1", BASE_TS + n): 1, ("item-2", BASE_TS + 1000 + n): 1})
    ]
    assert lost == [], f"{len(lost)} of {len(USERS)} users lost their history: {lost[:10]}"


def _ranked(recs: RecList | None) -> list[tuple[str, str | None]] | None:
    return None if recs is None else [(i.item, i.because) for i in recs.items]


def test_a_restarted_worker_recovers_the_states_it_kept_in_memory(
    worker_settings: Settings, start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    """Issue 16: the worker keeps decoded states, and their confidences, in memory,
    updated batch by batch (hot users in every batch, the history cap dropping rows, a
    late event, forgets); the changelog stays the durable copy. A worker restarted from
    the changelog alone must hold the same states: the changelog's histories are those
    the events make, every event is a duplicate to it, and the lists it writes from its
    recovered states equal those the first worker wrote from memory."""
    s = worker_settings.replace(history_length=4)
    publish_model(s, synthetic())
    users = [f"c{n}" for n in range(12)]
    rng = random.Random(16)
    rounds: list[list[dict]] = []
    last_ts: dict[str, int] = {}
    late = 0
    for r in range(6):
        batch: list[dict] = []
        for n, user in enumerate(users):
            for _ in range(3 if n < 3 else rng.random() < 0.4):  # c0-c2 are hot
                k = sum(map(len, rounds)) + len(batch)
                ts = BASE_TS + 1000 * r + 10 * k
                if r == 4 and user == "c0" and not late:
                    ts = late = last_ts["c0"] - 5  # lands inside c0's kept history
                last_ts[user] = max(last_ts.get(user, 0), ts)
                item = f"item-{rng.randrange(96)}"
                event = (
                    rate(f"e{k}", user, item, ts, rng.choice([1.0, 4.5]))
                    if rng.random() < 0.3
                    else watch(f"e{k}", user, item, ts, rng.choice([100.0, 900.0, 1800.0]))
                )
                batch.append(event)
        if r == 3:  # c1 is forgotten between rounds, and comes back
            batch.append({"type": "forget", "event_id": "f-c1", "user_id": "c1", "ts": ts})
        rounds.append(batch)
    forget_c2 = {"type": "forget", "event_id": "f-c2", "user_id": "c2", "ts": BASE_TS + 10**6}
    interactions = [e for batch in rounds for e in batch if e["type"] != "forget"]

    first = start_worker(s)
    for n, batch in enumerate(rounds):
        publish(s, batch)
        so_far = [e for b in rounds[: n + 1] for e in b if e["type"] != "forget"]
        if n == 3:
            so_far = [e for e in so_far if e["user_id"] != "c1"]
            first.wait_for(lambda: read_list(redis_client, s, "c1") is None, 30, "c1 forgotten")
        first.wait_for(partial(lists_caught_up, s, redis_client, so_far), 30, f"round {n}")
    publish(s, [forget_c2])
    first.wait_for(lambda: read_list(redis_client, s, "c2") is None, 30, "c2 forgotten")
    before = {u: read_list(redis_client, s, u) for u in users}
    offsets = newest_offsets(s)
    first.wait_for(lambda: committed_past(s, offsets), 30, "the first worker's commit")
    first.stop()

    # The changelog holds the histories the events make (ids compared as sets: the
    # topics are not ordered among themselves within a round).
    expected: dict[str, UserState] = {}
    for batch in [*rounds, [forget_c2]]:
        for e in batch:
            state = expected.setdefault(e["user_id"], UserState())
            if e["type"] == "forget":
                state.forget(e["ts"])
            elif e["ts"] > state.forgotten_at:
                args = (e["event_id"], e["user_id"], e["item_id"])
                applied: WatchEvent | RateEvent = (
                    WatchEvent(*args, e["watched_s"], e["ts"], 1800.0)
                    if e["type"] == "watch"
                    else RateEvent(*args, e["rating"], e["ts"])
                )
                state.apply(applied, 4, s.dedupe_window)
    durable = changelog_states(s)
    for user, want in expected.items():
        got = durable[user]
        assert got is not None, user
        assert (got.history, got.seen_items, got.forgotten_at) == (
            want.history,
            want.seen_items,
            want.forgotten_at,
        ), user
        assert set(got.event_ids) == set(want.event_ids), user

    # Every list gone, every event again: a restarted worker takes them all for
    # duplicates, and writes each list again from the state it recovered.
    for key in redis_client.scan_iter(match=f"{s.key_prefix}*"):
        redis_client.delete(key)
    second = start_worker(s)
    publish(s, [e for batch in rounds for e in batch] + [forget_c2])
    second.wait_for(
        lambda: lists_caught_up(s, redis_client, [e for e in interactions if e["user_id"] != "c2"]),
        60,
        "every list written again",
    )
    # Every watch and rating is a duplicate or forgotten (a forget applies again, idempotently).
    valid = {
        k: v
        for k, v in second.metrics().items()
        if k.startswith("freshrec_worker_events_valid_total{") and s.topic_forget not in k
    }
    assert sum(valid.values()) == 0, valid
    after = {u: read_list(redis_client, s, u) for u in users}
    assert {u: _ranked(r) for u, r in after.items()} == {u: _ranked(r) for u, r in before.items()}
    for user, recs in after.items():
        if recs is not None:
            old = before[user]
            assert old is not None
            # equal to rounding: the scores come from a batch of another make-up, and a list
            # stores them as float16, so float32 noise can cross to the next float16 (one
            # step is up to 2^-10 of the value: 0.01419 read back as 0.0142 once)
            assert [i.score for i in recs.items] == pytest.approx(
                [i.score for i in old.items], rel=2**-10, abs=1e-7
            ), user
            assert (recs.updated_at, recs.model_version) == (old.updated_at, old.model_version)
