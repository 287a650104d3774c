"""The hyperparameter search: ALS's and the dislike threshold, scored on validation data only.

What is searched (:class:`SearchSpace`): factors 16-128, regularization
0.01-100 and alpha 0.1-50 on log scales, iterations 5-30, and
``WeightingConfig.negative_below`` among a few thresholds including 0 (no
dislikes). Regularization reaches 100 because implicit does not scale λ by a
user's or item's number of interactions: on sparse, popularity-skewed rating
data the best λ is in the tens, and a grid that stops at 1 always picks its
edge (issue 9).

How it is scored: a validation split is carved from the training log alone
(the same kind of split and ratio as the outer one, with ``seed + 1``), each
configuration is fitted on the rest and scored by nDCG@k there. The test part
is never passed in, so it cannot leak into the choice.

How it searches: **random search**, with the candidates drawn as a randomly
shifted Halton sequence (low-discrepancy, so every prefix of the sequence
covers the space evenly), preceded by the base configuration. Not successive
halving: it needs a cheap, low-fidelity score to discard configurations early,
and ALS's natural ones mislead on the parameter that matters most. A fit on a
sample of the users shifts the best regularization (λ is not scaled by the
number of interactions), and a fit with fewer iterations favours the weakly
regularised configurations that overfit later. Random search scores every
candidate exactly as it will be used, stops cleanly at any point of its time
budget (the result is the best of a fixed sequence's prefix, the same for the
same seed and number of trials), and always keeps the base configuration as
trial 0, so tuning never does worse on validation than the defaults.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from models.als import ALSConfig, train
from models.evaluate import Holdout, SplitKind, split_log
from models.interactions import InteractionLog
from models.weighting import DEFAULT_WEIGHTING, WeightingConfig, confidence_matrix

log = logging.getLogger(__name__)

_PRIMES = (2, 3, 5, 7, 11)


@dataclass(frozen=True)
class SearchSpace:
    """The ranges :func:`tune` draws from (integers inclusive, floats log-uniform)."""

    factors: tuple[int, int] = (16, 128)
    """Log-uniform, rounded to a multiple of 8 (full SIMD lanes, and implicit's GPU
    kernel prefers multiples of 32)."""
    regularization: tuple[float, float] = (0.01, 100.0)
    """Log-uniform; wide enough for the heavy λ that sparse rating data wants."""
    alpha: tuple[float, float] = (0.1, 50.0)
    """Log-uniform multiplier of the confidences."""
    iterations: tuple[int, int] = (5, 30)
    """Uniform; implicit's conjugate-gradient solver mostly converges within 15."""
    negative_below: tuple[float, ...] = (0.0, 1.5, 2.5, 3.5)
    """Dislike thresholds tried; 0 means no dislikes (every rating counts as interest)."""

    def __post_init__(self) -> None:
        if not 1 <= self.factors[0] <= self.factors[1]:
            raise ValueError("SearchSpace.factors must be an increasing range from at least 1")
        if not 1 <= self.iterations[0] <= self.iterations[1]:
            raise ValueError("SearchSpace.iterations must be an increasing range from at least 1")
        for name in ("regularization", "alpha"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"SearchSpace.{name} must be an increasing range above 0")
        if not self.negative_below or min(self.negative_below) < 0:
            raise ValueError("SearchSpace.negative_below must hold thresholds of 0 or more")


DEFAULT_SPACE = SearchSpace()


@dataclass(frozen=True)
class Trial:
    """One scored candidate."""

    als: ALSConfig
    weighting: WeightingConfig
    score: float  # validation nDCG@k
    seconds: float  # fit and scoring time

    def as_dict(self) -> dict[str, Any]:
        """The searched values only (the rest are the base's), with score and time."""
        return {
            "factors": self.als.factors,
            "regularization": self.als.regularization,
            "alpha": self.als.alpha,
            "iterations": self.als.iterations,
            "negative_below": self.weighting.negative_below,
            "score": self.score,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class TuneResult:
    """The chosen configuration, its validation score, and every trial in the order run.

    ``trials[0]`` is always the base configuration; ``als``/``weighting`` are
    those of the best trial (the earliest among equal scores).
    """

    als: ALSConfig
    weighting: WeightingConfig
    score: float  # validation nDCG@k of the chosen configuration
    trials: tuple[Trial, ...]
    k: int
    split: SplitKind  # how the validation split was carved from the training log
    ratio: float
    seed: int
    budget_s: float
    seconds: float  # wall time of the whole search
    metric: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metric", f"ndcg@{self.k}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for a model version's params (``ALSConfig.from_dict`` and
        ``WeightingConfig.from_dict`` read ``als`` and ``weighting`` back)."""
        return {
            "als": self.als.as_dict(),
            "weighting": asdict(self.weighting),
            "metric": self.metric,
            "score": self.score,
            "split": self.split,
            "ratio": self.ratio,
            "seed": self.seed,
            "budget_s": self.budget_s,
            "seconds": round(self.seconds, 3),
            "trials": [t.as_dict() for t in self.trials],
        }


def _halton(index: int, base: int) -> float:
    """The radical inverse of ``index`` in ``base``: the Halton sequence's coordinate."""
    out, scale = 0.0, 1.0 / base
    while index > 0:
        index, digit = divmod(index, base)
        out += digit * scale
        scale /= base
    return out


