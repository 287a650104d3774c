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

from collections import Counter

import pytest
import redis

from freshrec.settings import Settings
from tests.streams.worker import (
    BASE_TS,
    StartWorker,
    changelog_states,
    committed_past,
    lists_caught_up,
    newest_offsets,
    publish,
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
