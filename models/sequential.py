"""A sequential test of two hit rates that stays valid however often it is looked at.

A canary's two arms (the current model, the candidate) each yield a stream of
events, each a hit or not (the event's item was in the top 10 of the list the
user was shown: :mod:`streams.online`). Ops and the worker look at the
difference continuously; a fixed-horizon test looked at after every batch
would declare a difference by chance far more often than its level says (at
every look it gets a fresh chance to cross). This is the mixture sequential
probability ratio test (mSPRT) of Johari, Koomen, Pekelis and Walsh, "Always
Valid Inference" (2017/2022), the test behind Optimizely's Stats Engine:

* the statistic is the likelihood ratio of "the difference is θ" against
  "it is 0", averaged over a normal mixture θ ~ N(0, τ²), with the estimated
  difference θ̂ = p̂_candidate − p̂_current approximately normal with variance
  V = p̂₁(1−p̂₁)/n₁ + p̂₂(1−p̂₂)/n₂::

      Λ = sqrt(V / (V + τ²)) · exp(θ̂² τ² / (2 V (V + τ²)))

* it is a nonnegative martingale under the null, so by Ville's inequality the
  chance that it *ever* reaches 1/α is at most α: the test rejects the first
  time Λ ≥ 1/α, at whatever looks, and the decision is valid for an
  optional-stopping reader (the always-valid p-value is min(1, 1/max Λ));
* inverting it gives a confidence sequence for the difference (the interval
  ``canary status`` prints), valid at every look at once.

Why this one and not a group-sequential design: canaries are looked at
whenever ops or the worker look, not at a few planned interim analyses, and
their length is not fixed in advance; an alpha-spending design needs both. The
mixture test needs neither, costs one formula per look, and its price, a
larger sample than a fixed-horizon test for the same power, is stated below and
checked by simulation (``tests/models/test_sequential.py``).

``τ`` is the size of difference the test is tuned to find: 0.005 is a 10%
relative change of a 5% hit rate. The normal approximation is poor for tiny
counts, so no decision is taken before ``min_events`` events in each arm.

Design figures at α = 0.05, τ = 0.005, looks every 100 events, current at 5%:
an A/A comparison declares a difference in at most α of runs (simulated over
100,000 events per arm: about 2%, as the mixture test is conservative), and a
candidate 10% better (5.5%) is detected within :data:`DESIGN_EVENTS` (60,000)
events per arm in at least :data:`DESIGN_POWER` (85%) of runs; 80% power
comes at about 50,000. A fixed-horizon z-test looked at once would need about
31,000 per arm for 80%: continuous monitoring costs about 1.6 times the events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    import numpy as np

    from schemas.online import OnlineCounts

#: Events per arm within which the design detects a 10% lift on a 5% hit rate...
DESIGN_EVENTS = 60_000
#: ...in at least this share of runs (at α = 0.05, τ = 0.005; simulated: 0.87-0.88).
DESIGN_POWER = 0.85

Decision = Literal["continue", "candidate better", "candidate worse"]


@dataclass(frozen=True)
class Look:
    """The test at one look."""

    decision: Decision
    difference: float
    """θ̂: the candidate's hit rate minus the current's."""
    interval: tuple[float, float]
    """The always-valid (1 − α) confidence sequence for the difference at this look."""
    likelihood_ratio: float
    p_value: float
    """min(1, 1/Λ) at this look: always valid if the reader keeps the smallest so far."""
    events: tuple[int, int]
    """Events of the current arm, the candidate's."""

    def as_dict(self) -> dict[str, object]:
        return {
            "decision": self.decision,
            "difference": self.difference,
            "interval": list(self.interval),
            "likelihood_ratio": self.likelihood_ratio,
            "p_value": self.p_value,
            "events": list(self.events),
        }


