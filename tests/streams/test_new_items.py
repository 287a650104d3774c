"""Items the model does not know, recommendable within seconds of their first users, on
every worker (issue 23): two workers on four partitions, the real broker, redis-server
and the API.

Synthetic data with planted clusters (:func:`tests.streams.worker.synthetic`);
a new item is watched by users of one cluster only, held by both workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis

from freshrec.model_store import ModelStore
from freshrec.settings import Settings
from freshrec.stack import free_port, wait_until
from models.als import ALSConfig
from models.item_foldin import ItemStats, item_vectors
from models.recommender import Recommender
from models.version import load_version, recommender_from_version
from models.weighting import DEFAULT_WEIGHTING, user_confidences
from retrain.publish import train_and_publish
from retrain.snapshot import read_changelog
from schemas.interim import decode_vector, interim_key
from schemas.recs import compact_version, user_key
from schemas.state import UserState, changelog_topic
from tests.api_process import api_process, get_json
from tests.streams.worker import (
    BASE_TS,
    WorkerProcess,
    changelog_states,
    histories,
    lists_hold,
    publish,
    publish_model,
    read_list,
    synthetic,
    watch,
)

#: Users of the planted cluster (of about 50) who watch the new item: a popular item
#: of the cluster, as ALS scores an item by how many of a taste's users took it.
WATCHERS = 30


def _recomputed(
    model: Recommender, states: dict[str, UserState | None], item: str
) -> tuple[np.ndarray, int]:
    """The item's vector and user count recomputed from the users' histories: each user's
    vector and confidence just after their last event on the item (streams.interim)."""
    stats = ItemStats.empty(model.foldin.factors)
    for state in states.values():
        if state is None or state.is_marker:
            continue
        rows = [n for n, i in enumerate(state.history) if i.item_id == item]
        if not rows:
            continue
        prefix = state.history[: rows[-1] + 1]
        conf = user_confidences(prefix, model.weighting)
        encoded, _ = model.encode([conf])
        if not (encoded.confidences > 0).any():  # nothing known to fold in: no vector
            continue
        x = model.foldin.user_vectors(encoded)[0]
        stats.add(x, model.foldin.alpha * conf[item])
    assert model.user_gram is not None
    return item_vectors(model.user_gram, [stats])[0], stats.users


def _shared(client: redis.Redis, s: Settings, version: str, item: str) -> tuple[np.ndarray, int]:
    raw = client.hget(interim_key(s.key_prefix, version), item)
    if raw is None:
        return np.zeros(0), 0
    v = decode_vector(raw)
    return v.vector, v.users


def test_a_new_item_is_folded_in_across_workers_survives_a_sigkill_and_hands_over(
    worker_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    s = worker_settings.replace(
        list_length=20, api_max_k=20, api_default_k=20, new_item_min_users=3
    )
    data = synthetic()
    version = publish_model(s, data)
    model = recommender_from_version(load_version(ModelStore(s.model_store), version))
    assert model.user_gram is not None, "a published version carries its user Gram"
    first = start_worker(s)
    second = start_worker(s.replace(worker_web_port=free_port()))
    history = histories(data.log, per_user=15)
    publish(s, history)
    users = data.log.users.ids
    wait_until(
        lambda: all(read_list(redis_client, s, u) is not None for u in users[::7]),
        60,
        "the users' lists",
    )

    # --- a new item watched by users of cluster 0, held by both workers -----------------
    cluster = data.user_clusters[:, 0]
    matched = [u for n, u in enumerate(users) if cluster[n] == 0]
    # unrelated: cluster 0 is neither their main taste nor their second one
    others = [u for n, u in enumerate(users) if 0 not in data.user_clusters[n]]
    watchers, audience = matched[:WATCHERS], matched[WATCHERS:]
    assert len(audience) >= 10
    new = "new-item-0"
    ts = BASE_TS + 100_000
    started = time.monotonic()
    publish(s, [watch(f"n-{u}", u, new, ts) for u in watchers])
    wait_until(
        lambda: _shared(redis_client, s, version, new)[1] == WATCHERS, 30, "the item's vector"
    )
    folded_in_s = time.monotonic() - started
    states = changelog_states(s)
    expected, n_users = _recomputed(model, states, new)
    got, shared_users = _shared(redis_client, s, version, new)
    assert n_users == shared_users == WATCHERS
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

    # --- it enters the lists written next: of its cluster's users, rarely of others ------
    nudge = ts + 1000
    publish(s, [watch(f"nudge-{u}", u, data.log.items.ids[0], nudge) for u in audience + others])
    wait_until(
        lambda: all(
            (r := read_list(redis_client, s, u)) is not None and r.updated_at == nudge
            for u in audience + others
        ),
        60,
        "the nudged lists",
    )
    matched_rate = lists_hold(redis_client, s, audience, new)
    other_rate = lists_hold(redis_client, s, others, new)
    print(f"shared {folded_in_s:.2f}s; lists: cluster {matched_rate:.2f}, others {other_rate:.2f}")
    assert matched_rate >= 0.5
    assert other_rate <= 0.05
    assert lists_hold(redis_client, s, watchers, new) == 0  # never to who saw it

    # --- GET /similar/<new item>: its planted neighbours -------------------------------
    with api_process(s.replace(api_port=free_port()), tmp_path / "api.log") as api:
        status, body = get_json(f"{api}/similar/{new}?k=5")
    assert status == 200, body
    near = [i["item"] for i in body["items"]]
    same = sum(data.cluster_of(i) == 0 for i in near)
    assert same >= 4, near

    # --- a SIGKILL with contributions in flight: none lost, none doubled ----------------
    second_item = "new-item-1"
    late = matched[: WATCHERS + 10]
    publish(s, [watch(f"m-{u}", u, second_item, ts + 2000) for u in late[:20]])
    second.kill()
    publish(s, [watch(f"m-{u}", u, second_item, ts + 2000) for u in late[20:]])
    second = start_worker(s.replace(worker_web_port=free_port()))
    wait_until(
        lambda: _shared(redis_client, s, version, second_item)[1] == len(late),
        90,
        "the second item's vector after the kill",
    )
    # the vector written last may trail the last batch by nothing: settle on the changelog
    expected, n_users = _recomputed(model, changelog_states(s), second_item)
    assert n_users == len(late)
    wait_until(
        lambda: np.allclose(
            _shared(redis_client, s, version, second_item)[0], expected, rtol=1e-4, atol=1e-5
        ),
        30,
        "the second item's vector to equal the recomputation",
    )

    # --- a forgotten user's contribution leaves the item's vector -----------------------
    gone = watchers[0]
    publish(s, [{"type": "forget", "event_id": f"f-{gone}", "user_id": gone, "ts": ts + 5000}])
    wait_until(
        lambda: _shared(redis_client, s, version, new)[1] == WATCHERS - 1,
        30,
        "the forget to reach the item",
    )
    expected, n_users = _recomputed(model, changelog_states(s), new)
    assert n_users == WATCHERS - 1
    np.testing.assert_allclose(
        _shared(redis_client, s, version, new)[0], expected, rtol=1e-4, atol=1e-5
    )

    # --- a retrain that includes the item: no interim vector, every list the model's ----
    snapshot = read_changelog(s.bootstrap_servers, changelog_topic(s.app_id), 30)
    retrained = train_and_publish(
        ModelStore(s.model_store),
        snapshot.log,
        ALSConfig(factors=8, iterations=12, num_threads=1, seed=42, use_gpu=False),
        DEFAULT_WEIGHTING,
        popular_length=s.list_length,
        snapshot={"source": "test"},
    ).version.version_id
    assert new in load_version(ModelStore(s.model_store), retrained).item_ids

    def on_the_retrained_model(user: str) -> bool:
        raw = redis_client.hget(user_key(s.key_prefix, user), "data")
        return isinstance(raw, bytes) and compact_version(raw) == retrained

    kept = [u for u in users if u != gone]
    wait_until(lambda: all(map(on_the_retrained_model, kept)), 60, "lists on the retrain")
    assert redis_client.hget(interim_key(s.key_prefix, retrained), new) is None
    assert lists_hold(redis_client, s, audience, new) > 0  # now by the model's own vector
    assert first.alive and second.alive
