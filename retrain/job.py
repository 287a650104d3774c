"""The retrain job's pipeline, from a snapshot to a published (or refused) version.

``freshrec retrain`` (the Kubernetes CronJob) reads the snapshot
(:mod:`retrain.snapshot`) under the retrain lock (:mod:`retrain.lock`) and hands
it here:

1. **Hold-out.** A chronological hold-out of a sample of users
   (:meth:`~models.gate.RecentHoldout.split`): their newest items are set aside, and
   everything else is the training data.
2. **Tune.** :func:`models.tuning.tune` searches the hyperparameters within a
   time budget on a validation split carved from the training data alone; the
   hold-out is never read by it.
3. **Train** on the training data with the chosen values, and **gate**: the
   candidate and the current version are scored on the same hold-out, as the
   worker serves them (:mod:`models.gate`).
4. **Publish** (:func:`retrain.publish.train_and_publish`): write the version,
   move the pointer, prune old versions; or leave everything as it is when the
   gate refuses.

The model published is the model gated: it is trained once, on all but the
hold-out users' newest items, rather than gated on a split and retrained on
everything (which would double the training time for a few thousand rows).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal

import numpy as np

from freshrec.errors import ModelStoreError
from freshrec.model_store import Guard, ModelStore
from models.als import ALSConfig, train
from models.gate import GateDecision, RecentHoldout, decide, popular_metrics, served_metrics
from models.interactions import InteractionLog
from models.recommender import Recommender
from models.tuning import tune
from models.version import ModelVersion, load_version, recommender_from_version
from models.weighting import WeightingConfig
from retrain.publish import Outcome, StageHook, Trainer, train_and_publish

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainPlan:
    """What one retrain does; the CLI builds it from settings and flags."""

    als: ALSConfig
    """Starting hyperparameters (the defaults, or flags); tuning may replace them."""
    weighting: WeightingConfig
    """Starting weighting rule; tuning may change its dislike threshold."""
    popular_length: int
    """Length of the stored popular list (list length + history length)."""
    tune_budget_s: float = 600.0
    """Safety limit of the search in seconds (a search it cuts short keeps its starting
    configuration); 0 trains ``als`` as it is."""
    tune_trials: int = 12
    """Configurations the search scores, its starting one included."""
    tolerance: float = 0.02
    """Relative nDCG@k a candidate may lose against the current version
    (:func:`models.gate.decide`)."""
    gate_users: int = 5000
    """Users sampled for the hold-out."""
    holdout_fraction: float = 0.2
    """Share of each sampled user's newest items held out."""
    k: int = 10
    """List length scored (nDCG@k)."""
    seed: int = 42
    force: bool = False
    """Publish even when the gate refuses (the decision is still recorded)."""
    keep: int | None = 10
    """Versions kept after publishing (plus the current one); None keeps all."""
    num_threads: int = 0
    """Training threads; 0 means one per core (the job has its pod to itself)."""
    engine: Literal["implicit", "spark"] = "implicit"
    """Who trains: implicit on this node, or Spark MLlib at ``spark_master``
    (:mod:`retrain.spark_als`); the version's format is the same."""
    spark_master: str = "local[*]"
    """Spark master URL for the spark engine."""
    canary: float | None = None
    """Publish the candidate as a canary for this fraction of the users, not for everyone."""
    permute_items: bool = False
    """Test hook: shuffle the candidate's item factors against their ids, so the gate
    must refuse it."""


@dataclass
class RetrainResult:
    """What the job did, for its summary line."""

    outcome: Outcome
    seconds: dict[str, float]
    tuning: dict[str, Any] | None
    holdout_users: int
    holdout_items: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def decision(self) -> GateDecision:
        assert self.outcome.decision is not None
        return self.outcome.decision


