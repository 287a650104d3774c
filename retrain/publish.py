"""From data to a current model version, in one function that every caller shares.

``freshrec train``, ``freshrec retrain`` (the CronJob), the tests and the
benchmarks all publish through :func:`train_and_publish`: train ALS on the
log's confidences, build the popular fallback from the same log, optionally ask
a gate whether the candidate may go out, write the immutable version, move the
current-model pointer, and prune old versions. Workers follow the pointer and
refresh their lists by themselves.

The order is what makes a job killed at any point harmless: the version is
complete before the pointer names it (:class:`~freshrec.model_store.ModelStore`
writes ``meta.json`` last), the pointer moves in one atomic write, and pruning
runs only after it and never deletes the current version.

The pointer moves by compare-and-set: the caller reads the pointer's
generation before it trains and gates (``expect``), and the publish moves the
pointer only if it is still there. A rollback made while the job trained is
therefore not undone: the candidate is saved, not made current, and the
outcome names who moved the pointer (``Outcome.moved``), which the commands
turn into their own exit code.

The forget promise (:mod:`freshrec.forgets`) is the ``guard``: a candidate
whose data was read before a user was forgotten is neither saved nor made
current (``Outcome.forgotten``); asked again under the pointer lock at the move,
after a save, it leaves the candidate saved but not current.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from freshrec.forgets import ForgottenSince
from freshrec.model_store import Guard, ModelStore, Pointer, PointerMoved
from models.als import ALSConfig, ALSFactors, train
from models.gate import GateDecision
from models.interactions import InteractionLog
from models.item_foldin import user_gram
from models.popular import popularity, top_popular
from models.version import ModelVersion, new_version_id, save_version
from models.weighting import WeightingConfig, confidence_matrix

#: An ALS engine: a user x item confidence matrix and a config in, factors out
#: (:func:`models.als.train`, or :func:`retrain.spark_als.train_spark` bound to a master).
Trainer = Callable[[sp.csr_matrix, ALSConfig], ALSFactors]

#: A stage name reported through ``on_stage``: "trained", "evaluated", "saved", "published".
StageHook = Callable[[str], None]


@dataclass
class Outcome:
    """What :func:`train_and_publish` did."""

    version: ModelVersion
    """The candidate; saved and current only when ``published``."""
    published: bool
    decision: GateDecision | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each stage: ``train``, ``evaluate`` (the gate), ``publish``."""
    pruned: list[str] = field(default_factory=list)
    moved: Pointer | None = None
    """Where the pointer was found when the publish refused because it had moved since
    ``expect`` (the candidate is saved, not current)."""
    forgotten: ForgottenSince | None = None
    """Why the guard refused the candidate: a user was forgotten after its data was read
    (saved only when the forget came between the save and the move; never current)."""


def build_version(
    log: InteractionLog,
    als: ALSConfig,
    weighting: WeightingConfig,
    *,
    popular_length: int,
    snapshot: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    tuning: Mapping[str, Any] | None = None,
    half_life_s: float | None = None,
    trainer: Trainer = train,
    leave_out: Collection[str] = (),
) -> ModelVersion:
    """Train on ``log`` and assemble an unsaved version (factors, ids, params, popular list).

    ``popular_length`` should be the list length plus the history length, so
    that a user's fallback stays full after their own items are removed.
    ``leave_out`` names items the popular list must not hold (those taken down).
    """
    started = time.perf_counter()
    model = trainer(confidence_matrix(log, weighting), als)
    seconds = time.perf_counter() - started
    counts = popularity(log, weighting, half_life_s)
    if leave_out:
        gone = log.items.indices(list(leave_out))
        counts = np.array(counts, dtype=float, copy=True)
        counts[gone[gone >= 0]] = 0.0
    idx, scores = top_popular(counts, popular_length)
    return ModelVersion(
        version_id=new_version_id(),
        item_factors=model.item_factors,
        item_ids=log.items,
        params=als.as_dict()
        # "device" names the engine too ("cpu"/"gpu": implicit, "spark"); the params are
        # implicit's conventions either way, which is what the worker's fold-in reads
        | {"weighting": asdict(weighting), "device": model.device}
        | ({} if tuning is None else {"tuning": dict(tuning)}),
        metrics=dict(metrics or {}) | {"train_seconds": seconds},
        snapshot=dict(snapshot)
        | {
            "events": len(log),
            "users": len(log.users),
            # the gate holds out only what is newer than this (models.gate)
            "newest_ts": int(log.ts.max()) if len(log) else 0,
        },
        popular_items=[log.items.ids[i] for i in idx.tolist()],
        popular_scores=np.asarray(scores, dtype=float).tolist(),
        created_at=time.time_ns() // 1_000_000,
        user_gram=user_gram(model.user_factors, als.regularization),
    )


