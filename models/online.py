"""Online figures of a model version from its counts: hit rates with confidence intervals.

Pure arithmetic over :class:`schemas.online.OnlineCounts`, for ``freshrec models
online`` (and the ops page). A hit rate is a binomial proportion (events on an
item of the user's last list over all events); its interval is Wilson's score
interval, which keeps its coverage for small counts and rates near 0, where the
normal approximation's does not (a new version with 40 events and 2 hits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from schemas.online import OnlineCounts

#: Two-sided 95%: the interval ``freshrec models online`` prints.
Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion; ``(0, 1)`` when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class OnlineFigures:
    """What ops read about one version and arm."""

    events: int
    hit_rate10: float
    hit_rate10_ci: tuple[float, float]
    hit_ratek: float
    hit_ratek_ci: tuple[float, float]
    k: int
    mrr: float
    """Mean reciprocal rank of the event's item in the list (0 for a miss)."""
    rated: int
    mean_rating: float | None
    """Mean rating given to recommended items (None before any)."""

    @classmethod
    def of(cls, counts: OnlineCounts) -> OnlineFigures:
        n = counts.events
        return cls(
            events=n,
            hit_rate10=counts.hits10 / n if n else 0.0,
            hit_rate10_ci=wilson(counts.hits10, n),
            hit_ratek=counts.hitsk / n if n else 0.0,
            hit_ratek_ci=wilson(counts.hitsk, n),
            k=counts.k,
            mrr=counts.rr / n if n else 0.0,
            rated=counts.rated,
            mean_rating=counts.rating / counts.rated if counts.rated else None,
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "events": self.events,
            "hit_rate@10": self.hit_rate10,
            "hit_rate@10_ci95": list(self.hit_rate10_ci),
            "hit_rate@k": self.hit_ratek,
            "hit_rate@k_ci95": list(self.hit_ratek_ci),
            "k": self.k,
            "mrr": self.mrr,
            "rated": self.rated,
            "mean_rating": self.mean_rating,
        }
