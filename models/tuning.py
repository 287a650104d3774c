"""The hyperparameter search: ALS's and the dislike threshold, scored on validation data only.

What is searched (:class:`SearchSpace`): factors 16-64, regularization
0.01-100 and alpha 0.1-50 on log scales, iterations 8-20, and
``WeightingConfig.negative_below`` among a few thresholds including 0 (no
dislikes). Regularization reaches 100 because implicit does not scale λ by a
user's or item's number of interactions: on sparse, popularity-skewed rating
data the best λ is in the tens, and a grid that stops at 1 always picks its
edge (issue 9).

How it is scored: a validation split is carved from the training log alone
(the same kind of split and ratio as the outer one, with ``seed + 1``), each
configuration is fitted on the rest and scored by nDCG@k there, on at most
:data:`DEFAULT_SCORE_USERS` of the validation users (a seeded sample). The test
part is never passed in, so it cannot leak into the choice.

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
The base configuration is always trial 0 (and the sampler is told its score),
so tuning never does worse on validation than the defaults.

What a search costs (issue 25: 24 bare fits on 300k interactions against a
goal of 15), profiled per trial on the watch log of ``bench_retrain.py``
(30,000 users, 225k training rows): the fit on the fitting part, about a
bare fit at the base configuration but six at the wide space's far corner
(128 factors, 30 iterations), and the scoring, which ranked every validation
user and cost as much as the base's fit. Measured with
``loadtests/bench_tuning.py`` (same data, seed and 12 trials; CPU seconds of
the search over a bare fit's, and the chosen configuration's validation nDCG):

- the narrower space (:data:`NARROW_SPACE`: at most 64 factors, 8-20
  iterations, where every chosen configuration lay) cut the cost by 12-20%
  and chose as well or better;
- scoring on 5,000 validation users cut the watch log's by 12% (nothing on a
  profile with fewer users), its choice within 1% on the whole split;
- the pruner (Optuna's ``MedianPruner``: a trial scored at :data:`PRUNE_AT`
  iterations, stopped there when below the median of the earlier trials at
  that point) stopped 4-6 of 12 trials, cut the cost by 22-37%, and chose
  what the search without it chose on both profiles; the worry that early scores favour weakly
  regularised models that overfit later holds for choosing by them, not for
  dropping the bottom half, which is all it does;
- the three together: 25.1 -> 11.9 bare fits on the watch log, 20.4 -> 12.5 on
  the long-history profile, choosing the narrow space's configuration (nDCG
  +0.4% and +3.5% over the wide search's choice). The defaults;
- trials fitted on half of the users (``sample``), the winner refitted on all
  and kept only if it beats the base there: cheaper (21-32% alone) but it
  chose worse (0.4% below the wide search's choice on both profiles; with the
  narrow space the long-history profile kept the base, 3.7% below the narrow
  search's choice): λ is not scaled by the number of interactions, so the
  best one moves with the data's size. Off by default;
- warm starts: the retrain already starts its search from the current
  version's configuration (trial 0). Starting fits from the current
  version's factors would make the model depend on the previous one, not only
  on the data, which the same-model-on-any-machine rule forbids; not used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import optuna

from models.als import ALSConfig, train
from models.evaluate import Holdout, SplitKind, split_log
from models.ids import IdMap
from models.interactions import InteractionLog
from models.weighting import DEFAULT_WEIGHTING, WeightingConfig, confidence_matrix

log = logging.getLogger(__name__)

# Optuna logs every trial at INFO on its own logger; ours logs them at DEBUG.
optuna.logging.set_verbosity(optuna.logging.WARNING)

#: Configurations scored by default, the base included. A trial costs about two bare
#: fits in the wide space: with 12, a retrain of 300k interactions took 24 bare fits
#: (``loadtests/bench_retrain.py``'s ratio_tuned; goal 15); the narrow space, scoring
#: on 5,000 users and the pruner halved the search (``loadtests/bench_tuning.py``).
DEFAULT_TRIALS = 12
#: Trials TPE draws at random before it models the scores.
STARTUP_TRIALS = 5
#: The fraction of the fitting users the trials run on by default (1: all).
DEFAULT_SAMPLE = 1.0
#: Whether trials may be stopped part way (at PRUNE_AT iterations) by default.
DEFAULT_PRUNE = True
#: The most validation users a trial is scored on by default (None: all): as many as
#: the gate's hold-out (``FRESHREC_RETRAIN_GATE_USERS``' default).
DEFAULT_SCORE_USERS: int | None = 5000
#: The iteration at which a trial is scored for the pruner.
PRUNE_AT = 5
#: Finished trials (the base's included) the pruner waits for before it stops any.
PRUNE_STARTUP_TRIALS = 3
#: Digits a validation score is rounded to before the search sees it: two machines'
#: scores of one configuration must compare equal even if their last bits differ.
SCORE_DIGITS = 6


@dataclass(frozen=True)
class SearchSpace:
    """The ranges :func:`tune` draws from (integers inclusive, floats log-uniform)."""

    factors: tuple[int, int] = (16, 64)
    """Log-uniform, rounded to a multiple of 8 (full SIMD lanes, and implicit's GPU
    kernel prefers multiples of 32). Up to 64: 128 factors cost four times a 32-factor
    trial and never won on the measured profiles (``loadtests/bench_tuning.py``)."""
    regularization: tuple[float, float] = (0.01, 100.0)
    """Log-uniform; wide enough for the heavy λ that sparse rating data wants."""
    alpha: tuple[float, float] = (0.1, 50.0)
    """Log-uniform multiplier of the confidences."""
    iterations: tuple[int, int] = (8, 20)
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


#: The space searched before issue 25's cuts: 16-128 factors and 5-30 iterations. Its
#: expensive end (128 factors, 30 iterations) cost 6 bare fits a trial, and no
#: configuration chosen on the long-history profile or the watch log came from there.
WIDE_SPACE = SearchSpace(factors=(16, 128), iterations=(5, 30))
#: At most 64 factors and 8-20 iterations: where the chosen configurations of both
#: profiles lay (16-32 factors, 14-27 iterations). The default.
NARROW_SPACE = SearchSpace()
DEFAULT_SPACE = NARROW_SPACE


@dataclass(frozen=True)
class Trial:
    """One scored candidate."""

    als: ALSConfig
    weighting: WeightingConfig
    score: float  # validation nDCG@k (a pruned trial's: at PRUNE_AT iterations)
    seconds: float  # fit and scoring time
    pruned: bool = False  # stopped at PRUNE_AT iterations by the pruner: never chosen

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
            "pruned": self.pruned,
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
    sample: float = 1.0  # the fraction of the fitting users the trials ran on
    prune: bool = False  # whether the pruner could stop trials part way
    score_users: int | None = None  # the most validation users a trial was scored on
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
            "sample": self.sample,
            "prune": self.prune,
            "score_users": self.score_users,
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
    als: ALSConfig,
    weighting: WeightingConfig,
    score: float,
    space: SearchSpace,
    steps: dict[int, float] | None = None,
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
    return optuna.trial.create_trial(
        params=params,
        distributions=distributions,
        value=score,
        intermediate_values=dict(steps or {}),
    )


class _Pruned(Exception):
    """Raised from a fit's checkpoint to stop a trial the pruner gave up on."""


