"""The loop closed: events through the real worker, ``freshrec retrain`` from its changelog,
the worker adopting what the job published.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import redis
import scipy.sparse as sp

from freshrec.model_store import ModelStore
from freshrec.settings import Settings
from models.als import ALSConfig, ALSFactors, train
from models.evaluate import seen_matrix, split_log
from models.interactions import InteractionLog
from models.metrics import ranking_metrics
from models.synthetic import generate_ratings, long_history_ratings
from models.topk import top_k
from models.version import load_version
from models.weighting import DEFAULT_WEIGHTING
from retrain.publish import train_and_publish
from retrain.retrain_cli import EXIT_PUBLISHED, EXIT_REFUSED
from schemas.state import changelog_topic
from streams.dlq import read_topic
from tests.streams.worker import (
    BASE_TS,
    WorkerProcess,
    lists_caught_up,
    publish,
    rate,
    read_list,
    synthetic,
    watch,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: A model the size of the planted structure (8 clusters), quick to train.
SMALL_MODEL = ("--threads", "1", "--factors", "8", "--iterations", "10", "--regularization", "1")


def events_of(log: InteractionLog) -> list[dict[str, Any]]:
    """The log as the site back-end would have published it."""
    out = []
    for n, (u, i, kind, value, ts) in enumerate(
        zip(log.user, log.item, log.kind, log.value, log.ts, strict=True)
    ):
        user, item = log.users.ids[u], log.items.ids[i]
        if kind == 1:
            out.append(rate(f"ev-{n}", user, item, int(ts), float(np.clip(value, 0.5, 5.0))))
        else:
            out.append(watch(f"ev-{n}", user, item, int(ts), float(value)))
    return out


def run_retrain(settings: Settings, *args: str) -> tuple[int, dict[str, Any], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
    env |= settings.as_env()
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "retrain", *SMALL_MODEL, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_retrain_learns_from_the_stream_and_the_worker_adopts_it(
    start_worker: Callable[..., WorkerProcess],
    worker_settings: Settings,
    redis_client: redis.Redis,
) -> None:
    settings = worker_settings.replace(retrain_tune_budget_s=0.0)
    events = events_of(synthetic().log)
    secret = [
        watch("forget-1", "forgetful", "secret-item", BASE_TS + 5),
        watch("forget-2", "forgetful", "item-1", BASE_TS + 6),
    ]
    worker = start_worker(settings)
    publish(settings, events + secret)
    worker.wait_for(
        lambda: lists_caught_up(settings, redis_client, events + secret), 180, "every list"
    )
    publish(
        settings,
        [{"type": "forget", "event_id": "forget-3", "user_id": "forgetful", "ts": BASE_TS + 7}],
    )
    worker.wait_for(
        lambda: read_list(redis_client, settings, "forgetful") is None, 60, "the forget"
    )

    code, summary, err = run_retrain(settings)
    assert code == EXIT_PUBLISHED, err
    store = ModelStore(settings.model_store)
    version = load_version(store, summary["version"])
    # the snapshot is the changelog up to its end: offsets recorded, forgotten user absent
    newest: dict[int, int] = {}
    for msg in read_topic(settings, changelog_topic(settings.app_id)):
        partition, offset = msg.partition(), msg.offset()
        assert partition is not None and offset is not None
        newest[partition] = max(newest.get(partition, 0), offset + 1)
    assert version.snapshot["end_offsets"] == {str(p): o for p, o in newest.items()}
    assert version.snapshot["users"] == len({e["user_id"] for e in events})
    assert "secret-item" not in version.item_ids

    users = sorted({e["user_id"] for e in events})

    def all_lists_on(version_id: str) -> bool:
        lists = [read_list(redis_client, settings, u) for u in users]
        return all(r is not None and r.model_version == version_id for r in lists)

    worker.wait_for(lambda: all_lists_on(version.version_id), 60, "every list on the new model")

    # candidates the gate must refuse change neither the versions, the pointer nor a list:
    # item factors shuffled against their ids (a test hook), and a deliberately bad
    # configuration
    def lists() -> list[tuple[str | None, list[str]] | None]:
        held = [read_list(redis_client, settings, u) for u in users]
        return [None if r is None else (r.model_version, [e.item for e in r.items]) for r in held]

    before = lists()
    for worse in (
        ("--debug-permute-items",),
        ("--factors", "2", "--iterations", "1", "--regularization", "5000"),
    ):
        code, refused, err = run_retrain(settings, *worse)
        assert code == EXIT_REFUSED, err
        assert refused["baseline_version"] == version.version_id
        assert f"{refused['candidate']:.4f}" in err and f"{refused['baseline']:.4f}" in err
        assert store.versions() == [version.version_id]
        assert store.current() == version.version_id
        assert lists() == before


def publish_trained(settings: Settings, log: InteractionLog) -> ALSFactors:
    """Train ALS on ``log`` and publish it as the current model, as ``freshrec train`` does;
    returns the factors it trained, the users' too (a version keeps only the items'), so
    that trained-in users are scored by the very model the worker folds streamed users
    into (it is trained once)."""
    trained: list[ALSFactors] = []

    def keep(confidence: sp.csr_matrix, cfg: ALSConfig) -> ALSFactors:
        trained.append(train(confidence, cfg))
        return trained[-1]

    outcome = train_and_publish(
        ModelStore(settings.model_store),
        log,
        ALSConfig(num_threads=1, use_gpu=False),
        DEFAULT_WEIGHTING,
        popular_length=settings.list_length + settings.history_length,
        snapshot={"source": "test"},
        trainer=keep,
    )
    assert outcome.published
    np.testing.assert_array_equal(outcome.version.item_factors, trained[0].item_factors)
    return trained[0]


def stream_users(
    start_worker: Callable[..., WorkerProcess],
    settings: Settings,
    client: redis.Redis,
    log: InteractionLog,
    users: np.ndarray,
    timeout_s: float,
) -> dict[int, list[str]]:
    """Each chosen user's top 10 as the real worker folds them in: their rows of ``log`` (user
    indices ``users``) published as rate events, a worker started, every list waited for.
    Asserts every list is personal and offers no item its user rated."""
    mine = log.take(np.flatnonzero(np.isin(log.user, users)))
    names = log.items.ids
    events = [
        rate(f"ev-{n}", log.users.ids[u], names[i], int(ts), float(v))
        for n, (u, i, v, ts) in enumerate(
            zip(mine.user, mine.item, mine.value, mine.ts, strict=True)
        )
    ]
    worker = start_worker(settings)
    publish(settings, events)
    worker.wait_for(lambda: lists_caught_up(settings, client, events), timeout_s, "streamed lists")
    streamed: dict[int, list[str]] = {}
    for u in users.tolist():
        recs = read_list(client, settings, log.users.ids[u])
        assert recs is not None and recs.source == "personal"
        items = [entry.item for entry in recs.items]
        rated = {names[i] for i in mine.item[mine.user == u].tolist()}
        assert not rated.intersection(items), f"user {u} is offered items they rated"
        streamed[u] = items[:10]
    return streamed


def trained_in(trained: ALSFactors, log: InteractionLog, users: np.ndarray) -> dict[int, list[str]]:
    """Each chosen user's top 10 from the factors ``trained`` learnt for them, unseen items."""
    names = log.items.ids
    top, _ = top_k(trained.user_factors[users], trained.item_factors, 10, seen_matrix(log)[users])
    return {int(u): [names[i] for i in row if i >= 0] for u, row in zip(users, top, strict=True)}


