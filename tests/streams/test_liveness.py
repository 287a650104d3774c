"""The progress watch's decision (``ProgressWatch.judge``), on hand-made broker answers."""

from __future__ import annotations

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