def train_and_publish(
    store: ModelStore,
    log: InteractionLog,
    als: ALSConfig,
    weighting: WeightingConfig,
    *,
    popular_length: int,
    snapshot: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    tuning: Mapping[str, Any] | None = None,
    half_life_s: float | None = None,
    trainer: Trainer = train,
    check: Callable[[ModelVersion], GateDecision] | None = None,
    make_current: bool = True,
    keep: int | None = None,
    transform: Callable[[ModelVersion], ModelVersion] | None = None,
    on_stage: StageHook | None = None,
    expect: int | None = None,
    by: str | None = None,
    canary: float | None = None,
    leave_out: Collection[str] = (),
    after_save: Callable[[ModelVersion], None] | None = None,
    guard: Guard | None = None,
) -> Outcome:
    """Train, gate, save, point, prune (see the module doc).

    ``tuning`` (the search's result, :meth:`models.tuning.TuneResult.as_dict`)
    is stored in the version's params beside the values it chose.

    ``check`` is the gate: given the candidate, a decision whose ``publish`` is
    False stops here, with nothing written. ``make_current=False`` saves the
    version without moving the pointer. ``keep`` prunes to that many newest
    versions afterwards (the current one is always kept). ``transform`` alters
    the candidate before the gate; it exists for tests that prove the gate
    refuses a broken model. ``on_stage`` is told each stage as it completes.
    ``expect`` is the pointer generation read before training: the pointer moves
    only if it is still that one (see the module doc); ``by`` names the mover.
    ``canary`` publishes the candidate as a canary for that fraction of the users
    (:meth:`~freshrec.model_store.ModelStore.start_canary`) instead of for everyone.
    ``leave_out`` names items the popular list must not hold (those taken down).
    ``after_save`` runs once the version is saved and before the pointer moves
    to it: the retrain writes the version's similar-item lists there
    (:mod:`retrain.similar_lists`), so they exist by the time workers adopt it.
    ``guard`` is asked before the save and again at the move (the forget promise).
    """
    stage = on_stage or (lambda _name: None)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    version = build_version(
        log,
        als,
        weighting,
        popular_length=popular_length,
        snapshot=snapshot,
        metrics=metrics,
        tuning=tuning,
        half_life_s=half_life_s,
        trainer=trainer,
        leave_out=leave_out,
    )
    if transform is not None:
        version = transform(version)
    seconds["train"] = time.perf_counter() - started
    stage("trained")
    decision = None
    if check is not None:
        started = time.perf_counter()
        decision = check(version)
        seconds["evaluate"] = time.perf_counter() - started
        version.metrics["gate"] = decision.as_dict()
        stage("evaluated")
        if not decision.publish:
            return Outcome(version, False, decision, seconds)
    started = time.perf_counter()
    if guard is not None and make_current:
        try:
            meta = {"snapshot": version.snapshot, "created_at": version.created_at}
            guard(version.version_id, meta)
        except ForgottenSince as exc:
            return Outcome(version, False, decision, seconds, forgotten=exc)
    save_version(store, version)
    stage("saved")
    if after_save is not None:
        after_save(version)
    pruned: list[str] = []
    if make_current:
        try:
            if canary is None:
                store.set_current(
                    version.version_id, move="publish", by=by, expect=expect, guard=guard
                )
            else:
                store.start_canary(version.version_id, canary, by=by, expect=expect, guard=guard)
        except PointerMoved as exc:
            seconds["publish"] = time.perf_counter() - started
            return Outcome(version, False, decision, seconds, moved=exc.found)
        except ForgottenSince as exc:
            seconds["publish"] = time.perf_counter() - started
            return Outcome(version, False, decision, seconds, forgotten=exc)
        stage("published")
    if keep is not None:
        pruned = store.prune(keep)
    seconds["publish"] = time.perf_counter() - started
    return Outcome(version, make_current, decision, seconds, pruned)
