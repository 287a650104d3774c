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

from freshrec.settings import Settings
from models.interactions import InteractionLog
from models.retrain_cli import EXIT_PUBLISHED, EXIT_REFUSED
from models.store import ModelStore
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
    version = store.load(summary["version"])
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

    # a candidate the gate must refuse changes neither the pointer nor a single list
    code, _, err = run_retrain(settings, "--debug-permute-items")
    assert code == EXIT_REFUSED, err
    assert store.current() == version.version_id
    assert all_lists_on(version.version_id)
