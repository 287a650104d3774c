"""RepeatFilter: a fault logged many times a second shows once, then at a backoff with a count.

Issue 26, item 4: an API whose broker was down wrote about 9 librdkafka error lines a second.
"""

from __future__ import annotations

import logging

from freshrec.repeats import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(message: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("t", level, __file__, 1, "%s", (message,), None)


def shown(flt: RepeatFilter, clock: Clock, message: str, at: float) -> str | None:
    clock.now = at
    rec = record(message)
    return rec.getMessage() if flt.filter(rec) else None


def test_alike_records_show_once_then_at_a_doubling_backoff_with_the_count() -> None:
    clock = Clock()
    flt = RepeatFilter(first_s=1.0, cap_s=4.0, clock=clock)
    out = [
        shown(flt, clock, f"Connect to 127.0.0.1:{9000 + i} failed (after {i}ms)", i * 0.1)
        for i in range(100)  # 10 s at 10 a second
    ]
    passed = [m for m in out if m is not None]
    assert passed[0] == "Connect to 127.0.0.1:9000 failed (after 0ms)"
    # then at 1 s, 3 s (after 2), 7 s (after 4), and the cap holds the wait at 4 s
    assert len(passed) == 4
    assert passed[1].endswith("(9 more like it in the last 1 s)")
    assert passed[2].endswith("(19 more like it in the last 2 s)")
    assert passed[3].endswith("(39 more like it in the last 4 s)")


def test_other_kinds_and_quieter_levels_pass_and_a_quiet_kind_starts_over() -> None:
    clock = Clock()
    flt = RepeatFilter(first_s=1.0, cap_s=2.0, clock=clock)
    assert shown(flt, clock, "broker down", 0.0) == "broker down"
    assert shown(flt, clock, "broker down", 0.1) is None
    assert shown(flt, clock, "topic missing", 0.2) == "topic missing"
    info = record("broker down", logging.INFO)
    assert flt.filter(info)
    assert shown(flt, clock, "broker down", 10.0) == "broker down"  # quiet 2 x cap: a new run