def retrain(
    data: InteractionLog,
    snapshot: Mapping[str, Any],
    store: ModelStore,
    plan: RetrainPlan,
    *,
    before_publish: Callable[[], None] | None = None,
    on_stage: StageHook | None = None,
    on_progress: Callable[[float, float], None] | None = None,
    on_trial: Callable[[int, float], None] | None = None,
    by: str | None = None,
    leave_out: Collection[str] = (),
    after_save: Callable[[ModelVersion], None] | None = None,
    guard: Guard | None = None,
) -> RetrainResult:
    """Hold out, tune, train, gate and publish (see the module doc).

    ``guard`` is the forget promise's check (:func:`~retrain.publish.train_and_publish`).

    ``leave_out`` (the items taken down) stays out of the popular list;
    ``after_save`` runs between saving the version and pointing at it
    (:func:`~retrain.publish.train_and_publish`).

    ``before_publish`` runs after the gate passed and before anything is
    written (the job checks that it still holds its lock there). ``on_stage``
    is told each stage ("tuning", "training", "evaluating", then those of
    :func:`~retrain.publish.train_and_publish`); ``on_progress`` how far the
    current one is, as (done, total): trials of the search, then ALS iterations;
    ``on_trial`` each tuning trial (trials run, best score so far). ``by`` names
    the job in the pointer when it publishes. The search starts from the current
    version's configuration (its ALS values and dislike threshold; the plan's
    seed and threads), so a good configuration found once is kept unless the
    search finds a better one on today's data.

    The candidate is gated against the version the pointer named at the start,
    and published only if the pointer has not moved since (compare-and-set on
    its generation): a rollback made meanwhile stands, and the result's
    ``outcome.moved`` says who made it.
    """
    stage = on_stage or (lambda _name: None)
    seconds: dict[str, float] = {}
    # the publish moves the pointer only if it still names what the gate compared against
    pointer = store.pointer()
    current_version = _current(store, pointer.version)
    current = None if current_version is None else _recommender(current_version)
    holdout, unseen = _holdout(data, plan, current_version)
    als = replace(plan.als, seed=plan.seed, num_threads=plan.num_threads)
    weighting = plan.weighting
    tuning: dict[str, Any] | None = None
    started = time.perf_counter()
    if plan.engine == "spark" and plan.tune_budget_s > 0:
        # the search fits dozens of models on one node: with data that needs Spark it
        # would not fit, and with data that does not, implicit is the engine to use
        log.warning("the spark engine does not tune: training the given configuration")
    elif plan.tune_budget_s > 0:
        stage("tuning")
        if current_version is not None:
            als, weighting = _configs_of(current_version, als, weighting)
        result = tune(
            holdout.train,
            als,
            weighting,
            k=plan.k,
            budget_s=plan.tune_budget_s,
            seed=plan.seed,
            max_trials=plan.tune_trials,
            progress=on_progress,
            on_trial=on_trial,
        )
        als, weighting, tuning = result.als, result.weighting, result.as_dict()
        log.info("tuned in %.1fs: %s, %s", time.perf_counter() - started, als, weighting)
    seconds["tune"] = time.perf_counter() - started
    stage("training")

    metric = f"ndcg@{plan.k}"
    baseline = (
        served_metrics(current, holdout, plan.k)
        if current is not None
        else popular_metrics(holdout, weighting, plan.k)
    )[metric]

    def check(version: ModelVersion) -> GateDecision:
        stage("evaluating")
        figure = served_metrics(_recommender(version), holdout, plan.k)[metric]
        decision = decide(
            metric,
            figure,
            baseline,
            None if current is None else current.version_id,
            plan.tolerance,
            plan.force,
        )
        if decision.publish and before_publish is not None:
            before_publish()
        return decision

    outcome = train_and_publish(
        store,
        holdout.train,
        als,
        weighting,
        popular_length=plan.popular_length,
        snapshot=snapshot,
        tuning=tuning,
        metrics={
            "holdout": {
                "users": int(holdout.users.size),
                "rows": len(holdout.test),
                "unseen_by_current": unseen,
            },
        },
        check=check,
        keep=plan.keep,
        trainer=_trainer(plan, on_progress),
        transform=_permute if plan.permute_items else None,
        on_stage=stage,
        expect=pointer.generation,
        by=by,
        canary=plan.canary,
        leave_out=leave_out,
        after_save=after_save,
        guard=guard,
    )
    seconds |= outcome.seconds
    return RetrainResult(
        outcome,
        seconds,
        tuning,
        int(holdout.users.size),
        len(holdout.test),
    )


#: Fewest hold-out users worth scoring on events the current model never saw;
#: with fewer, the hold-out falls back to every user's newest items.
MIN_UNSEEN_USERS = 50


def _holdout(
    data: InteractionLog, plan: RetrainPlan, current: ModelVersion | None
) -> tuple[RecentHoldout, bool]:
    """The gate's hold-out, and whether the current model has never seen it.

    Items newer than the current model's newest training event are held out
    when enough users have such items: then the current model is not scored on
    what it learnt from. Otherwise (a retrain on the data the current model
    already had) both are scored on every sampled user's newest items, which
    favours the current model; a retrain with nothing new is then refused
    unless it is at least as good, which is harmless.
    """
    cutoff = None if current is None else current.snapshot.get("newest_ts")
    if cutoff is not None:
        fresh = RecentHoldout.split(
            data, plan.gate_users, plan.holdout_fraction, plan.seed, int(cutoff)
        )
        if fresh.users.size >= min(MIN_UNSEEN_USERS, plan.gate_users):
            return fresh, True
        log.warning(
            "only %d user(s) have events newer than the current model's data; the gate "
            "scores every sampled user's newest items, which the current model has seen",
            fresh.users.size,
        )
    holdout = RecentHoldout.split(data, plan.gate_users, plan.holdout_fraction, plan.seed)
    if len(holdout.test) == 0:
        raise ValueError("no user has two distinct items: nothing to evaluate a model on")
    return holdout, current is None


def _trainer(plan: RetrainPlan, progress: Callable[[float, float], None] | None) -> Trainer:
    if plan.engine == "implicit":
        return partial(train, progress=progress)
    from retrain.spark_als import train_spark

    return partial(train_spark, master=plan.spark_master)


def _recommender(version: ModelVersion) -> Recommender:
    return recommender_from_version(version)


def _current(store: ModelStore, version_id: str | None) -> ModelVersion | None:
    """The current version ``version_id``; None before the first publish.

    A current version that cannot be read is no baseline (workers cannot load
    it either): the candidate is held to the popular fallback, with a warning.
    """
    if version_id is None:
        return None
    try:
        return load_version(store, version_id)
    except ModelStoreError as exc:
        log.warning("the current model cannot be read (%s); gating against popular", exc)
        return None


def _permute(version: ModelVersion) -> ModelVersion:
    order = np.random.default_rng(0).permutation(version.item_factors.shape[0])
    return replace(version, item_factors=version.item_factors[order])


def _configs_of(
    version: ModelVersion, als: ALSConfig, weighting: WeightingConfig
) -> tuple[ALSConfig, WeightingConfig]:
    """The searched values of ``version``'s configuration over ``als`` and ``weighting``
    (seed, threads and device stay the plan's); theirs where the version lacks one."""
    params = version.params
    searched = ("factors", "regularization", "alpha", "iterations")
    try:
        als = replace(als, **{name: type(getattr(als, name))(params[name]) for name in searched})
        stored = params.get("weighting")
        if stored is not None:
            weighting = replace(weighting, negative_below=float(stored["negative_below"]))
    except (KeyError, TypeError, ValueError):
        log.warning("the current version's configuration is unreadable: tuning from the plan's")
    return als, weighting
