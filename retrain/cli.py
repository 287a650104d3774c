"""``freshrec evaluate`` and ``freshrec train``: the offline side of the retrain part.

This is an I/O adapter (files, the model store, stdout); the numeric work is
in :mod:`models.evaluate`, :mod:`models.tuning`, :mod:`models.als` and friends.

``evaluate`` splits the data (Microsoft Recommenders' protocol by default),
tunes the configuration on a validation split of the training part (unless
``--no-tune``), trains on the training part and prints the ranking metrics of
the model and of the popular baseline. ``train`` evaluates the same way to
record the metrics, then trains on all the data and writes a model version to
``FRESHREC_MODEL_STORE``; with ``--publish`` it also moves the current-model
pointer to it, unless the pointer moved while it trained (a rollback, say):
then the version is saved, not published, and it exits with
:data:`retrain.retrain_cli.EXIT_MOVED` (5).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

import numpy as np

from freshrec.argtypes import finite_float, non_negative_float, positive_int, synthetic_size
from freshrec.errors import BadInputError, UsageError
from freshrec.model_store import ModelStore, mover
from freshrec.settings import Settings
from models.als import ALSConfig
from models.evaluate import SPLITS, Evaluation, SplitKind, evaluate, split_log
from models.interactions import InteractionLog
from models.tuning import TuneResult, tune
from models.version import ModelVersion
from models.weighting import WeightingConfig
from retrain import retrain_cli, versions_cli
from retrain.als_flags import add_als_flags, configs_from_flags
from retrain.data import FORMATS, load_data
from retrain.progress import StageProgress
from retrain.publish import train_and_publish
from retrain.retrain_cli import EXIT_MOVED


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="train on a split of a data set and print precision, recall, MAP, nDCG, coverage",
        description="Split, train, rank every training user's top-k (training items removed) "
        "and score it against the test part, beside the popular baseline. Defaults follow "
        "Microsoft Recommenders' MovieLens benchmark: stratified by item, ratio 0.75, seed 42.",
    )
    _data_args(ev)
    ev.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (the model's metrics, and the popular baseline's "
        "under 'popular') instead of a table",
    )
    ev.set_defaults(func=run_evaluate)

    tr = sub.add_parser(
        "train",
        help="train a model version on a data set and write it to the model store",
        description="Evaluate on a split (to record metrics), train on all the data, save the "
        "version under FRESHREC_MODEL_STORE; --publish moves the current-model pointer to it.",
    )
    _data_args(tr)
    tr.add_argument("--publish", action="store_true", help="make the new version current")
    tr.add_argument(
        "--half-life-days",
        type=non_negative_float,
        default=None,
        help="recency decay of the popular fallback (default: no decay)",
    )
    tr.set_defaults(func=run_train)
    retrain_cli.register(sub)
    versions_cli.register(sub)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="data file (not needed for --format synthetic)")
    p.add_argument("--format", required=True, choices=FORMATS, help="layout of --data")
    p.add_argument(
        "--synthetic",
        type=synthetic_size,
        default="2000,500,60000",
        metavar="USERS,ITEMS,EVENTS",
        help="size of the --format synthetic data set (default: %(default)s)",
    )
    p.add_argument(
        "--k", type=positive_int, default=10, help="list length scored (default: %(default)s)"
    )
    p.add_argument(
        "--split", choices=SPLITS, default="stratified-item", help="default: %(default)s"
    )
    p.add_argument(
        "--ratio", type=finite_float, default=0.75, help="training share (default: %(default)s)"
    )
    p.add_argument(
        "--last-n",
        type=positive_int,
        default=1,
        help="test events per user for --split last-n (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=42, help="split and training seed (default: 42)")
    add_als_flags(p, threads_default=0)
    p.add_argument(
        "--no-tune",
        action="store_true",
        help="skip the hyperparameter search and use the given configuration as it is",
    )
    p.add_argument(
        "--tune-budget-s",
        type=non_negative_float,
        default=None,
        help="safety limit in seconds of the hyperparameter search: a search it cuts short "
        "keeps the given configuration (default: FRESHREC_RETRAIN_TUNE_BUDGET_S; 0 = no search)",
    )
    p.add_argument(
        "--tune-trials",
        type=positive_int,
        default=None,
        help="configurations the search scores on a validation split of the training part, "
        "the given one included (default: FRESHREC_RETRAIN_TUNE_TRIALS)",
    )


def _configs(args: argparse.Namespace) -> tuple[ALSConfig, WeightingConfig]:
    if args.k < 1:
        raise BadInputError("--k must be at least 1")
    return configs_from_flags(args)


def _holdout(
    args: argparse.Namespace, data: InteractionLog, settings: Settings
) -> tuple[Evaluation, WeightingConfig, TuneResult | None]:
    """Split, tune on the training part (unless turned off), evaluate on the test part."""
    als, weights = _configs(args)
    if not 0 < args.ratio < 1:
        raise UsageError("--ratio must be strictly between 0 and 1")
    budget = settings.retrain_tune_budget_s if args.tune_budget_s is None else args.tune_budget_s
    if budget < 0:
        raise BadInputError("--tune-budget-s must not be negative (0 = no search)")
    train_log, test_log = split_log(data, args.split, args.ratio, args.seed, args.last_n)
    if len(train_log) == 0 or len(test_log) == 0:
        raise BadInputError(_empty_split(args, data, "training" if len(train_log) == 0 else "test"))
    tuned = None
    if budget > 0 and not args.no_tune:
        how: SplitKind = "stratified-user" if args.split == "last-n" else args.split
        try:
            with StageProgress() as bar:
                label = "tuning (trials)"
                bar.stage(label)
                tuned = tune(
                    train_log,
                    als,
                    weights,
                    args.k,
                    budget,
                    how,
                    args.ratio,
                    args.seed,
                    max_trials=args.tune_trials or settings.retrain_tune_trials,
                    progress=bar.advance,
                    on_trial=lambda n, best: bar.describe(
                        f"{label}: {n} trials, best ndcg@{args.k} {best:.4f}"
                    ),
                )
        except ValueError as exc:
            raise BadInputError(f"{exc}; run with --no-tune on data this small") from None
        als, weights = tuned.als, tuned.weighting
    return evaluate(train_log, test_log, als, args.k, weights), weights, tuned


def _empty_split(args: argparse.Namespace, data: InteractionLog, part: str) -> str:
    """Why a split left ``part`` empty, with the counts and what to try (issue 26: it said only
    that a part was empty)."""
    users = int(np.unique(data.user).size)
    why = (
        f"the {args.split} split (--ratio {args.ratio:g}) of {len(data)} events from {users} "
        f"user(s) left the {part} part empty"
    )
    if args.split == "last-n":
        return f"{why}: every user has at most --last-n {args.last_n} event(s); lower --last-n"
    return (
        f"{why}: too few events per {args.split.removeprefix('stratified-')} to go to both "
        "parts; try --split last-n, which holds out each user's newest event"
    )


def _tuned_line(tuned: TuneResult) -> str:
    w = tuned.weighting
    c = tuned.als
    stopped = (
        f" (stopped at the safety limit of {tuned.budget_s:g} s: kept the given config)"
        if tuned.timed_out
        else ""
    )
    return (
        f"tuned over {len(tuned.trials)} trials in {tuned.seconds:.0f} s{stopped} "
        f"(validation {tuned.metric} {tuned.score:.4f}, given config "
        f"{tuned.base_score:.4f}): factors {c.factors}, regularization "
        f"{c.regularization:g}, alpha {c.alpha:g}, iterations {c.iterations}, "
        f"negative_below {w.negative_below:g}"
    )


def _tuning(tuned: TuneResult | None) -> dict[str, object] | None:
    """What the search chose, for ``--json``: the configuration, how many trials it scored,
    and the validation scores of the given configuration and of the chosen one."""
    if tuned is None:
        return None
    return {
        "als": tuned.als.as_dict(),
        "weighting": asdict(tuned.weighting),
        "trials": len(tuned.trials),
        "max_trials": tuned.max_trials,
        "timed_out": tuned.timed_out,
        "metric": tuned.metric,
        "base_score": tuned.base_score,
        "score": tuned.score,
    }


def _table(ev: Evaluation) -> str:
    rows = [f"{'metric':<14}{'model':>10}{'popular':>10}"]
    for name, value in ev.metrics.items():
        rows.append(f"{name:<14}{value:>10.4f}{ev.popular_metrics[name]:>10.4f}")
    return "\n".join(rows)


def run_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    data, _ = load_data(args)
    ev, _, tuned = _holdout(args, data, settings)
    if args.json:
        print(json.dumps(ev.metrics | {"popular": ev.popular_metrics, "tuning": _tuning(tuned)}))
        return 0
    print(f"{len(data)} events, {ev.users} users ranked, split {args.split}, k {args.k}")
    if tuned is not None:
        print(_tuned_line(tuned))
    print(_table(ev))
    print(f"training took {ev.train_seconds:.1f} s on {ev.model.device}")
    return 0


def _similar_or_warn(settings: Settings, version: ModelVersion) -> None:
    """The published version's similar-item lists, to Redis; a first model trained where no
    Redis answers is still published, with a warning (``GET /similar`` then answers 404
    for its items until a retrain publishes the next version)."""
    import redis

    from freshrec.redis_client import sync_redis_client
    from retrain.similar_lists import write_similar_lists

    try:
        client = sync_redis_client(settings, "freshrec-train")
        write_similar_lists(client, settings.key_prefix, version, settings.similar_length)
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        print(
            f"freshrec train: similar-item lists not written ({exc}); GET /similar answers 404 "
            "for this version's items",
            file=sys.stderr,
        )


def run_train(args: argparse.Namespace, settings: Settings) -> int:
    store = ModelStore(settings.model_store)
    store.check_writable()
    # --publish moves the pointer only if nobody moved it while this trained
    expect = store.pointer().generation
    data, snapshot = load_data(args)
    ev, weights, tuned = _holdout(args, data, settings)
    half_life = None if args.half_life_days is None else args.half_life_days * 86_400
    outcome = train_and_publish(
        store,
        data,
        ev.model.config,
        weights,
        # long enough to fill a full list after excluding a full history of seen items
        popular_length=settings.list_length + settings.history_length,
        snapshot=snapshot,
        metrics=ev.metrics | {"popular": ev.popular_metrics, "split": args.split, "k": args.k},
        tuning=None if tuned is None else tuned.as_dict(),
        half_life_s=half_life,
        make_current=args.publish,
        after_save=(lambda v: _similar_or_warn(settings, v)) if args.publish else None,
        expect=expect,
        by=f"{mover()} (freshrec train --publish)",
    )
    version_id = outcome.version.version_id
    if outcome.moved is not None:
        print(
            f"freshrec train: not published: the current-model pointer moved while this "
            f"trained; it now names {outcome.moved.describe()}; {version_id} is saved, not "
            f"current (`freshrec models rollback {version_id}` publishes it)",
            file=sys.stderr,
        )
        return EXIT_MOVED
    where = os.path.join(settings.model_store, "versions", version_id)
    state = "published" if args.publish else "saved (not published)"
    if tuned is not None:
        print(_tuned_line(tuned))
    print(f"model {version_id} {state} at {where}")
    print(_table(ev))
    return 0