def _log_uniform(u: float, lo: float, hi: float) -> float:
    return math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def candidates(
    base: ALSConfig,
    base_weighting: WeightingConfig = DEFAULT_WEIGHTING,
    space: SearchSpace = DEFAULT_SPACE,
    seed: int = 42,
) -> Iterator[tuple[ALSConfig, WeightingConfig]]:
    """The search order: ``base`` first, then distinct points of a shifted Halton sequence.

    The other fields (seed, threads, GPU; the weighting's other weights) stay
    the base's. Deterministic for ``seed``; endless, so the caller stops it.
    """
    shift = np.random.default_rng(seed).random(len(_PRIMES))
    seen = {(base, base_weighting)}
    yield base, base_weighting
    index = 0
    while True:
        index += 1
        u = [(_halton(index, p) + s) % 1.0 for p, s in zip(_PRIMES, shift, strict=True)]
        f_lo, f_hi = space.factors
        factors = round(_log_uniform(u[0], f_lo, f_hi) / 8.0) * 8
        it_lo, it_hi = space.iterations
        als = replace(
            base,
            factors=min(f_hi, max(f_lo, factors)),
            regularization=float(f"{_log_uniform(u[1], *space.regularization):.3g}"),
            alpha=float(f"{_log_uniform(u[2], *space.alpha):.3g}"),
            iterations=it_lo + min(it_hi - it_lo, int(u[3] * (it_hi - it_lo + 1))),
        )
        n_thresholds = len(space.negative_below)
        pick = space.negative_below[min(n_thresholds - 1, int(u[4] * n_thresholds))]
        weighting = replace(base_weighting, negative_below=float(pick))
        if (als, weighting) not in seen:
            seen.add((als, weighting))
            yield als, weighting


def tune(
    train_log: InteractionLog,
    base: ALSConfig | None = None,
    base_weighting: WeightingConfig = DEFAULT_WEIGHTING,
    k: int = 10,
    budget_s: float = 60.0,
    how: SplitKind = "stratified-item",
    ratio: float = 0.75,
    seed: int = 42,
    max_trials: int = 100,
    space: SearchSpace = DEFAULT_SPACE,
    progress: Callable[[float, float], None] | None = None,
    on_trial: Callable[[int, float], None] | None = None,
) -> TuneResult:
    """Search configurations for ``train_log`` by validation nDCG@``k`` (see the module docstring).

    ``train_log`` must be the training part only: the validation split is
    carved from it (``how``, ``ratio``, seed ``seed + 1``). A new trial starts
    while less than ``budget_s`` seconds have passed and fewer than
    ``max_trials`` have run, so the search ends within the budget plus one
    fit; the base trial always runs, even with a budget of 0. The same inputs
    and number of trials give the same result. ``progress`` is told (seconds
    spent, ``budget_s``) after each trial: the budget, not the number of
    trials, is what bounds the search; ``on_trial`` (trials run, best score
    so far), so a terminal shows the search as one bar with its best score.
    Each trial's configuration and score are logged at DEBUG: one INFO line per
    trial (44 in the demo) buried the progress bars (issue 26).
    """
    if budget_s < 0 or max_trials < 1 or k < 1:
        raise ValueError("tune needs budget_s >= 0, max_trials >= 1 and k >= 1")
    started = time.perf_counter()
    base = base or ALSConfig()
    fit_log, val_log = split_log(train_log, how, ratio, seed + 1)
    if len(fit_log) == 0 or len(val_log) == 0:
        raise ValueError("the validation split left the fitting or the validation part empty")
    holdout = Holdout.of(fit_log, val_log)
    metric = f"ndcg@{k}"
    trials: list[Trial] = []
    for als, weighting in candidates(base, base_weighting, space, seed):
        if trials and (len(trials) >= max_trials or time.perf_counter() - started >= budget_s):
            break
        t0 = time.perf_counter()
        model = train(confidence_matrix(fit_log, weighting), als)
        score = holdout.score(model.user_factors, model.item_factors, k, als.num_threads)[metric]
        trials.append(Trial(als, weighting, score, time.perf_counter() - t0))
        log.debug("tune trial %d: %s %s", len(trials), trials[-1].as_dict(), metric)
        if progress is not None:
            progress(time.perf_counter() - started, budget_s)
        if on_trial is not None:
            on_trial(len(trials), max(t.score for t in trials))
    best = max(trials, key=lambda t: t.score)  # max keeps the earliest of equal scores
    return TuneResult(
        best.als,
        best.weighting,
        best.score,
        tuple(trials),
        k,
        how,
        ratio,
        seed,
        budget_s,
        time.perf_counter() - started,
    )