def heaviest_and_a_sample(log: InteractionLog, heaviest: int, sample: int) -> np.ndarray:
    """The ``heaviest`` users with the most rows, then ``sample`` others drawn at random."""
    per_user = np.bincount(log.user, minlength=len(log.users))
    heavy = np.argsort(-per_user)[:heaviest]
    others = np.random.default_rng(1).choice(
        np.setdiff1d(np.arange(len(log.users)), heavy), sample, replace=False
    )
    return np.r_[heavy, others]


def test_streamed_users_rank_like_users_trained_into_the_model(
    start_worker: Callable[..., WorkerProcess],
    worker_settings: Settings,
    redis_client: redis.Redis,
) -> None:
    """Issue 9: users folded in event by event through the real worker scored 10% below the
    same users trained into the model (the weighting rule, and seen items past the history
    cap coming back into lists). Within 2% now, and no list offers an item its user rated.
    The cap is the old default of 100, so the heaviest users pass it and their seen items
    past it are checked."""
    worker_settings = worker_settings.replace(history_length=100)
    ratings = generate_ratings(n_users=400, n_items=600, n_ratings=30_000, seed=21).log
    train_log, test_log = split_log(ratings, "stratified-item", 0.75, 42)
    trained = publish_trained(worker_settings, train_log)

    # the streamed users: the heaviest (past the history cap) and a random sample
    users = heaviest_and_a_sample(train_log, 10, 110)
    per_user = np.bincount(train_log.user, minlength=len(train_log.users))
    assert per_user[users[0]] > worker_settings.history_length
    streamed = stream_users(start_worker, worker_settings, redis_client, train_log, users, 180)

    names = train_log.items.ids
    chosen = set(users.tolist())
    relevant: dict[int, set[str]] = {}
    for u, i in zip(test_log.user.tolist(), test_log.item.tolist(), strict=True):
        if u in chosen:
            relevant.setdefault(u, set()).add(names[i])
    train_items = set(names)
    ours = ranking_metrics(streamed, relevant, train_items, 10)["ndcg@10"]
    theirs = ranking_metrics(trained_in(trained, train_log, users), relevant, train_items, 10)[
        "ndcg@10"
    ]
    print(f"nDCG@10 streamed {ours:.4f}, trained in {theirs:.4f}")
    assert ours >= 0.98 * theirs


