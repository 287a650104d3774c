"""The retry policy: retries transient faults only, within attempts and a deadline."""

from __future__ import annotations

import asyncio
import random

import pytest

from freshrec.backoff import ExponentialJitterBackoff, NoBackoff
from freshrec.errors import BadInputError, TransientError
from freshrec.retry import RetryPolicy
from freshrec.settings import Settings


class Flaky:
    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.calls = 0
        self.error = error or TransientError("down")

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def test_retries_transient_until_success() -> None:
    seen: list[int] = []
    policy = RetryPolicy(NoBackoff(), max_attempts=5, on_retry=lambda e, n, d: seen.append(n))
    fn = Flaky(3)
    assert policy.call(fn) == "ok"
    assert fn.calls == 4 and seen == [1, 2, 3]


def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    fn = Flaky(10)
    with pytest.raises(TransientError, match="down"):
        RetryPolicy(NoBackoff(), max_attempts=3).call(fn)
    assert fn.calls == 3


def test_bad_input_is_never_retried() -> None:
    fn = Flaky(1, BadInputError("user_id: bad"))
    with pytest.raises(BadInputError):
        RetryPolicy(NoBackoff(), max_attempts=5).call(fn)
    assert fn.calls == 1


def test_deadline_bounds_the_total_time() -> None:
    now = [0.0]

    class Clocked(NoBackoff):
        def compute(self, failures: int) -> float:
            now[0] += 1.0  # each retry "takes" a second on the fake clock
            return 0.0

    fn = Flaky(100)
    policy = RetryPolicy(Clocked(), deadline_s=5.0, clock=lambda: now[0])
    with pytest.raises(TransientError):
        policy.call(fn)
    assert 5 <= fn.calls <= 7


def test_async_form_retries_too() -> None:
    fn = Flaky(2)

    async def once() -> str:
        return fn()

    policy = RetryPolicy(NoBackoff(), max_attempts=3)
    assert asyncio.run(policy.call_async(once)) == "ok"
    assert fn.calls == 3


def test_policy_needs_a_bound() -> None:
    with pytest.raises(ValueError, match="needs max_attempts, deadline_s or both"):
        RetryPolicy(NoBackoff())


def test_jitter_backoff_stays_under_the_exponential_ceiling_and_cap() -> None:
    b = ExponentialJitterBackoff(0.1, 1.0, random.Random(3))
    for failures, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (30, 1.0)]:
        delays = [b.compute(failures) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8, "full jitter spreads over the whole range"


def test_from_settings_uses_the_named_knobs() -> None:
    policy = RetryPolicy.from_settings(
        Settings(retry_backoff_base_s=0.2, retry_backoff_cap_s=3, retry_deadline_s=9)
    )
    assert policy.deadline_s == 9
    assert isinstance(policy.backoff, ExponentialJitterBackoff)
    assert (policy.backoff.base, policy.backoff.cap) == (0.2, 3)
