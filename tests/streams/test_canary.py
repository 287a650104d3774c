"""Canary releases end to end on a real worker, broker, Redis and API (issue 24, item 4):
a stable fifth of the users on the candidate, ``promote`` moving every list to it, and
a planted worse candidate aborted by the worker's sequential test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import redis

from freshrec.model_store import ModelStore
from freshrec.settings import Settings
from models.als import ALSConfig
from models.canary import in_canary
from models.version import ModelVersion
from models.weighting import DEFAULT_WEIGHTING
from retrain.publish import train_and_publish
from schemas.recs import RecList
from tests.api_process import api_process, get_json
from tests.streams.test_rollback import models_cli, popular_model
from tests.streams.worker import (
    BASE_TS,
    StartWorker,
    publish,
    publish_model,
    read_list,
    synthetic,
    watch,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def save_candidate(
    settings: Settings, worse: bool = False, metrics: dict[str, float] | None = None
) -> str:
    """A version saved, not published; ``worse``: its item factors shuffled against their
    ids, so it ranks at random (what the gate refuses, planted here on purpose)."""
    data = synthetic()

    def permute(version: ModelVersion) -> ModelVersion:
        order = np.random.default_rng(3).permutation(version.item_factors.shape[0])
        version.item_factors[:] = version.item_factors[order]
        return version

    outcome = train_and_publish(
        ModelStore(settings.model_store),
        data.log,
        ALSConfig(factors=8, iterations=12, num_threads=1, seed=9, use_gpu=False),
        DEFAULT_WEIGHTING,
        popular_length=settings.list_length,
        snapshot={"source": "test"},
        make_current=False,
        transform=permute if worse else None,
        metrics=metrics,
    )
    return outcome.version.version_id


def lists_of(client: redis.Redis, settings: Settings, users: list[str]) -> dict[str, RecList]:
    out = {}
    for user in users:
        recs = read_list(client, settings, user)
        if recs is not None:
            out[user] = recs
    return out


def test_a_20_percent_canary_serves_about_a_fifth_of_users_and_promote_moves_everyone(
    worker_settings: Settings,
    start_worker: StartWorker,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    s = worker_settings
    current = publish_model(s, synthetic())
    candidate = save_candidate(s)
    users = [f"user-{n}" for n in range(400)]
    worker = start_worker()
    publish(s, [watch(f"e{n}", u, f"item-{n % 96}", BASE_TS + n) for n, u in enumerate(users)])
    worker.wait_for(lambda: len(lists_of(redis_client, s, users)) == len(users), 60, "every list")
    done = models_cli(s, "canary", candidate, "--fraction", "0.2")
    assert done.returncode == 0, done.stderr
    expected = {u: in_canary(u, candidate, 0.2) for u in users}

    def arms_in_place() -> bool:
        got = lists_of(redis_client, s, users)
        return all(
            (x.model_version, x.variant)
            == ((candidate, "canary") if expected[u] else (current, "current"))
            for u, x in got.items()
        ) and len(got) == len(users)

    worker.wait_for(arms_in_place, 60, "every list in its arm, idle users included")
    on_candidate = sum(expected.values())
    n, p = len(users), 0.2
    assert abs(on_candidate - n * p) <= 4 * math.sqrt(n * p * (1 - p)), on_candidate
    assert popular_model(redis_client, s) == current  # the shared fallback stays current
    with api_process(s, tmp_path / "api.log") as base:
        one = next(u for u in users if expected[u])
        other = next(u for u in users if not expected[u])
        assert get_json(f"{base}/recs/{one}")[1]["variant"] == "canary"
        assert get_json(f"{base}/recs/{other}")[1]["variant"] == "current"

    status = models_cli(s, "canary", "status", "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert (shown["current"]["version"], shown["canary"]["version"]) == (current, candidate)
    assert shown["canary"]["fraction"] == 0.2 and shown["test"]["decision"] == "continue"
    text = models_cli(s, "canary", "status").stdout
    assert "always-valid" in text and "mixture SPRT" in text

    done = models_cli(s, "canary", "promote")
    assert done.returncode == 0, done.stderr
    assert ModelStore(s.model_store).pointer().version == candidate
    worker.wait_for(
        lambda: (
            all(
                (x.model_version, x.variant) == (candidate, "current")
                for x in lists_of(redis_client, s, users).values()
            )
            and popular_model(redis_client, s) == candidate
        ),
        60,
        "every list on the promoted candidate",
    )


def test_a_planted_worse_candidate_is_aborted_automatically_and_every_list_returns(
    worker_settings: Settings, start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    """Users go on watching what the current model lists for them; the candidate ranks at
    random, so its users' events miss its lists: the worker's test finds it worse and
    aborts it, and every list goes back to the current version."""
    s = worker_settings.replace(canary_min_events=40)
    current = publish_model(s, synthetic())
    worse = save_candidate(s, worse=True)
    users = [f"user-{n}" for n in range(160)]
    worker = start_worker(s)
    publish(s, [watch(f"e{n}", u, f"item-{n % 96}", BASE_TS + n) for n, u in enumerate(users)])
    worker.wait_for(lambda: len(lists_of(redis_client, s, users)) == len(users), 60, "every list")
    liked = {u: [i.item for i in x.items] for u, x in lists_of(redis_client, s, users).items()}
    store = ModelStore(s.model_store)
    store.start_canary(worse, 0.5, by="test")
    arms = {u: in_canary(u, worse, 0.5) for u in users}
    worker.wait_for(
        lambda: all(
            x.variant == ("canary" if arms[u] else "current")
            for u, x in lists_of(redis_client, s, users).items()
        ),
        60,
        "the canary's lists",
    )
    # three rounds, each user's next favourite by the current model: the first event after
    # the canary started is compared with no list (the state's list predates it)
    for round_ in range(3):
        publish(
            s,
            [
                watch(f"r{round_}-{n}", u, liked[u][round_], BASE_TS + 1000 * (round_ + 1) + n)
                for n, u in enumerate(users)
            ],
        )
    worker.wait_for(lambda: store.pointer().canary is None, 60, "the automatic abort of the canary")
    pointer = store.pointer()
    assert (pointer.move, pointer.version) == ("abort", current)
    assert "automatic abort" in pointer.by
    worker.wait_for(
        lambda: all(
            (x.model_version, x.variant) == (current, "current")
            for x in lists_of(redis_client, s, users).values()
        ),
        60,
        "every list back on the current version",
    )
    assert worker.metric_total("freshrec_worker_canary_aborts_total") == 1
