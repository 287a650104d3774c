"""``freshrec retrain``: the periodic job (the Kubernetes CronJob's command).

Takes the retrain lock, reads the snapshot (the workers' changelog, or a file
with ``--data``/``--format`` for a first model), and runs
:func:`retrain.job.retrain`. Prints one JSON summary line on standard output
at the end, whatever happened; progress goes to a terminal only.

Exit codes (documented in the README):

* 0: a new version was published;
* 3: the gate refused the candidate (nothing changed), both figures printed;
* 4: another retrain holds the lock;
* 5: the current-model pointer moved while the job ran (a rollback, say): the
  candidate is saved, not published, and the pointer's mover is named;
* 6: a user was forgotten after the snapshot was read (:mod:`freshrec.forgets`):
  the candidate may hold what they gave, so it is not current (nor saved, unless
  the forget came between the save and the move); run it again;
* 2: bad configuration or arguments;
* 75: a transient fault (broker, Redis or store unreachable): run it again.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Any

import redis

from freshrec.argtypes import non_negative_float, positive_int, synthetic_size
from freshrec.errors import (
    BadInputError,
    ConfigError,
    ModelStoreError,
    TransientError,
    UsageError,
)
from freshrec.forgets import guard_for, read_clock
from freshrec.kafka_client import check_broker
from freshrec.kafka_config import client_config
from freshrec.model_store import ModelStore, mover
from freshrec.redis_client import SyncRedis, sync_redis_client
from freshrec.settings import Settings
from retrain.als_flags import add_als_flags, configs_from_flags
from retrain.catalog import read_unavailable
from retrain.data import load_data
from retrain.item_tables import drop_item_tables_or_warn
from retrain.job import RetrainPlan, RetrainResult, retrain
from retrain.lock import LockedError, RetrainLock
from retrain.progress import StageProgress
from retrain.served import store_mismatch
from retrain.similar_lists import write_similar_lists
from retrain.snapshot import read_changelog
from schemas.state import changelog_topic

EXIT_PUBLISHED = 0
EXIT_CONFIG = 2
EXIT_REFUSED = 3
EXIT_LOCKED = 4
EXIT_MOVED = 5
EXIT_FORGOTTEN = 6
EXIT_TRANSIENT = 75

#: The retrain's stages shown on a terminal, with the unit of their bars.
_STAGE_LABELS = {
    "tuning": "tuning (trials)",
    "training": "training (ALS iterations)",
    "evaluating": "evaluating (the gate)",
}

#: Stages ``--debug-stall-at`` accepts: where a test may freeze the job to kill it (or
#: resume it with SIGUSR1).
STALL_POINTS = ("trained", "evaluated", "saved")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "retrain",
        help="retrain from the workers' state, gate against the current model, publish",
        description="Reads every user's history from the workers' changelog topic (or --data), "
        "tunes (FRESHREC_RETRAIN_TUNE_TRIALS configurations, starting from the current "
        "version's), trains, scores the candidate and the "
        "current model on a chronological hold-out and publishes only when nDCG@10 is not "
        "worse than FRESHREC_RETRAIN_TOLERANCE allows. One run at a time (a Redis lock). "
        "Exit codes: 0 published; 3 refused by the gate; 4 another retrain runs; "
        "5 the model pointer moved meanwhile (a rollback stands; the candidate is saved); "
        "6 a user was forgotten after the snapshot was read (not published; run again); "
        "2 bad configuration; 75 transient fault (run again).",
    )
    p.add_argument("--data", help="train from this file instead of the changelog (a first model)")
    p.add_argument(
        "--format",
        help="layout of --data (see `freshrec train --help`); 'synthetic' needs no --data",
    )
    p.add_argument(
        "--synthetic",
        type=synthetic_size,
        default="2000,500,60000",
        metavar="USERS,ITEMS,EVENTS",
        help="size of the --format synthetic data set (default: %(default)s)",
    )
    p.add_argument("--force", action="store_true", help="publish even when the gate refuses")
    p.add_argument(
        "--canary",
        type=float,
        default=None,
        metavar="F",
        help="publish the candidate as a canary for a fraction F of the users (0 < F < 1) "
        "instead of for everyone; `freshrec models canary status|promote|abort` follow it",
    )
    p.add_argument(
        "--engine",
        choices=("implicit", "spark"),
        default="implicit",
        help="who trains: implicit on this node, or Spark MLlib at FRESHREC_SPARK_MASTER "
        "(needs the spark extra and Java; no tuning) (default: %(default)s)",
    )
    p.add_argument("--no-tune", action="store_true", help="train the given values, no search")
    p.add_argument(
        "--tune-budget-s",
        type=non_negative_float,
        default=None,
        help="safety limit in seconds of the search: a search it cuts short keeps the "
        "starting configuration (default: FRESHREC_RETRAIN_TUNE_BUDGET_S)",
    )
    p.add_argument(
        "--tune-trials",
        type=positive_int,
        default=None,
        help="configurations the search scores, the current version's included "
        "(default: FRESHREC_RETRAIN_TUNE_TRIALS)",
    )
    p.add_argument(
        "--seed", type=int, default=42, help="hold-out, search and training seed (default: 42)"
    )
    add_als_flags(p, threads_default=0)
    # test hooks: a model the gate must refuse, and a job frozen where a test kills or
    # resumes it
    p.add_argument("--debug-permute-items", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--debug-stall-at", choices=STALL_POINTS, help=argparse.SUPPRESS)
    p.set_defaults(func=run_retrain)


def _plan(args: argparse.Namespace, settings: Settings) -> RetrainPlan:
    budget = settings.retrain_tune_budget_s if args.tune_budget_s is None else args.tune_budget_s
    als, weighting = configs_from_flags(args)
    if budget < 0:
        raise BadInputError("--tune-budget-s must not be negative")
    if args.canary is not None and not 0 < args.canary < 1:
        raise BadInputError("--canary needs a fraction F with 0 < F < 1 (0.2: a fifth of users)")
    return RetrainPlan(
        als=als,
        weighting=weighting,
        popular_length=settings.list_length + settings.history_length,
        tune_budget_s=0.0 if args.no_tune else budget,
        tune_trials=args.tune_trials or settings.retrain_tune_trials,
        tolerance=settings.retrain_tolerance,
        gate_users=settings.retrain_gate_users,
        holdout_fraction=settings.retrain_holdout_fraction,
        seed=args.seed,
        force=args.force,
        keep=settings.model_keep,
        num_threads=als.num_threads,
        engine=args.engine,
        spark_master=settings.spark_master,
        permute_items=args.debug_permute_items,
        canary=args.canary,
    )


def run_retrain(args: argparse.Namespace, settings: Settings) -> int:
    started = time.perf_counter()
    summary: dict[str, Any] = {"job": "retrain", "engine": args.engine, "canary": args.canary}
    try:
        plan = _plan(args, settings)
        if args.data and not args.format:
            raise BadInputError("--data needs --format (see `freshrec train --help`)")
        client = sync_redis_client(settings, "freshrec-retrain")
        mismatch = store_mismatch(client, settings, ModelStore(settings.model_store))
        if mismatch is not None and not args.force:
            raise ConfigError(f"{mismatch}; --force publishes there anyway")
        key = f"{settings.key_prefix}retrain-lock"
        with RetrainLock(client, key, settings.retrain_lock_ttl_s) as lock, StageProgress() as bar:
            summary |= _run(args, settings, plan, lock, bar, client)
            if summary["pruned"]:
                kept = ModelStore(settings.model_store).versions()
                summary["item_tables_dropped"] = drop_item_tables_or_warn(
                    client, settings.key_prefix, kept
                )
        if summary["outcome"] == "pointer moved":
            code = EXIT_MOVED
        elif summary["outcome"] == "user forgotten":
            code = EXIT_FORGOTTEN
        else:
            code = EXIT_PUBLISHED if summary["published"] else EXIT_REFUSED
    except LockedError as exc:
        summary |= {"outcome": "locked", "holder": exc.holder, "message": str(exc)}
        code = EXIT_LOCKED
    except (BadInputError, ConfigError, UsageError, ValueError) as exc:
        summary |= {"outcome": "bad configuration", "message": str(exc)}
        code = EXIT_CONFIG
    except (
        TransientError,
        ModelStoreError,
        OSError,
        redis.RedisError,
        redis.exceptions.RedisClusterException,  # a cluster none of whose nodes answer
    ) as exc:
        summary |= {"outcome": "transient fault", "message": str(exc)}
        code = EXIT_TRANSIENT
    summary["total_s"] = round(time.perf_counter() - started, 3)
    summary["exit_code"] = code
    if code != EXIT_PUBLISHED:
        print(f"freshrec retrain: {summary['message']}", file=sys.stderr)
    print(json.dumps(summary, sort_keys=True), flush=True)
    return code


def _run(
    args: argparse.Namespace,
    settings: Settings,
    plan: RetrainPlan,
    lock: RetrainLock,
    bar: StageProgress,
    client: SyncRedis,
) -> dict[str, Any]:
    started = time.perf_counter()
    bar.stage("reading snapshot (records)")
    if args.format:
        data, snapshot = load_data(args)
    else:
        # a broker that does not answer at all is reported within its connect timeout, as
        # every command does; the snapshot's own timeout is for a slow read
        check_broker(settings)
        # Redis's clock, before the end offsets: a forget marked after it may be missing
        # from the snapshot, and the forget promise refuses the candidate then
        read_at = read_clock(client, settings.key_prefix).now_ms
        topic = changelog_topic(settings.app_id)
        snap = read_changelog(
            settings.bootstrap_servers,
            topic,
            settings.retrain_snapshot_timeout_s,
            config=client_config(settings),
            progress=bar.advance,
        )
        data, snapshot = snap.log, snap.describe() | {"read_at_ms": read_at}
    snapshot_s = time.perf_counter() - started
    if len(data) == 0:
        raise BadInputError("the snapshot holds no interactions: nothing to train on yet")

    def on_stage(name: str) -> None:
        if name in _STAGE_LABELS:
            bar.stage(_STAGE_LABELS[name])
        if name == args.debug_stall_at:
            # SIGUSR1 resumes it (a test that changes the world meanwhile); SIGKILL ends it.
            # An event, not signal.pause(): a signal that comes before the wait is kept.
            resumed = threading.Event()
            signal.signal(signal.SIGUSR1, lambda signum, frame: resumed.set())
            print(
                f"freshrec retrain: stalled at {name} (pid {os.getpid()})",
                file=sys.stderr,
                flush=True,
            )
            resumed.wait()

    store = ModelStore(settings.model_store)
    result = retrain(
        data,
        snapshot,
        store,
        plan,
        before_publish=lock.ensure_held,
        on_stage=on_stage,
        on_progress=bar.advance,
        on_trial=lambda n, best: bar.describe(
            f"{_STAGE_LABELS['tuning']}: {n} trials, best ndcg@{plan.k} {best:.4f}"
        ),
        by=f"{mover()} (freshrec retrain)",
        leave_out=read_unavailable(client, settings.key_prefix),
        after_save=lambda version: write_similar_lists(
            client, settings.key_prefix, version, settings.similar_length
        ),
        guard=guard_for(client, settings.key_prefix),
    )
    return _summary(result, snapshot, snapshot_s, len(data))


def _summary(
    result: RetrainResult, snapshot: dict[str, Any], snapshot_s: float, interactions: int
) -> dict[str, Any]:
    decision = result.decision
    version = result.outcome.version
    moved = result.outcome.moved
    forgotten = result.outcome.forgotten
    if moved is not None:
        outcome = "pointer moved"
        message = (
            f"not published: the current-model pointer moved while the retrain ran; it now "
            f"names {moved.describe()}; the candidate {version.version_id} is saved, not "
            f"current (`freshrec models rollback {version.version_id}` publishes it)"
        )
    elif forgotten is not None:
        outcome = "user forgotten"
        message = f"not published: {forgotten}; run the retrain again: its snapshot leaves them out"
    else:
        outcome = "published" if result.outcome.published else "refused"
        message = decision.reason()
    return {
        "outcome": outcome,
        "published": result.outcome.published,
        "message": message,
        "moved_by": None if moved is None else moved.by,
        "version": version.version_id if result.outcome.published else None,
        "candidate": decision.candidate,
        "baseline": decision.baseline,
        "baseline_kind": decision.baseline_kind,
        "baseline_version": decision.baseline_version,
        "metric": decision.metric,
        "snapshot": snapshot,
        "interactions": interactions,
        "holdout_users": result.holdout_users,
        "tuned": None
        if result.tuning is None
        else {
            "als": result.tuning["als"],
            "weighting": result.tuning["weighting"],
            "score": result.tuning["score"],
            "base_score": result.tuning.get("base_score"),
            "start": result.tuning["trials"][0] if result.tuning.get("trials") else None,
            "trials": len(result.tuning.get("trials", [])),
            "timed_out": result.tuning.get("timed_out", False),
        },
        "pruned": result.outcome.pruned,
        "snapshot_s": round(snapshot_s, 3),
        "tune_s": round(result.seconds.get("tune", 0.0), 3),
        "train_s": round(result.seconds.get("train", 0.0), 3),
        "evaluate_s": round(result.seconds.get("evaluate", 0.0), 3),
        "publish_s": round(result.seconds.get("publish", 0.0), 3),
    }
