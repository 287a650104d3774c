"""A logging filter that turns a fault repeated many times a second into a few lines.

librdkafka reports an unreachable broker on every reconnect attempt: an API
whose broker was down wrote about 9 error lines a second (issue 26). The
filter lets the first record of a kind through, then holds the alike ones
back and lets one through per backoff (1 s, 2 s, 4 s ... up to a minute) with
how many it held back, so the fault stays visible, with its rate, without
burying everything else. Records are alike when they have the same level and
the same text once numbers are masked (ports, milliseconds and librdkafka's
own "N identical error(s) suppressed" vary from one to the next). A kind that
stays quiet for twice the longest backoff starts over: its next record is
shown at once.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Numbers in a message; masked so that records differing only in them count as alike.
_NUMBERS = re.compile(r"\d+")


@dataclass(slots=True)
class _Run:
    delay_s: float
    next_at: float
    last_seen: float
    held: int = 0


class RepeatFilter(logging.Filter):
    """Pass the first record of a kind, then one per backoff with the count held back.

    Records below ``level`` pass untouched. ``clock`` is for tests.
    """

    def __init__(
        self,
        *,
        first_s: float = 1.0,
        cap_s: float = 60.0,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.first_s = first_s
        self.cap_s = cap_s
        self.level = level
        self._clock = clock
        self._runs: dict[tuple[int, str], _Run] = {}
        self._lock = threading.Lock()  # librdkafka logs from its own threads

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return True
        key = (record.levelno, _NUMBERS.sub("#", record.getMessage()))
        now = self._clock()
        with self._lock:
            run = self._runs.get(key)
            if run is None or now - run.last_seen > 2 * self.cap_s:
                if len(self._runs) > 1000:  # kinds that never end a run: forget the old ones
                    self._runs.clear()
                self._runs[key] = _Run(self.first_s, now + self.first_s, now)
                return True
            run.last_seen = now
            if now < run.next_at:
                run.held += 1
                return False
            held, waited = run.held, run.delay_s
            run.held = 0
            run.delay_s = min(2 * run.delay_s, self.cap_s)
            run.next_at = now + run.delay_s
        if held:
            record.msg = f"{record.getMessage()} ({held} more like it in the last {waited:g} s)"
            record.args = None
        return True
