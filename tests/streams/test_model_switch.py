"""The refresh that follows a model switch or a restart skips lists Redis already holds
with the current model.

``test_worker_flow`` and ``test_worker_faults`` show that every list ends up
on the new model; this file pins the shortcut that keeps the refresh from
writing the same lists again: ``ListRefresher._refresh_all`` reads each held
user's stored ``order`` token, which names the model the list was made with.
"""

from __future__ import annotations

import re

import pytest
import redis

from freshrec.settings import Settings
from tests.streams.worker import (
    BASE_TS,
    StartWorker,
    WorkerProcess,
    committed_past,
    newest_offsets,
    publish,
    publish_model,
    read_list,
    synthetic,
    watch,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The line ``ListRefresher._refresh_all`` logs when a refresh is done.
REFRESHED = re.compile(r"refreshed (\d+) list\(s\) with model (\S+)")

#: The restarted worker's first model poll comes this long after it started
#: consuming, well after its first batch, which reads events already waiting.
FIRST_POLL_AFTER_S = 3.0


def refreshes(worker: WorkerProcess) -> list[tuple[int, str]]:
    """Every ``(lists refreshed, model version)`` the worker has logged so far."""
    text = worker.log_path.read_text(errors="replace")
    return [(int(n), version) for n, version in REFRESHED.findall(text)]


def test_the_refresh_skips_a_user_whose_list_a_batch_wrote_with_the_new_model(
    worker_settings: Settings, start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    """A worker restarted after a new model was published adopts it in its first batch
    (the batch of ``u0``'s new event); its first poll then refreshes the nine other
    held users, and not ``u0``, whose list that batch already wrote with the new model."""
    s = worker_settings
    data = synthetic()
    v1 = publish_model(s, data)
    users = [f"u{n}" for n in range(10)]
    first = start_worker()
    publish(s, [watch(f"e{n}", user, f"item-{n}", BASE_TS + n) for n, user in enumerate(users)])
    first.wait_for(
        lambda: all(read_list(redis_client, s, u) is not None for u in users), 30, "the lists"
    )
    before = {u: read_list(redis_client, s, u) for u in users}
    assert all(b is not None and b.model_version == v1 for b in before.values())
    # committed, so the restarted worker redelivers (and so touches) none of them
    offsets = newest_offsets(s)
    first.wait_for(lambda: committed_past(s, offsets), 30, "the first worker's commit")
    first.stop()

    v2 = publish_model(s, data, seed=7)
    publish(s, [watch("e-new", "u0", "item-50", BASE_TS + 100)])
    second = start_worker(s.replace(model_poll_interval_s=FIRST_POLL_AFTER_S))
    second.wait_for(
        lambda: read_list(redis_client, s, "u0").updated_at == BASE_TS + 100,
        30,
        "u0's list from the restarted worker's first batch",
    )
    assert refreshes(second) == [], "the first poll came before the first batch"
    u0 = read_list(redis_client, s, "u0")
    assert u0 is not None and u0.model_version == v2

    second.wait_for(lambda: refreshes(second) != [], 30, "the refresh after the first poll")
    assert second.metric_total("freshrec_worker_users") == len(users)
    assert refreshes(second) == [(len(users) - 1, v2)]  # everyone held but u0
    for user in users[1:]:
        now, then = read_list(redis_client, s, user), before[user]
        assert now is not None and then is not None
        assert (now.model_version, now.updated_at) == (v2, then.updated_at), user


def test_a_restart_with_the_model_unchanged_rewrites_no_list(
    worker_settings: Settings, start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    """Every start refreshes the held lists, since a model may have been published while
    the worker was down; with the same model still current there is nothing to write."""
    s = worker_settings
    version = publish_model(s, synthetic())
    users = [f"u{n}" for n in range(10)]
    first = start_worker()
    publish(s, [watch(f"e{n}", user, f"item-{n}", BASE_TS + n) for n, user in enumerate(users)])
    first.wait_for(
        lambda: all(read_list(redis_client, s, u) is not None for u in users), 30, "the lists"
    )
    offsets = newest_offsets(s)
    first.wait_for(lambda: committed_past(s, offsets), 30, "the first worker's commit")
    first.stop()
    before = {u: read_list(redis_client, s, u) for u in users}

    second = start_worker(s.replace(model_poll_interval_s=FIRST_POLL_AFTER_S))
    second.wait_for(lambda: refreshes(second) != [], 30, "the refresh after the first poll")
    assert second.metric_total("freshrec_worker_users") == len(users)
    assert refreshes(second) == [(0, version)]
    assert {u: read_list(redis_client, s, u) for u in users} == before  # written_at too
