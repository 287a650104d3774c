"""Invariants that a deliberate break once left with every test green (issue 28, item 8).

Each test here failed on its break, made by hand (see each docstring), and
passes on the code as it is: acking a batch before its Redis write, and forget
markers that never become tombstones.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from freshrec.settings import Settings
from schemas.state import changelog_topic
from tests.streams.worker import (
    StartWorker,
    WorkerProcess,
    changelog_states,
    committed_offsets,
    lists_caught_up,
    newest_offsets,
    publish,
    read_list,
    stream,
    watch,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_chaos_a_batch_is_acked_only_once_its_lists_are_in_redis(
    worker_settings: Settings,
    start_worker: StartWorker,
    worker_with_lists: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
) -> None:
    """Redis keeps its data but refuses writes (``CLIENT PAUSE WRITE``) until the worker
    gives up and exits 75; the restarted worker must write the lists of the batch it could
    not write. Every other fault test restarts Redis empty, where the rewrite of every list
    hid a batch acked before its write. Break that this catches: ``streams/app.py``
    ``complete()`` acking (``watch.processed(ack_processed(...))``) before
    ``processor.write(ready)``: the offsets were committed, nothing was redelivered, and
    these lists stayed stale."""
    s = worker_settings.replace(retry_deadline_s=4.0)
    worker = worker_with_lists(s, stream(10, 2))
    redis_client.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
    try:
        during = stream(10, 2, start=100, prefix="d")
        publish(s, during)
        assert worker.proc is not None
        assert worker.proc.wait(60) == 75  # the retry deadline passed: exit without acking
        stale = sum(1 for n in range(10) if not lists_caught_up(s, redis_client, during[n::10]))
        committed = committed_offsets(s, newest_offsets(s))
    finally:
        redis_client.execute_command("CLIENT", "UNPAUSE")
    again = start_worker(s)
    again.wait_for(lambda: lists_caught_up(s, redis_client, during), 60, "the unwritten batch")
    print(
        f"\nchaos ack-after-redis-write: users_stale_at_exit={stale} "
        f"redelivered={again.metric_total('freshrec_worker_events_consumed_total'):.0f} "
        f"committed_at_exit={sum(max(o, 0) for o in committed.values())}"
    )
    assert stale == 10


def test_forget_markers_become_tombstones_after_their_retention(
    worker_settings: Settings,
    worker_with_lists: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
) -> None:
    """A forget writes a marker that drops the user's old events for
    ``FRESHREC_FORGET_RETENTION_S``; then the marker must become a tombstone, so that the
    compacted changelog forgets the user for good. No test reached the expiry before.
    Break that this catches: ``BatchProcessor.expire_forget_markers`` persisting nothing
    (the markers stayed for ever)."""
    s = worker_settings.replace(forget_retention_s=8.0)
    now = int(time.time() * 1000)
    worker = worker_with_lists(
        s, [watch(f"h{n}", "gone", f"item-{n}", now - 1000 + n) for n in range(5)]
    )
    forgot = int(time.time() * 1000)
    publish(s, [{"type": "forget", "event_id": "f1", "user_id": "gone", "ts": forgot}])
    worker.wait_for(lambda: read_list(redis_client, s, "gone") is None, 30, "the forget")
    marker = changelog_states(s).get("gone")
    assert marker is not None and marker.is_marker
    started = time.monotonic()
    worker.wait_for(
        lambda: "gone" in (states := changelog_states(s)) and states["gone"] is None,
        30,
        f"a tombstone for gone in {changelog_topic(s.app_id)}",
    )
    took = time.monotonic() - started
    assert worker.metric_total("freshrec_worker_forget_markers_expired_total") == 1
    print(f"\nmarker became a tombstone {took:.1f}s after it was seen (retention 8s)")