def mixture_log_ratio(
    hits_a: np.ndarray, n_a: np.ndarray, hits_b: np.ndarray, n_b: np.ndarray, tau: float
) -> np.ndarray:
    """log Λ elementwise (arrays of any shape: a simulation's runs x looks)."""
    import numpy as np

    p_a = hits_a / np.maximum(n_a, 1)
    p_b = hits_b / np.maximum(n_b, 1)
    theta = p_b - p_a
    v = p_a * (1 - p_a) / np.maximum(n_a, 1) + p_b * (1 - p_b) / np.maximum(n_b, 1)
    v = np.maximum(v, _V_FLOOR)
    t2 = tau * tau
    log_ratio: np.ndarray = 0.5 * np.log(v / (v + t2)) + theta * theta * t2 / (2 * v * (v + t2))
    return log_ratio


#: The variance used when neither arm has a hit yet (or both hit always): no evidence.
_V_FLOOR = 1e-12


def _scalar(hits_a: int, n_a: int, hits_b: int, n_b: int, tau: float) -> tuple[float, float, float]:
    """log Λ, θ̂ and V of one look, as :func:`mixture_log_ratio` (no numpy: the API
    imports this module and has no other use for numpy)."""
    p_a, p_b = hits_a / max(n_a, 1), hits_b / max(n_b, 1)
    theta = p_b - p_a
    v = max(p_a * (1 - p_a) / max(n_a, 1) + p_b * (1 - p_b) / max(n_b, 1), _V_FLOOR)
    t2 = tau * tau
    return 0.5 * math.log(v / (v + t2)) + theta * theta * t2 / (2 * v * (v + t2)), theta, v


def look(
    hits_a: int,
    n_a: int,
    hits_b: int,
    n_b: int,
    *,
    alpha: float = 0.05,
    tau: float = 0.005,
    min_events: int = 1000,
) -> Look:
    """The test at one look, arm a being the current model and b the candidate."""
    log_ratio, theta, v = _scalar(hits_a, n_a, hits_b, n_b, tau)
    t2 = tau * tau
    half = math.sqrt(v * (v + t2) / t2 * (math.log((v + t2) / v) + 2 * math.log(1 / alpha)))
    ready = min(n_a, n_b) >= min_events
    decision: Decision = "continue"
    if ready and log_ratio >= math.log(1 / alpha):
        decision = "candidate better" if theta > 0 else "candidate worse"
    ratio = math.exp(min(log_ratio, 700.0))
    return Look(
        decision,
        theta,
        (theta - half, theta + half),
        ratio,
        min(1.0, 1 / ratio),
        (n_a, n_b),
    )


class CanaryTestSettings(Protocol):
    """The numbers a canary's test is run with: ``FRESHREC_CANARY_ALPHA``, ``_TAU`` and
    ``_MIN_EVENTS``. :class:`freshrec.settings.Settings` has them; they are read by name
    so that this pure module imports no settings."""

    @property
    def canary_alpha(self) -> float: ...

    @property
    def canary_tau(self) -> float: ...

    @property
    def canary_min_events(self) -> int: ...


def look_at_canary(
    current: OnlineCounts, candidate: OnlineCounts, settings: CanaryTestSettings
) -> Look:
    """The test at one look at a canary's two arms (hits in the top 10 over events), as the
    worker, ``freshrec models canary status`` and the ops page all run it."""
    return look(
        current.hits10,
        current.events,
        candidate.hits10,
        candidate.events,
        alpha=settings.canary_alpha,
        tau=settings.canary_tau,
        min_events=settings.canary_min_events,
    )


def first_rejection(
    hits_a: np.ndarray,
    n_a: np.ndarray,
    hits_b: np.ndarray,
    n_b: np.ndarray,
    *,
    alpha: float,
    tau: float,
    min_events: int,
) -> np.ndarray:
    """Per run (rows of cumulative counts at each look, columns), the index of the first
    look that rejects, or -1: what a reader looking at every column would do."""
    import numpy as np

    log_ratio = mixture_log_ratio(hits_a, n_a, hits_b, n_b, tau)
    reject = (log_ratio >= math.log(1 / alpha)) & (np.minimum(n_a, n_b) >= min_events)
    first = reject.argmax(axis=1)
    return np.where(reject.any(axis=1), first, -1)
