"""``freshrec models list|show|rollback|prune``: the model versions, for ops.

Versions are immutable; what ops change is the current-model pointer. A
rollback moves it back to an older version (workers follow it at their next
poll and refresh every list, as after a publish); pruning deletes all but the
newest ``FRESHREC_MODEL_KEEP`` versions and never the current one.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from freshrec.argtypes import positive_int
from freshrec.errors import BadInputError, ModelStoreError
from freshrec.model_store import ModelStore
from freshrec.redis_client import sync_redis_client
from freshrec.settings import Settings
from models.version import load_version
from retrain.item_tables import drop_item_tables_or_warn
from retrain.served import store_mismatch


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    back = actions.add_parser("rollback", help="make an existing version current again")
    back.add_argument("version")
    back.set_defaults(func=run_rollback)
    prune = actions.add_parser("prune", help="delete all but the newest versions and the current")
    prune.add_argument(
        "--keep",
        type=positive_int,
        default=None,
        help="versions to keep (default: FRESHREC_MODEL_KEEP)",
    )
    prune.set_defaults(func=run_prune)


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
    store.set_current(args.version)
    print(f"current model: {args.version} (was {before}); workers refresh at their next poll")
    return 0


def run_prune(args: argparse.Namespace, settings: Settings) -> int:
    keep = settings.model_keep if args.keep is None else args.keep
    store = ModelStore(settings.model_store)
    deleted = store.prune(keep)
    print(f"deleted {len(deleted)} version(s)" + (": " + " ".join(deleted) if deleted else ""))
    client = sync_redis_client(settings, "freshrec-models")
    try:
        tables = drop_item_tables_or_warn(client, settings.key_prefix, store.versions())
    finally:
        client.close()
    if tables:
        print(f"deleted the Redis item tables of {len(tables)} version(s) no longer in the store")
    return 0