def test_streamed_users_with_long_histories_rank_like_users_trained_in(
    start_worker: Callable[..., WorkerProcess],
    worker_settings: Settings,
    redis_client: redis.Redis,
) -> None:
    """Issue 25: on real rating data, users folded in through the worker scored 7.3% below
    the same users trained in, those past 100 events 0.62 against 0.77: the worker kept
    only the newest 100 events of each history. On the long-history profile (histories
    up to 2,000 ratings), streamed users rank within 1% of trained-in ones, the heaviest
    included, and no list offers an item its user rated."""
    ratings = long_history_ratings(n_users=500, seed=25).log
    train_log, test_log = split_log(ratings, "stratified-item", 0.75, 42)
    trained = publish_trained(worker_settings, train_log)

    # the streamed users: the six heaviest (up to 1,600 events each) and a random sample
    users = heaviest_and_a_sample(train_log, 6, 50)
    per_user = np.bincount(train_log.user, minlength=len(train_log.users))
    assert per_user[users[0]] > 1500
    assert (per_user[users] > 100).mean() > 0.35
    streamed = stream_users(start_worker, worker_settings, redis_client, train_log, users, 240)

    names = train_log.items.ids
    relevant: dict[int, set[str]] = {}
    for u, i in zip(test_log.user.tolist(), test_log.item.tolist(), strict=True):
        relevant.setdefault(u, set()).add(names[i])
    trained_lists = trained_in(trained, train_log, users)
    train_items = set(names)

    def ndcg(lists: dict[int, list[str]], who: np.ndarray) -> float:
        chosen = {u: lists[u] for u in who.tolist()}
        mine_relevant = {u: relevant[u] for u in who.tolist() if u in relevant}
        return ranking_metrics(chosen, mine_relevant, train_items, 10)["ndcg@10"]

    long_ones = users[per_user[users] > 100]
    ours, theirs = ndcg(streamed, users), ndcg(trained_lists, users)
    ours_long, theirs_long = ndcg(streamed, long_ones), ndcg(trained_lists, long_ones)
    print(
        f"nDCG@10 streamed {ours:.4f}, trained in {theirs:.4f}; past 100 events "
        f"{ours_long:.4f} against {theirs_long:.4f} ({long_ones.size} users)"
    )
    assert ours >= 0.99 * theirs
    assert ours_long >= 0.99 * theirs_long
