"""The progress watch's decision (``ProgressWatch.judge``), on hand-made broker answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from freshrec.settings import Settings
from streams.liveness import ProgressWatch, TopicShape
from streams.metrics import WorkerMetrics

TOPIC = "watch"
HELD = [(TOPIC, 0)]
SHAPES = {TOPIC: TopicShape("id-1", 4)}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def watch_of(clock: Clock | None = None) -> ProgressWatch:
    return ProgressWatch(Settings(stall_timeout_s=30.0), [TOPIC], WorkerMetrics(), clock or Clock())


def test_regression_one_end_offset_below_what_was_read_is_not_yet_a_lost_log() -> None:
    """The local broker once answered 0 for a partition the worker had read a record of,
    and the worker exited 75 (tests/streams/test_recovery.py, under load)."""
    watch = watch_of()
    watch.received([(TOPIC, 0, 0)])
    assert watch.judge(HELD, {(TOPIC, 0): 0}, SHAPES).stalled is None
    assert watch.judge(HELD, {(TOPIC, 0): 1}, SHAPES).stalled is None
    assert watch.judge(HELD, {(TOPIC, 0): 0}, SHAPES).stalled is None  # not two in a row


def test_an_end_below_what_was_read_at_two_checks_in_a_row_is_a_lost_log() -> None:
    watch = watch_of()
    watch.received([(TOPIC, 0, 41)])
    assert watch.judge(HELD, {(TOPIC, 0): 3}, SHAPES).stalled is None
    verdict = watch.judge(HELD, {(TOPIC, 0): 3}, SHAPES).stalled
    assert verdict is not None and "below offset 42" in verdict


def test_a_topic_created_again_is_a_lost_log_at_once() -> None:
    watch = watch_of()
    assert watch.judge(HELD, {(TOPIC, 0): 5}, SHAPES).stalled is None
    verdict = watch.judge(HELD, {(TOPIC, 0): 50}, {TOPIC: TopicShape("id-2", 4)}).stalled
    assert verdict is not None and "created again" in verdict


def test_records_waiting_with_no_progress_for_the_stall_timeout_is_a_stall() -> None:
    clock = Clock()
    watch = watch_of(clock)
    watch.received([(TOPIC, 0, 9)])
    clock.now = 29.0
    assert watch.judge(HELD, {(TOPIC, 0): 20}, SHAPES).stalled is None
    clock.now = 31.0
    verdict = watch.judge(HELD, {(TOPIC, 0): 20}, SHAPES).stalled
    assert verdict is not None and "10 record(s) waiting" in verdict
    watch.batch_started()  # a batch in flight is never a stall
    assert watch.judge(HELD, {(TOPIC, 0): 20}, SHAPES).stalled is None


def sample(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    value = metrics.registry.get_sample_value(name, labels)
    return value


def test_regression_lag_counts_a_backlog_nothing_was_processed_of() -> None:
    """Regression (issue 28): a batch that never completed left the lag gauge at 0 (it
    counted from the fetch position). It counts from the first offset received."""
    metrics = WorkerMetrics()
    watch = ProgressWatch(Settings(), [TOPIC], metrics, Clock())
    watch.received([(TOPIC, 0, n) for n in range(10, 20)])
    watch._measure_lag(HELD, {(TOPIC, 0): 50})
    assert sample(metrics, "freshrec_worker_consumer_lag", topic=TOPIC, partition="0") == 40
    watch.processed({(TOPIC, 0): 20})
    watch._measure_lag(HELD, {(TOPIC, 0): 50})
    assert sample(metrics, "freshrec_worker_consumer_lag", topic=TOPIC, partition="0") == 30


def test_lag_has_an_age_that_grows_while_the_broker_does_not_answer() -> None:
    clock = Clock()
    metrics = WorkerMetrics()
    watch = ProgressWatch(Settings(), [TOPIC], metrics, clock)
    watch._measure_lag(HELD, {(TOPIC, 0): 5})
    clock.now = 42.0
    assert sample(metrics, "freshrec_worker_consumer_lag_age_seconds") == 42.0


def test_a_topic_that_no_longer_exists_is_a_lost_log() -> None:
    """Regression (issue 28): freshrec no longer creates topics by asking for them, so a
    broker back empty shows as event topics gone, not created again."""
    watch = watch_of()
    watch.received([(TOPIC, 0, 7)])
    assert watch.judge(HELD, {(TOPIC, 0): 8}, SHAPES).stalled is None
    verdict = watch.judge([], {}, {})
    assert verdict.lost and verdict.stalled is not None
    assert "no longer exists" in verdict.stalled and "8 offset(s)" in verdict.stalled


def test_the_next_process_counts_the_offsets_of_a_topic_created_again(tmp_path: Path) -> None:
    """Issue 28, item 2: what a previous run had seen of a log the broker lost is counted
    once, by the process that lives on, from the ledger in the data directory."""
    ledger = tmp_path / "offsets-seen.json"
    first = ProgressWatch(Settings(), [TOPIC], WorkerMetrics(), Clock(), ledger=ledger)
    first.received([(TOPIC, 0, 29), (TOPIC, 1, 11)])
    first._reconcile(SHAPES, {})
    first._keep_ledger([(TOPIC, 0), (TOPIC, 1)], SHAPES)
    assert orjson.loads(ledger.read_bytes())[TOPIC]["reached"] == {"0": 30, "1": 12}
    metrics = WorkerMetrics()
    second = ProgressWatch(Settings(), [TOPIC], metrics, Clock(), ledger=ledger)
    second._reconcile({TOPIC: TopicShape("id-2", 4)}, {(TOPIC, 0): 3})
    assert sample(metrics, "freshrec_worker_broker_lost_offsets_total", topic=TOPIC) == 42
    third_metrics = WorkerMetrics()
    second._keep_ledger([], {TOPIC: TopicShape("id-2", 4)})
    third = ProgressWatch(Settings(), [TOPIC], third_metrics, Clock(), ledger=ledger)
    third._reconcile({TOPIC: TopicShape("id-2", 4)}, {})
    assert sample(third_metrics, "freshrec_worker_broker_lost_offsets_total", topic=TOPIC) == 0


def test_a_commit_past_the_end_at_two_checks_in_a_row_rewinds_the_partition() -> None:
    """Regression (issue 28): a worker still running after the broker lost its log
    committed its old offsets (600) on the new log, and the next worker waited at 600 for
    ever on the local broker, which answers a fetch past the end with nothing."""
    rewound: list[list[tuple[str, int]]] = []

    async def rewind(partitions: list[tuple[str, int]]) -> None:
        rewound.append(partitions)

    commits = {(TOPIC, 0): 600, (TOPIC, 1): 10}
    watch = ProgressWatch(
        Settings(), [TOPIC], WorkerMetrics(), Clock(), committed=commits.get, rewind=rewind
    )
    ends = {(TOPIC, 0): 25, (TOPIC, 1): 30}
    held = [(TOPIC, 0), (TOPIC, 1)]
    asyncio.run(watch._rewind_commits_past_the_end(held, ends))
    assert rewound == []  # one answer may be the broker's slip
    asyncio.run(watch._rewind_commits_past_the_end(held, ends))
    assert rewound == [[(TOPIC, 0)]]
