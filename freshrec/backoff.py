"""Backoff schedules: how long to wait before the n-th retry.

One schedule for every retry in freshrec: the :class:`~freshrec.retry.RetryPolicy`
of the worker and redis-py's per-command ``Retry`` of every Redis client
(:func:`freshrec.redis_retry.redis_retry`) wait by the same object, so the same
settings give the same waits everywhere. The classes are redis-py's
``AbstractBackoff`` (one ``compute`` method), which is what lets redis-py's
``Retry`` take them; a test swaps in :class:`NoBackoff` without touching the
retry loop.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from redis.backoff import AbstractBackoff

if TYPE_CHECKING:
    from freshrec.settings import Settings


class Backoff(AbstractBackoff):
    """Delay before retry number ``failures`` (1 for the first retry)."""


class NoBackoff(Backoff):
    """Retry at once; for tests and for callers that wait on something else."""

    def compute(self, failures: int) -> float:
        return 0.0


class ExponentialJitterBackoff(Backoff):
    """Full-jitter exponential backoff: uniform in [0, :meth:`ceiling`].

    The ceiling starts at ``base`` for the first retry and doubles per failure
    up to ``cap``. Full jitter spreads retries of many workers hitting the same
    Redis outage, so they do not reconnect in lockstep when it comes back.
    (redis-py's own ``FullJitterBackoff`` starts its ceiling at twice the base;
    this one starts at the base, as ``retry_backoff_base_s`` is documented.)
    """

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        if base < 0 or cap < base:
            raise ValueError(f"need 0 <= base <= cap, got base={base} cap={cap}")
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()

    @classmethod
    def from_settings(cls, settings: Settings) -> ExponentialJitterBackoff:
        """The schedule of ``retry_backoff_base_s`` and ``retry_backoff_cap_s``."""
        return cls(settings.retry_backoff_base_s, settings.retry_backoff_cap_s)

    def ceiling(self, failures: int) -> float:
        """The longest wait before retry number ``failures``: ``min(cap, base * 2**(n-1))``."""
        return min(self.cap, self.base * (2 ** max(0, failures - 1)))

    def compute(self, failures: int) -> float:
        return self._rng.uniform(0, self.ceiling(failures))

    def __eq__(self, other: object) -> bool:
        """Equal schedules (redis-py compares its ``Retry`` objects by their backoff)."""
        if not isinstance(other, ExponentialJitterBackoff):
            return NotImplemented
        return (self.base, self.cap) == (other.base, other.cap)

    def __hash__(self) -> int:
        return hash((type(self), self.base, self.cap))
