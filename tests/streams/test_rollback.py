"""A rollback rolls every list back: the regression of issue 24.

Lists were ordered by (newest event time, model version id), and version ids
sort by creation time, so the refresh after ``freshrec models rollback OLD``
made lists that looked older than the ones they should replace and was
refused: every user who sent no new event, the popular list and ``/readyz``
stayed on the rolled-back version. Lists are now ordered by the pointer's
generation, which the rollback raises.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from freshrec.forgets import forgets_key
from freshrec.model_store import ModelStore
from freshrec.settings import Settings
from schemas.recs import decode, popular_key
from tests.api_process import api_process, get_json
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


def popular_model(client: redis.Redis, settings: Settings) -> str | None:
    raw = client.hget(popular_key(settings.key_prefix), "data")
    return None if raw is None else decode(raw).model_version


def models_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``freshrec models ...`` as ops run it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
    env |= settings.as_env()
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "models", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_rollback_from_b_to_a_moves_every_list_the_popular_list_and_readyz_to_a(
    worker_settings: Settings,
    start_worker: StartWorker,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    s = worker_settings
    data = synthetic()
    a = publish_model(s, data)
    users = [f"u{n}" for n in range(12)]
    worker = start_worker()
    publish(s, [watch(f"e{n}", u, f"item-{n}", BASE_TS + n) for n, u in enumerate(users)])

    def everything_on(version: str) -> bool:
        lists = [read_list(redis_client, s, u) for u in users]
        return (
            all(x is not None and x.model_version == version for x in lists)
            and popular_model(redis_client, s) == version
        )

    worker.wait_for(lambda: everything_on(a), 30, f"every list on {a}")
    b = publish_model(s, data, seed=7)
    assert b > a, "version ids sort by creation: the rollback goes to a smaller id"
    worker.wait_for(lambda: everything_on(b), 30, f"every list on {b}")
    stamps = {u: read_list(redis_client, s, u).updated_at for u in users}  # type: ignore[union-attr]

    with api_process(s, tmp_path / "api.log") as base:
        assert get_json(base + "/readyz")[1]["model_version"] == b
        done = models_cli(s, "rollback", a)
        assert done.returncode == 0, done.stderr
        assert ModelStore(s.model_store).pointer().move == "rollback"
        # nobody sends an event: the refresh alone must move every list back
        worker.wait_for(lambda: everything_on(a), 30, f"every list back on {a}")
        worker.wait_for(
            lambda: get_json(base + "/readyz")[1]["model_version"] == a, 30, "/readyz on a"
        )
    for user in users:  # the same events, only the model changed
        recs = read_list(redis_client, s, user)
        assert recs is not None and recs.updated_at == stamps[user], user


def test_a_forget_the_worker_applied_refuses_a_rollback_to_a_version_read_before_it(
    worker_settings: Settings,
    start_worker: StartWorker,
    redis_client: redis.Redis,
) -> None:
    """Issue 28, item 5: version a and b were trained before user `gone` was forgotten and
    may hold items only they had; once the worker has applied the forget, `freshrec
    models rollback` refuses both in one line (exit 1) unless --force, and a version
    trained after it is served freely. Break this catches: the worker's Redis write
    not recording the forget (streams/sink.py)."""
    s = worker_settings
    data = synthetic()
    a = publish_model(s, data)
    b = publish_model(s, data, seed=7)
    worker = start_worker()
    publish(
        s, [watch("e1", "gone", "only-gone-watched", BASE_TS), watch("e2", "u1", "i1", BASE_TS)]
    )
    worker.wait_for(lambda: read_list(redis_client, s, "gone") is not None, 30, "gone's list")
    assert not redis_client.exists(forgets_key(s.key_prefix))
    publish(s, [{"type": "forget", "event_id": "f1", "user_id": "gone", "ts": BASE_TS + 1}])
    worker.wait_for(lambda: read_list(redis_client, s, "gone") is None, 30, "gone forgotten")
    assert redis_client.exists(forgets_key(s.key_prefix)), "the worker recorded no forget"

    done = models_cli(s, "rollback", a)
    assert done.returncode == 1, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert f"{a} was trained on data read at" in done.stderr and "--force" in done.stderr
    assert ModelStore(s.model_store).current() == b
    done = models_cli(s, "rollback", a, "--force")
    assert done.returncode == 0 and "moved anyway (--force)" in done.stderr, done.stderr
    assert models_cli(s, "rollback", b).returncode == 1  # b is as old as the forget
    c = publish_model(s, data, seed=9)  # trained after it
    assert models_cli(s, "rollback", a, "--force").returncode == 0
    done = models_cli(s, "rollback", c)
    assert done.returncode == 0, done.stderr
    assert ModelStore(s.model_store).current() == c