def _user_sample(
    fit_log: InteractionLog, val_log: InteractionLog, fraction: float, seed: int
) -> tuple[InteractionLog, InteractionLog]:
    """The rows of a seeded ``fraction`` of the fitting users, in both parts, with the users
    renumbered densely: ALS pays per user row, empty or not, so the sample's matrix holds
    the sampled users only (items keep their indices)."""
    users = np.unique(fit_log.user)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(users, size=max(1, round(fraction * users.size)), replace=False))
    new_index = np.full(len(fit_log.users), -1, dtype=np.int64)
    new_index[keep] = np.arange(keep.size)
    ids = IdMap([fit_log.users.ids[u] for u in keep.tolist()])

    def subset(part: InteractionLog) -> InteractionLog:
        rows = part.take(new_index[part.user] >= 0)
        return replace(rows, users=ids, user=new_index[rows.user])

    return subset(fit_log), subset(val_log)


def _scored(holdout: Holdout, users: int | None, seed: int) -> Holdout:
    """The validation hold-out as trials score it: on at most ``users`` users (None: every
    user with validation rows)."""
    return holdout.sample(users if users is not None else len(holdout.relevant), seed)


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
    progress: Callable[[int, int], None] | None = None,
    on_trial: Callable[[int, float], None] | None = None,
    sample: float = DEFAULT_SAMPLE,
    prune: bool = DEFAULT_PRUNE,
    score_users: int | None = DEFAULT_SCORE_USERS,
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

    ``sample`` < 1 runs the trials on that fraction of the fitting users (seeded:
    ``seed + 2``), their validation rows only; the best of them is then fitted
    on every user and kept only if it beats the base configuration fitted on
    every user, on the whole validation split (``score`` and ``base_score`` are
    those two). ``prune`` stops a trial at :data:`PRUNE_AT` iterations when its
    validation score there is below the median of the earlier trials' at the
    same point (Optuna's ``MedianPruner``); a pruned trial is never chosen.
    ``score_users`` caps the users whose validation nDCG scores a trial (a seeded
    sample, ``seed + 3``; None: all of them).
    """
    if budget_s < 0 or max_trials < 1 or k < 1 or not 0 < sample <= 1:
        raise ValueError("tune needs budget_s >= 0, max_trials >= 1, k >= 1 and 0 < sample <= 1")
    started = time.perf_counter()
    base = base or ALSConfig()
    fit_log, val_log = split_log(train_log, how, ratio, seed + 1)
    if len(fit_log) == 0 or len(val_log) == 0:
        raise ValueError("the validation split left the fitting or the validation part empty")
    full = (fit_log, _scored(Holdout.of(fit_log, val_log), score_users, seed + 3))
    if sample < 1:
        trial_fit, trial_val = _user_sample(fit_log, val_log, sample, seed + 2)
        searched = (trial_fit, _scored(Holdout.of(trial_fit, trial_val), score_users, seed + 3))
    else:
        searched = full
    metric = f"ndcg@{k}"
    trials: list[Trial] = []

    def fit_score(
        als: ALSConfig,
        weighting: WeightingConfig,
        data: tuple[InteractionLog, Holdout],
        trial: optuna.Trial | None = None,
        steps: dict[int, float] | None = None,
    ) -> float:
        """The validation score of ``als`` fitted on ``data``; at :data:`PRUNE_AT` iterations
        the score so far goes to ``trial`` (raising :class:`_Pruned` when it says so) or
        into ``steps``."""
        logs, holdout = data

        def checkpoint(done: int, users: np.ndarray, items: np.ndarray) -> None:
            if done != PRUNE_AT or done >= als.iterations:
                return
            value = round(holdout.ndcg(users, items, k, als.num_threads), SCORE_DIGITS)
            if steps is not None:
                steps[done] = value
            if trial is not None:
                trial.report(value, done)
                if trial.should_prune():
                    raise _Pruned(value)

        watch = prune and (trial is not None or steps is not None)
        model = train(
            confidence_matrix(logs, weighting), als, checkpoint=checkpoint if watch else None
        )
        value = holdout.ndcg(model.user_factors, model.item_factors, k, als.num_threads)
        return round(value, SCORE_DIGITS)

    def record(
        als: ALSConfig, weighting: WeightingConfig, value: float, t0: float, pruned: bool = False
    ) -> None:
        trials.append(Trial(als, weighting, value, time.perf_counter() - t0, pruned))
        log.debug("tune trial %d: %s %s", len(trials), trials[-1].as_dict(), metric)
        if progress is not None:
            progress(len(trials), max_trials)
        if on_trial is not None:
            on_trial(len(trials), max(t.score for t in trials if not t.pruned))

    t0 = time.perf_counter()
    base_steps: dict[int, float] = {}
    base_score = fit_score(base, base_weighting, searched, steps=base_steps)
    record(base, base_weighting, base_score, t0)
    sampler = optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=STARTUP_TRIALS,
        multivariate=True,
    )
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP_TRIALS)
        if prune
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    known = _base_trial(base, base_weighting, base_score, space, base_steps)
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
        t0 = time.perf_counter()
        try:
            value = fit_score(als, weighting, searched, trial)
        except _Pruned as stopped:
            record(als, weighting, float(stopped.args[0]), t0, pruned=True)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        record(als, weighting, value, t0)
        study.tell(trial, value)
    complete = [t for t in trials if not t.pruned]
    best = trials[0] if timed_out else max(complete, key=lambda t: t.score)  # earliest of ties
    chosen_als, chosen_weighting, chosen_score = best.als, best.weighting, best.score
    if sample < 1:  # the sample's winner against the base, both fitted on every user
        base_score = fit_score(base, base_weighting, full)
        chosen_score = base_score
        chosen_als, chosen_weighting = base, base_weighting
        if best is not trials[0]:
            score_all = fit_score(best.als, best.weighting, full)
            if score_all > base_score:
                chosen_als, chosen_weighting, chosen_score = best.als, best.weighting, score_all
    return TuneResult(
        chosen_als,
        chosen_weighting,
        chosen_score,
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
        sample=sample,
        prune=prune,
        score_users=score_users,
    )
