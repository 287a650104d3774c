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

How it searches (issue 25): **Optuna's TPE sampler with a fixed seed**, after
the base configuration. The search is bounded by a number of trials, never by
speed alone, so the same data and seed choose the same configuration on any
machine and under any load: ALS fits are deterministic whatever the thread
count (BLAS runs one thread, each user's solve is its own), and the scores are
rounded to :data:`SCORE_DIGITS` before the sampler or the choice sees them,
so the last bits of a float cannot steer the search. A wall-clock safety limit
(``budget_s``) stops a search that runs away (a machine far slower than
planned); it is reported (``TuneResult.timed_out``) and the result falls back
to the untuned base configuration, since a search cut short at a
load-dependent point would choose a load-dependent model.

Why TPE rather than the random search (a shifted Halton sequence) used before:
its seeded sampler is reproducible by construction, and it models the scores,
so its later trials go where the good ones were instead of spreading evenly.
Measured on the long-history profile at 300 users, neither beat the base
configuration's validation score within 20 trials (BENCHMARKS.md, retrain); the base
is what both keep then. Not successive halving: it needs
a cheap, low-fidelity score to discard configurations early, and ALS's natural
ones mislead on the parameter that matters most. A fit on a sample of the users
shifts the best regularization (λ is not scaled by the number of
interactions), and a fit with fewer iterations favours the weakly regularised
configurations that overfit later. The base configuration is always trial 0
(and the sampler is told its score), so tuning never does worse on validation
than the defaults.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import optuna

from models.als import ALSConfig, train
from models.evaluate import Holdout, SplitKind, split_log
from models.interactions import InteractionLog
from models.weighting import DEFAULT_WEIGHTING, WeightingConfig, confidence_matrix

log = logging.getLogger(__name__)

# Optuna logs every trial at INFO on its own logger; ours logs them at DEBUG.
optuna.logging.set_verbosity(optuna.logging.WARNING)

#: Configurations scored by default, the base included. A trial costs about two bare
#: fits (the space's expensive end): with 12, a retrain of 300k interactions took 24
#: bare fits (``loadtests/bench_retrain.py``'s ratio_tuned; goal 15, not met yet);
#: on the long-history profile neither TPE nor random search beat the base
#: configuration's validation score within 20 trials at 300 users (BENCHMARKS.md, retrain).
DEFAULT_TRIALS = 12
#: Trials TPE draws at random before it models the scores.
STARTUP_TRIALS = 5
#: Digits a validation score is rounded to before the search sees it: two machines'
#: scores of one configuration must compare equal even if their last bits differ.
SCORE_DIGITS = 6


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
    those of the best trial (the earliest among equal scores), or the base's when
    the search hit its safety limit (``timed_out``).
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
    base_score: float = 0.0  # validation nDCG@k of the base configuration
    max_trials: int = DEFAULT_TRIALS
    timed_out: bool = False  # the safety limit stopped the search: the base was kept
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
            "base_score": self.base_score,
            "max_trials": self.max_trials,
            "timed_out": self.timed_out,
            "seconds": round(self.seconds, 3),
            "trials": [t.as_dict() for t in self.trials],
        }


def _suggest(
    trial: optuna.Trial, base: ALSConfig, base_weighting: WeightingConfig, space: SearchSpace
) -> tuple[ALSConfig, WeightingConfig]:
    """The configuration ``trial`` samples; the other fields stay the base's."""
    als = replace(
        base,
        factors=8 * trial.suggest_int("factors_x8", *_factor_units(space), log=True),
        regularization=float(
            f"{trial.suggest_float('regularization', *space.regularization, log=True):.3g}"
        ),
        alpha=float(f"{trial.suggest_float('alpha', *space.alpha, log=True):.3g}"),
        iterations=trial.suggest_int("iterations", *space.iterations),
    )
    pick = trial.suggest_categorical("negative_below", space.negative_below)
    return als, replace(base_weighting, negative_below=float(pick))


def _factor_units(space: SearchSpace) -> tuple[int, int]:
    """The factors range in units of 8 (full SIMD lanes)."""
    lo, hi = space.factors
    return max(1, round(lo / 8)), max(1, round(hi / 8))


