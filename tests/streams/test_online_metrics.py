"""Online metrics on a real worker, broker and Redis (issue 24, item 3): a watch or a
rating of an item of the list the worker last wrote counts as a hit for that list's
model version, in Prometheus, in Redis and in ``freshrec models online``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import redis

from freshrec.settings import Settings
from schemas.online import decode_counts, online_key
from tests.streams.worker import (
    BASE_TS,
    StartWorker,
    publish,
    publish_model,
    rate,
    read_list,
    synthetic,
    watch,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_events_on_recommended_items_count_as_hits_for_the_version_that_listed_them(
    worker_settings: Settings, start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    s = worker_settings.replace(online_top_k=20)
    data = synthetic()
    version = publish_model(s, data)
    users = [f"u{n}" for n in range(10)]
    worker = start_worker(s)
    publish(s, [watch(f"e{n}", u, f"item-{n}", BASE_TS + n) for n, u in enumerate(users)])
    lists = {}
    worker.wait_for(
        lambda: all(read_list(redis_client, s, u) is not None for u in users), 30, "the lists"
    )
    for user in users:
        recs = read_list(redis_client, s, user)
        assert recs is not None and recs.model_version == version
        lists[user] = [i.item for i in recs.items]
    catalogue = sorted(set(data.log.items.ids))
    events = []
    for n, user in enumerate(users):
        if n < 5:  # the first item of their list: a hit at rank 1
            item = lists[user][0]
        else:  # an item nowhere in their top 20 nor their history: a miss
            item = next(i for i in catalogue if i not in lists[user][:20] and i != f"item-{n}")
        events.append(watch(f"f{n}", user, item, BASE_TS + 100 + n))
    events.append(rate("r0", "u9", lists["u9"][1], BASE_TS + 200, rating=4.0))
    publish(s, events)

    key = online_key(s.key_prefix, version, "current")
    worker.wait_for(
        lambda: decode_counts(redis_client.hgetall(key)).events == len(events), 30, "the counts"
    )
    counts = decode_counts(redis_client.hgetall(key))
    # u9's rating hits whichever list it is compared with (before or after u9's watch)
    assert (counts.hits10, counts.hitsk, counts.rated, counts.rating, counts.k) == (
        6,
        6,
        1,
        4.0,
        20,
    )
    assert counts.rr >= 5 + 0.5
    assert worker.metric_total("freshrec_worker_online_events_total") == len(events)
    hits = worker.metrics()[
        f"freshrec_worker_online_hits_total{{arm=current,top=10,version={version}}}"
    ]
    assert hits == 6

    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")} | s.as_env()
    shown = subprocess.run(
        [sys.executable, "-m", "cli.main", "models", "online", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    (row,) = [json.loads(line) for line in shown.stdout.splitlines()]
    assert (row["version"], row["arm"], row["current"], row["events"]) == (
        version,
        "current",
        True,
        len(events),
    )
    assert row["hit_rate@10"] == pytest.approx(6 / 11)
    low, high = row["hit_rate@10_ci95"]
    assert low < 6 / 11 < high and row["mean_rating"] == 4.0
