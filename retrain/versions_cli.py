"""``freshrec models list|show|rollback|prune|online|canary``: the model versions, for ops.

Versions are immutable; what ops change is the current-model pointer. A
rollback moves it back to an older version (workers follow it at their next
poll and refresh every list, as after a publish: the move raises the pointer's
generation, which lists are ordered by); pruning deletes all but the newest
``FRESHREC_MODEL_KEEP`` versions and never the current one nor one the pointer
named within the last hour. A move to a version whose data was read before a
user was forgotten is refused unless ``--force`` (:mod:`freshrec.forgets`).
``online`` prints what users did with each version's lists
(:mod:`schemas.online`, :mod:`models.online`); ``canary`` starts, follows
(:mod:`models.sequential`), promotes and aborts canary releases.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import redis

from freshrec.argtypes import positive_int
from freshrec.errors import BadInputError, ModelStoreError, TransientError
from freshrec.forgets import ForgottenSince, data_read_ms, guard_for, read_clock
from freshrec.model_store import Guard, ModelStore, mover
from freshrec.redis_client import sync_redis_client
from freshrec.settings import Settings
from models.online import OnlineFigures
from models.sequential import look_at_canary
from models.version import load_version
from retrain.item_tables import drop_item_tables_or_warn
from retrain.served import store_mismatch
from schemas.interim import decode_vectors, interim_key
from schemas.online import decode_counts, online_key, parse_key

_FORCE_HELP = (
    "serve a version trained on data read before the newest forget anyway (it may hold "
    "what a forgotten user gave)"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    items = sub.add_parser(
        "items",
        help="items the model does not know yet, folded in from their users (interim items)",
        description="The interim vectors every worker ranks with, of the current model version "
        "(or --version): per item its source (fold: from its users; content: from its tags), "
        "users, when its first contribution came and when its vector was last written. Exit "
        "code 75: Redis cannot be reached.",
    )
    items.add_argument("--version", default=None, help="a model version (default: the current)")
    items.add_argument("--json", action="store_true", help="one JSON object per line")
    items.set_defaults(func=run_items)
    p = sub.add_parser(
        "models",
        help="list, show, roll back or prune model versions",
        description="Model versions in FRESHREC_MODEL_STORE; '*' marks the current one.",
    )
    actions = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="every version, oldest first")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=run_list)
    show = actions.add_parser("show", help="one version's metadata (JSON)")
    show.add_argument("version")
    show.set_defaults(func=run_show)
    back = actions.add_parser(
        "rollback",
        help="make an existing version current again",
        description="Moves the current-model pointer to VERSION. A version whose data was "
        "read before a user was forgotten is refused (exit 1): it may hold what that user "
        "gave; --force moves the pointer anyway, with a warning.",
    )
    back.add_argument("version")
    back.add_argument("--force", action="store_true", help=_FORCE_HELP)
    back.set_defaults(func=run_rollback)
    prune = actions.add_parser("prune", help="delete all but the newest versions and the current")
    prune.add_argument(
        "--keep",
        type=positive_int,
        default=None,
        help="versions to keep (default: FRESHREC_MODEL_KEEP)",
    )
    prune.add_argument(
        "--forgotten",
        action="store_true",
        help="also delete every version trained on data read before the newest forget "
        "(but the current one and the canary): they may hold what a forgotten user gave",
    )
    prune.set_defaults(func=run_prune)
    canary = actions.add_parser(
        "canary",
        help="canary releases: start one (VERSION --fraction F), status, promote, abort",
        description="'canary VERSION --fraction F' serves VERSION to a stable fraction F of the "
        "users (a hash of the user id) beside the current version; 'canary status' shows both "
        "arms' online figures, the difference of their hit rates @10 with an always-valid "
        "interval and the sequential test's decision (FRESHREC_CANARY_ALPHA); 'canary "
        "promote' makes the candidate current for everyone, 'canary abort' returns everyone "
        "to the current version. Every one of them moves the pointer: workers rewrite every "
        "list at their next poll.",
    )
    canary.add_argument("target", metavar="VERSION|status|promote|abort")
    canary.add_argument(
        "--fraction", type=float, default=None, help="share of users on the candidate (0 < F < 1)"
    )
    canary.add_argument("--json", action="store_true", help="status as one JSON object")
    canary.add_argument("--force", action="store_true", help=_FORCE_HELP)
    canary.set_defaults(func=run_canary)
    online = actions.add_parser(
        "online",
        help="online figures per version and arm: events, hit rates (95%% CI), mean rating",
        description="What users did with the lists each model version made: of the watch and "
        "rate events of users shown a version's list, the share on an item of its top 10 and "
        "top k (FRESHREC_ONLINE_TOP_K), with Wilson 95%% intervals, the mean reciprocal rank, "
        "and the mean rating given to recommended items. Counted by the workers in Redis.",
    )
    online.add_argument("--json", action="store_true", help="one JSON object per line")
    online.set_defaults(func=run_online)


def _row(store: ModelStore, version_id: str, current: str | None) -> dict[str, Any]:
    meta = store.meta(version_id)
    metrics = meta.get("metrics", {})
    gate = metrics.get("gate") or {}
    params = meta.get("params", {})
    snapshot = meta.get("snapshot", {})
    return {
        "version": version_id,
        "current": version_id == current,
        "created": datetime.fromtimestamp(meta.get("created_at", 0) / 1000, UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
        "metric": gate.get("metric"),
        "score": gate.get("candidate"),
        "tuned": {k: params.get(k) for k in ("factors", "regularization", "alpha", "iterations")}
        | {"negative_below": params.get("weighting", {}).get("negative_below")},
        "snapshot": {
            k: snapshot[k]
            for k in ("source", "format", "topic", "end_offsets", "events")
            if k in snapshot
        },
    }


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    store = ModelStore(settings.model_store)
    current = store.current()
    rows = [_row(store, v, current) for v in store.versions()]
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    if not rows:
        print(f"no model versions in {settings.model_store}")
        client = sync_redis_client(settings, "freshrec-models")
        try:
            mismatch = store_mismatch(client, settings, store)
        finally:
            client.close()
        if mismatch is not None:
            print(f"freshrec models list: {mismatch}", file=sys.stderr)
            return 1
        return 0
    for row in rows:
        score = "-" if row["score"] is None else f"{row['metric']} {row['score']:.4f}"
        t = row["tuned"]
        print(
            f"{'*' if row['current'] else ' '} {row['version']}  {row['created']}  {score}  "
            f"f={t['factors']} λ={t['regularization']:.3g} α={t['alpha']:.3g} "
            f"it={t['iterations']} dislike<{t['negative_below']}  "
            f"events={row['snapshot'].get('events', '?')}"
        )
    return 0


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    store = ModelStore(settings.model_store)
    meta = store.meta(args.version)
    meta["n_items"] = len(meta.pop("item_ids", []))
    meta["current"] = store.current() == args.version
    print(json.dumps(meta, indent=1, sort_keys=True))
    return 0


def run_rollback(args: argparse.Namespace, settings: Settings) -> int:
    store = ModelStore(settings.model_store)
    before = store.current()
    try:
        # whole and readable, or the workers could not load it
        load_version(store, args.version)
    except ModelStoreError as exc:
        raise BadInputError(f"cannot roll back to {args.version}: {exc}") from None
    with forget_guard(settings, args.force) as guard:
        after = store.set_current(
            args.version, move="rollback", by=f"{mover()} (freshrec models rollback)", guard=guard
        )
    print(
        f"current model: {args.version} (was {before}; generation {after.generation}); "
        "workers refresh every list at their next poll"
    )
    return 0


@contextlib.contextmanager
def forget_guard(settings: Settings, force: bool) -> Iterator[Guard]:
    """The forget promise's check for a pointer move (:mod:`freshrec.forgets`): a version
    read before the newest forget is refused, in one line; with ``force`` it is moved to
    all the same, with a warning (also when Redis cannot say)."""
    client = sync_redis_client(settings, "freshrec-models")
    check = guard_for(client, settings.key_prefix)

    def guard(version_id: str, meta: Mapping[str, Any]) -> None:
        try:
            check(version_id, meta)
        except ForgottenSince as exc:
            if not force:
                raise BadInputError(f"{exc}; --force moves the pointer anyway") from None
            print(f"freshrec models: warning: {exc}; moved anyway (--force)", file=sys.stderr)
        except TransientError as exc:
            if not force:
                raise TransientError(f"{exc}; run it again (or --force, unchecked)") from None
            print(f"freshrec models: warning: {exc}; moved unchecked (--force)", file=sys.stderr)

    try:
        yield guard
    finally:
        client.close()


def run_prune(args: argparse.Namespace, settings: Settings) -> int:
    keep = settings.model_keep if args.keep is None else args.keep
    store = ModelStore(settings.model_store)
    client = sync_redis_client(settings, "freshrec-models")
    try:
        deleted = store.prune(keep)
        if args.forgotten:
            deleted += _prune_forgotten(store, read_clock(client, settings.key_prefix).newest_ms)
        print(f"deleted {len(deleted)} version(s)" + (": " + " ".join(deleted) if deleted else ""))
        tables = drop_item_tables_or_warn(client, settings.key_prefix, store.versions())
    finally:
        client.close()
    if tables:
        print(f"deleted the Redis item tables of {len(tables)} version(s) no longer in the store")
    return 0


def _prune_forgotten(store: ModelStore, newest_ms: int) -> list[str]:
    """Delete the versions read before ``newest_ms`` that the pointer does not name now (a
    rollback could not name them again without --force); returns their ids."""
    pointer = store.pointer()
    doomed = [
        v
        for v in store.versions()
        if v not in (pointer.version, pointer.canary) and data_read_ms(store.meta(v)) < newest_ms
    ]
    for version_id in doomed:
        store.delete(version_id)
    return doomed


def online_figures(settings: Settings) -> list[tuple[str, str, OnlineFigures]]:
    """Every ``(version, arm, figures)`` the workers counted in Redis, by version then arm."""
    client = sync_redis_client(settings, "freshrec-models")
    prefix = settings.key_prefix
    try:
        found = []
        for raw in client.scan_iter(match=f"{prefix}online:*", count=1000):
            key = raw.decode() if isinstance(raw, bytes) else raw
            named = parse_key(prefix, key)
            if named is not None:
                found.append((*named, OnlineFigures.of(decode_counts(client.hgetall(key)))))
    except redis.RedisError as exc:
        raise TransientError(f"cannot read the online counts from Redis: {exc}") from exc
    finally:
        client.close()
    return sorted(found, key=lambda row: (row[0], row[1]))


def _rate(rate: float, ci: tuple[float, float]) -> str:
    return f"{rate:6.2%} [{ci[0]:.2%}, {ci[1]:.2%}]"


def run_online(args: argparse.Namespace, settings: Settings) -> int:
    current = ModelStore(settings.model_store).current()
    rows = online_figures(settings)
    if args.json:
        for version, arm, figures in rows:
            row = {"version": version, "arm": arm, "current": version == current}
            print(json.dumps(row | figures.as_dict(), sort_keys=True))
        return 0
    if not rows:
        print("no online figures yet: no worker has seen an event of a user shown a model's list")
        return 0
    print(
        f"  {'version':<28} {'arm':<8} {'events':>8}  {'hit@10 (95% CI)':<26} "
        f"{'hit@k (95% CI)':<28} {'MRR':>6} {'rated':>6} {'rating':>6}"
    )
    for version, arm, f in rows:
        rating = "-" if f.mean_rating is None else f"{f.mean_rating:.2f}"
        print(
            f"{'*' if version == current else ' '} {version:<28} {arm:<8} {f.events:>8}  "
            f"{_rate(f.hit_rate10, f.hit_rate10_ci):<26} "
            f"{'k=' + str(f.k) + ' ' + _rate(f.hit_ratek, f.hit_ratek_ci):<28} "
            f"{f.mrr:>6.3f} {f.rated:>6} {rating:>6}"
        )
    return 0


def run_items(args: argparse.Namespace, settings: Settings) -> int:
    version = args.version or ModelStore(settings.model_store).current()
    if version is None:
        print("no model version yet: items are folded in against a model's user vectors")
        return 0
    client = sync_redis_client(settings, "freshrec-items")
    try:
        raw = client.hgetall(interim_key(settings.key_prefix, version))
    except redis.RedisError as exc:
        raise TransientError(f"cannot read the interim items from Redis: {exc}") from exc
    finally:
        client.close()
    found = sorted(decode_vectors(raw).items(), key=lambda kv: (-kv[1].users, kv[0]))
    if args.json:
        for item, v in found:
            row = {"item": item, "version": version, "source": v.source, "users": v.users}
            print(json.dumps(row | {"first_ms": v.first_ms, "at_ms": v.at_ms}))
        return 0
    if not found:
        print(f"no interim items for version {version}")
        return 0
    print(f"{len(found)} interim item(s) for version {version}")
    print(f"  {'item':<32} {'source':<8} {'users':>7}  {'first contribution':<20} {'written':<20}")
    for item, v in found:
        print(
            f"  {item:<32} {v.source:<8} {v.users:>7}  {_when(v.first_ms):<20} {_when(v.at_ms):<20}"
        )
    return 0


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def canary_status(settings: Settings) -> dict[str, Any] | None:
    """Both arms' online figures and the sequential test's state; None without a canary."""
    pointer = ModelStore(settings.model_store).pointer()
    if pointer.canary is None or pointer.version is None:
        return None
    figures = {(v, arm): f for v, arm, f in online_figures(settings)}
    client = sync_redis_client(settings, "freshrec-models")
    try:
        counts = [
            decode_counts(client.hgetall(online_key(settings.key_prefix, v, arm)))
            for v, arm in ((pointer.version, "current"), (pointer.canary, "canary"))
        ]
    except redis.RedisError as exc:
        raise TransientError(f"cannot read the online counts from Redis: {exc}") from exc
    finally:
        client.close()
    a, b = counts
    state = look_at_canary(a, b, settings)
    empty = OnlineFigures.of(decode_counts({}))
    return {
        "current": {"version": pointer.version}
        | figures.get((pointer.version, "current"), empty).as_dict(),
        "canary": {"version": pointer.canary, "fraction": pointer.fraction}
        | figures.get((pointer.canary, "canary"), empty).as_dict(),
        "test": state.as_dict()
        | {
            "metric": "hit_rate@10",
            "method": "mixture SPRT (always valid)",
            "alpha": settings.canary_alpha,
            "tau": settings.canary_tau,
            "min_events": settings.canary_min_events,
            "auto_abort": settings.canary_auto_abort,
        },
        "started": pointer.describe(),
    }


def run_canary(args: argparse.Namespace, settings: Settings) -> int:
    store = ModelStore(settings.model_store)
    by = f"{mover()} (freshrec models canary {args.target})"
    if args.target in ("promote", "abort"):
        before = store.pointer()
        with forget_guard(settings, args.force) as guard:
            after = store.end_canary(promote=args.target == "promote", by=by, guard=guard)
        print(
            f"{args.target}: current model {after.version} for every user (canary "
            f"{before.canary} ended; generation {after.generation}); workers rewrite every "
            "list at their next poll"
        )
        return 0
    if args.target == "status":
        status = canary_status(settings)
        if status is None:
            print("no canary release is running")
            return 0
        if args.json:
            print(json.dumps(status, sort_keys=True))
            return 0
        _print_status(status)
        return 0
    if args.fraction is None or not 0 < args.fraction < 1:
        raise BadInputError("a canary needs --fraction F, with 0 < F < 1 (0.2: a fifth of users)")
    try:
        load_version(store, args.target)  # whole and readable, or the workers could not load it
    except ModelStoreError as exc:
        raise BadInputError(f"cannot start a canary of {args.target}: {exc}") from None
    with forget_guard(settings, args.force) as guard:
        after = store.start_canary(args.target, args.fraction, by=by, guard=guard)
    print(
        f"canary: {args.target} for {args.fraction:.1%} of users, {after.version} for the "
        f"rest (generation {after.generation}); `freshrec models canary status` to follow it"
    )
    return 0


def _print_status(status: dict[str, Any]) -> None:
    test = status["test"]
    print(f"canary started: {status['started']}")
    for arm in ("current", "canary"):
        f = status[arm]
        low, high = f["hit_rate@10_ci95"]
        rating = "-" if f["mean_rating"] is None else f"{f['mean_rating']:.2f}"
        share = f" ({f['fraction']:.0%} of users)" if arm == "canary" else ""
        print(
            f"  {arm:<8} {f['version']}{share}: {f['events']} events, hit rate @10 "
            f"{f['hit_rate@10']:.2%} [{low:.2%}, {high:.2%}], mean rating of recommended "
            f"items {rating} ({f['rated']})"
        )
    low, high = test["interval"]
    print(
        f"  difference (canary - current) {test['difference']:+.2%}, always-valid "
        f"{1 - test['alpha']:.0%} interval [{low:+.2%}, {high:+.2%}]"
    )
    print(
        f"  test ({test['method']}, alpha {test['alpha']}): {test['decision']} "
        f"(p {test['p_value']:.3g}; decides after {test['min_events']} events per arm)"
    )