def _base_trial(
    als: ALSConfig, weighting: WeightingConfig, score: float, space: SearchSpace
) -> optuna.trial.FrozenTrial | None:
    """The base configuration as a finished trial the sampler learns from; None when it
    lies outside the searched space."""
    units = _factor_units(space)
    distributions: dict[str, Any] = {
        "factors_x8": optuna.distributions.IntDistribution(*units, log=True),
        "regularization": optuna.distributions.FloatDistribution(*space.regularization, log=True),
        "alpha": optuna.distributions.FloatDistribution(*space.alpha, log=True),
        "iterations": optuna.distributions.IntDistribution(*space.iterations),
        "negative_below": optuna.distributions.CategoricalDistribution(space.negative_below),
    }
    params = {
        "factors_x8": als.factors // 8,
        "regularization": als.regularization,
        "alpha": als.alpha,
        "iterations": als.iterations,
        "negative_below": weighting.negative_below,
    }
    inside = (
        als.factors % 8 == 0
        and units[0] <= params["factors_x8"] <= units[1]
        and space.regularization[0] <= als.regularization <= space.regularization[1]
        and space.alpha[0] <= als.alpha <= space.alpha[1]
        and space.iterations[0] <= als.iterations <= space.iterations[1]
        and weighting.negative_below in space.negative_below
    )
    if not inside:
        return None
    return optuna.trial.create_trial(params=params, distributions=distributions, value=score)


def tune(
    train_log: InteractionLog,
    base: ALSConfig | None = None,
    base_weighting: WeightingConfig = DEFAULT_WEIGHTING,
    k: int = 10,
    budget_s: float = 600.0,
    how: SplitKind = "stratified-item",
    ratio: float = 0.75,
    seed: int = 42,
    max_trials: int = DEFAULT_TRIALS,
    space: SearchSpace = DEFAULT_SPACE,
    progress: Callable[[float, float], None] | None = None,
    on_trial: Callable[[int, float], None] | None = None,
) -> TuneResult:
    """Search configurations for ``train_log`` by validation nDCG@``k`` (see the module docstring).

    ``train_log`` must be the training part only: the validation split is
    carved from it (``how``, ``ratio``, seed ``seed + 1``). ``max_trials``
    configurations are scored, the base first; the same inputs give the same
    result on any machine. ``budget_s`` is a safety limit: no trial starts
    after it, and a search it cut short falls back to the base configuration
    (``timed_out``); the base trial always runs. ``progress`` is told (trials
    done, ``max_trials``) after each trial; ``on_trial`` (trials run, best score
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

    def score(als: ALSConfig, weighting: WeightingConfig) -> float:
        t0 = time.perf_counter()
        model = train(confidence_matrix(fit_log, weighting), als)
        value = holdout.score(model.user_factors, model.item_factors, k, als.num_threads)[metric]
        trials.append(Trial(als, weighting, round(value, SCORE_DIGITS), time.perf_counter() - t0))
        log.debug("tune trial %d: %s %s", len(trials), trials[-1].as_dict(), metric)
        if progress is not None:
            progress(len(trials), max_trials)
        if on_trial is not None:
            on_trial(len(trials), max(t.score for t in trials))
        return trials[-1].score

    base_score = score(base, base_weighting)
    sampler = optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=STARTUP_TRIALS,
        multivariate=True,
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    known = _base_trial(base, base_weighting, base_score, space)
    if known is not None:
        study.add_trial(known)
    tried = {(base, base_weighting)}
    timed_out = False
    while len(trials) < max_trials:
        if time.perf_counter() - started >= budget_s:
            timed_out = True
            log.warning(
                "tuning stopped at its safety limit of %.0f s after %d of %d trials: "
                "keeping the base configuration",
                budget_s,
                len(trials),
                max_trials,
            )
            break
        trial = study.ask()
        als, weighting = _suggest(trial, base, base_weighting, space)
        if (als, weighting) in tried:  # a repeat costs a fit and tells nothing new
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            if len(study.trials) > 4 * max_trials:  # a space too small for max_trials
                break
            continue
        tried.add((als, weighting))
        study.tell(trial, score(als, weighting))
    best = trials[0] if timed_out else max(trials, key=lambda t: t.score)  # earliest of ties
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
        base_score=base_score,
        max_trials=max_trials,
        timed_out=timed_out,
    )
