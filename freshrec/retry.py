"""A retry policy object for transient faults, sync and asyncio.

The policy retries only the exception types it is given (``TransientError`` by
default), waits according to a :class:`~freshrec.backoff.Backoff`, and gives up
after a number of attempts or a deadline, re-raising the last error. Faust acks
an event when the agent raises, so streaming code wraps every Redis and broker
call in ``await policy.call_async(...)`` and lets nothing transient escape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from freshrec.backoff import Backoff, ExponentialJitterBackoff
from freshrec.errors import TransientError

if TYPE_CHECKING:
    from freshrec.settings import Settings

T = TypeVar("T")
OnRetry = Callable[[BaseException, int, float], None]


class RetryPolicy:
    """Retry ``retry_on`` errors up to ``max_attempts`` times or until ``deadline_s`` passes.

    ``on_retry(error, failures, delay)`` is called before each wait; use it for
    logs and metrics. ``max_attempts=None`` means "until the deadline".
    """

    def __init__(
        self,
        backoff: Backoff,
        *,
        max_attempts: int | None = None,
        deadline_s: float | None = None,
        retry_on: tuple[type[BaseException], ...] = (TransientError,),
        on_retry: OnRetry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_attempts is None and deadline_s is None:
            raise ValueError("a retry policy needs max_attempts, deadline_s or both")
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.deadline_s = deadline_s
        self.retry_on = retry_on
        self.on_retry = on_retry
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> RetryPolicy:
        """The worker's policy: jittered backoff, bounded by ``retry_deadline_s``."""
        kwargs.setdefault("deadline_s", settings.retry_deadline_s)
        return cls(ExponentialJitterBackoff.from_settings(settings), **kwargs)

    def _next_delay(self, error: BaseException, failures: int, started: float) -> float | None:
        """The wait before the next attempt, or None when the policy gives up."""
        if self.max_attempts is not None and failures >= self.max_attempts:
            return None
        delay = self.backoff.compute(failures)
        if self.deadline_s is not None:
            left = self.deadline_s - (self._clock() - started)
            if left <= 0:
                return None
            delay = min(delay, left)
        if self.on_retry is not None:
            self.on_retry(error, failures, delay)
        return delay

    def call(self, fn: Callable[[], T]) -> T:
        started = self._clock()
        failures = 0
        while True:
            try:
                return fn()
            except self.retry_on as error:
                failures += 1
                delay = self._next_delay(error, failures, started)
                if delay is None:
                    raise
                time.sleep(delay)

    async def call_async(self, fn: Callable[[], Awaitable[T]]) -> T:
        started = self._clock()
        failures = 0
        while True:
            try:
                return await fn()
            except self.retry_on as error:
                failures += 1
                delay = self._next_delay(error, failures, started)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
