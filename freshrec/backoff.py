"""Backoff schedules: how long to wait before the n-th retry.

Modelled on redis-py's ``redis.backoff``: small objects with one method, so a
policy can be swapped in tests (``NoBackoff``) without touching the retry loop.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod


class Backoff(ABC):
    """Delay before retry number ``failures`` (1 for the first retry)."""

    @abstractmethod
    def compute(self, failures: int) -> float: ...


class NoBackoff(Backoff):
    """Retry at once; for tests and for callers that wait on something else."""

    def compute(self, failures: int) -> float:
        return 0.0


class ExponentialJitterBackoff(Backoff):
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(failures-1))].

    Full jitter spreads retries of many workers hitting the same Redis outage,
    so they do not reconnect in lockstep when it comes back.
    """

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        if base < 0 or cap < base:
            raise ValueError(f"need 0 <= base <= cap, got base={base} cap={cap}")
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()

    def compute(self, failures: int) -> float:
        ceiling = min(self.cap, self.base * (2 ** max(0, failures - 1)))
        return self._rng.uniform(0, ceiling)
