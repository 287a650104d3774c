"""The worker end to end, happy paths: events change lists, models are followed, forget forgets."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

from freshrec.settings import Settings
from tests.streams.worker import (
    BASE_TS,
    StartWorker,
    WorkerProcess,
    changelog_states,
    list_model,
    list_updated_at,
    lists_caught_up,
    publish,
    publish_model,
    rate,
    read_list,
    synthetic,
    watch,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_watching_an_item_brings_its_neighbours_and_explains_them(
    worker_settings: Settings, start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    data = synthetic()
    version = publish_model(worker_settings, data)
    worker = start_worker()
    publish(worker_settings, [watch("e1", "alice", "item-3", BASE_TS + 1)])
    worker.wait_for(
        lambda: read_list(redis_client, worker_settings, "alice") is not None, 30, "alice's list"
    )
    first = read_list(redis_client, worker_settings, "alice")
    assert first is not None
    neighbours = set(data.neighbours("item-3"))
    top = [i.item for i in first.items[:10]]
    assert sum(i in neighbours for i in top) >= 8, top
    assert "item-3" not in {i.item for i in first.items}  # seen items are masked
    assert {i.because for i in first.items[:10]} == {"item-3"}
    assert (first.source, first.model_version, first.updated_at) == (
        "personal",
        version,
        BASE_TS + 1,
    )
    assert len(first.items) == len(data.log.items) - 1  # every item but the seen one

    # Rating items of another cluster moves the list towards that cluster.
    other = [f"item-{5 + 8 * k}" for k in range(3)]
    publish(
        worker_settings,
        [rate(f"r{k}", "alice", item, BASE_TS + 10 + k) for k, item in enumerate(other)],
    )
    worker.wait_for(
        lambda: list_updated_at(redis_client, worker_settings, "alice") == BASE_TS + 12,
        30,
        "alice's list after the ratings",
    )
    second = read_list(redis_client, worker_settings, "alice")
    assert second is not None
    cluster5 = set(data.neighbours("item-5"))
    assert sum(i.item in cluster5 for i in second.items[:10]) >= 3
    assert not {i.item for i in second.items} & {"item-3", *other}

    metrics = worker.metrics()
    topic = worker_settings.topic_rate
    assert metrics[f"freshrec_worker_events_valid_total{{topic={topic}}}"] == 3
    for name in ("batch_size", "foldin_seconds", "redis_write_seconds", "freshness_seconds"):
        assert metrics[f"freshrec_worker_{name}_count{{}}"] >= 2, name


def test_before_any_model_users_get_popular_lists_then_the_model_takes_over(
    worker_settings: Settings, start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    worker = start_worker()
    events = [
        watch(f"e{u}-{k}", f"u{u}", f"item-{k}", BASE_TS + k)
        for u in range(1, 4)
        for k in range(u + 1)
    ]
    publish(worker_settings, events)
    worker.wait_for(
        lambda: all(read_list(redis_client, worker_settings, f"u{u}") for u in range(1, 4)),
        30,
        "popular lists",
    )
    publish(worker_settings, [watch("e0-0", "u0", "item-0", BASE_TS)])
    worker.wait_for(
        lambda: read_list(redis_client, worker_settings, "u0") is not None, 30, "u0's list"
    )
    u0 = read_list(redis_client, worker_settings, "u0")
    assert u0 is not None and (u0.source, u0.model_version) == ("popular", None)
    # item-0 is everyone's, but u0 watched it; item-1 is next (3 users), then item-2
    assert [i.item for i in u0.items] == ["item-1", "item-2", "item-3"]

    version = publish_model(worker_settings, synthetic())
    # every held user is refreshed with the model, without a new event
    worker.wait_for(
        lambda: all(
            list_model(redis_client, worker_settings, f"u{u}") == version for u in range(4)
        ),
        30,
        "lists refreshed with the first model",
    )
    u3 = read_list(redis_client, worker_settings, "u3")
    assert u3 is not None and u3.source == "personal" and u3.updated_at == BASE_TS + 3
    states = changelog_states(worker_settings)
    assert {u: len(s.history) for u, s in states.items() if s} == {f"u{u}": u + 1 for u in range(4)}


def test_no_list_holds_an_item_the_history_cap_dropped_with_or_without_a_model(
    worker_settings: Settings, start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    # Bug: lists masked only the kept history, so an item the user interacted
    # with came back once the cap (here 5 of 20 interactions) dropped it.
    settings = worker_settings.replace(history_length=5)
    worker = start_worker(settings)
    alice = [watch(f"a{k}", "alice", f"item-{k}", BASE_TS + k) for k in range(20)]
    alice[0] = watch("a0", "alice", "item-20", BASE_TS)  # the most popular, dropped by the cap
    others = [
        watch(f"o{u}-{k}", f"other{u}", f"item-{k}", BASE_TS + k)
        for u in range(3)
        for k in range(20, 25)
    ]
    publish(settings, others)
    worker.wait_for(lambda: lists_caught_up(settings, redis_client, others), 30, "others' lists")
    publish(settings, alice)
    worker.wait_for(lambda: lists_caught_up(settings, redis_client, alice), 30, "alice's list")
    watched = {e["item_id"] for e in alice}
    before = read_list(redis_client, settings, "alice")
    assert before is not None and before.source == "popular"
    assert [i.item for i in before.items] == [f"item-{k}" for k in range(21, 25)]

    version = publish_model(settings, synthetic())
    worker.wait_for(
        lambda: list_model(redis_client, settings, "alice") == version,
        30,
        "alice's list refreshed with the model",
    )
    after = read_list(redis_client, settings, "alice")
    assert after is not None and after.source == "personal"
    assert not {i.item for i in after.items} & watched
    assert len(after.items) == 96 - 20  # every other item of the catalogue
    state = changelog_states(settings)["alice"]
    assert state is not None and len(state.history) == 5
    assert state.items() == watched


def test_forget_removes_history_and_list_and_a_later_event_starts_afresh(
    worker_settings: Settings, start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    publish_model(worker_settings, synthetic())
    worker = start_worker()
    publish(worker_settings, [watch(f"e{k}", "bob", f"item-{k}", BASE_TS + k) for k in range(5)])
    worker.wait_for(
        lambda: read_list(redis_client, worker_settings, "bob") is not None, 30, "bob's list"
    )
    publish(
        worker_settings,
        [{"type": "forget", "event_id": "f1", "user_id": "bob", "ts": BASE_TS + 100}],
    )
    worker.wait_for(
        lambda: read_list(redis_client, worker_settings, "bob") is None, 30, "bob's list deleted"
    )
    # a forget marker (issue 10): no history, the time of the forget; gone after recovery too
    marker = changelog_states(worker_settings)["bob"]
    assert marker is not None and marker.is_marker and marker.forgotten_at == BASE_TS + 100

    publish(worker_settings, [watch("e9", "bob", "item-9", BASE_TS + 200)])
    worker.wait_for(
        lambda: read_list(redis_client, worker_settings, "bob") is not None, 30, "bob's new list"
    )
    state = changelog_states(worker_settings)["bob"]
    assert state is not None and [i.item_id for i in state.history] == ["item-9"]


def test_runs_as_a_plain_faust_app(
    worker_settings: Settings, topics: list[str], redis_client: redis.Redis, tmp_path
) -> None:
    """``faust -A streams.app worker`` works with the same FRESHREC_* environment."""
    worker = WorkerProcess(worker_settings, tmp_path / "faust.log")
    env = {**worker_settings.as_env(), "PATH": ""}
    with open(worker.log_path, "ab") as log:
        worker.proc = subprocess.Popen(
            [sys.executable, "-m", "faust", "-A", "streams.app", "worker", "-l", "info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        publish(worker_settings, [watch("e1", "carol", "item-1", BASE_TS)])
        worker.wait_for(
            lambda: read_list(redis_client, worker_settings, "carol") is not None,
            30,
            "carol's list",
        )
    finally:
        worker.stop()


def test_regression_events_that_arrive_while_a_batch_is_held_back_join_the_next_batch(
    worker_settings: Settings, start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    """Regression (issue 27): a take's window runs from the agent's request, and while the
    batches in flight held the next one back Faust's take buffer did not fill, so a worker
    working through a backlog got batches of about 16 events (what Faust moved into its
    buffer within a 0.01 s window), each paying a whole batch's fixed costs, at half the
    events/s. What arrives meanwhile now joins the next batch. Redis holding the worker's
    writes for 3 s holds its batches back; the backlog published meanwhile must come in
    full batches, never more than ``FRESHREC_BATCH_SIZE`` (500 here) at once."""
    settings = worker_settings.replace(batch_max_wait_s=0.01)
    publish_model(settings, synthetic())
    worker = start_worker(settings)
    first = [watch("w0", "early", "item-1", BASE_TS)]
    publish(settings, first)
    worker.wait_for(lambda: lists_caught_up(settings, redis_client, first), 60, "the first list")
    redis_client.execute_command("CLIENT", "PAUSE", 3000, "WRITE")
    events = [watch(f"e{n}", f"user-{n}", f"item-{n % 40}", BASE_TS + n) for n in range(3000)]
    publish(settings, events)
    worker.wait_for(lambda: lists_caught_up(settings, redis_client, events), 120, "every list")
    metrics = worker.metrics()
    batches = metrics["freshrec_worker_batch_size_count{}"]
    small = metrics["freshrec_worker_batch_size_bucket{le=250.0}"]
    assert batches - small >= 2, f"{batches - small:.0f} of {batches:.0f} batches over 250 events"
    assert metrics["freshrec_worker_batch_size_bucket{le=500.0}"] == batches
