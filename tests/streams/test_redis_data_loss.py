"""A Redis that restarts empty: the workers notice at their next poll and write their lists again.

Two workers share one Redis key prefix, as the workers of one deployment do,
each holding its own users (here: their own topics and consumer groups, which
is what partitions are to the lists). Both must repair their own users' lists,
although the first to notice writes the shared keys back before the other looks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from freshrec.settings import Settings
from freshrec.stack import free_port
from schemas.recs import epoch_key, popular_key
from streams.topics import ensure_topics
from tests.conftest import Services
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


def second_worker_settings(s: Settings, tmp_path: Path) -> Settings:
    """Another worker of the same deployment: same Redis prefix and model store, own users."""
    b = s.replace(
        app_id=f"{s.app_id}-b",
        topic_watch=f"{s.topic_watch}-b",
        topic_rate=f"{s.topic_rate}-b",
        topic_forget=f"{s.topic_forget}-b",
        topic_dead_letter=f"{s.topic_dead_letter}-b",
        worker_web_port=free_port(),
        data_dir=str(tmp_path / "worker-b"),
    )
    ensure_topics(b)
    return b


def test_redis_restarted_empty_gets_the_popular_list_and_every_workers_lists_back(
    worker_settings: Settings,
    start_worker: StartWorker,
    redis_client: redis.Redis,
    services: Services,
    restart_redis: Callable[[], None],
    tmp_path: Path,
) -> None:
    a = worker_settings
    b = second_worker_settings(a, tmp_path)
    version = publish_model(a, synthetic())
    workers = {a: start_worker(a), b: start_worker(b)}
    newest: dict[str, int] = {}
    for n, (settings, prefix) in enumerate([(a, "a"), (b, "b")] * 10):
        user = f"{prefix}{n // 2}"
        publish(settings, [watch(f"e{n}", user, f"item-{n}", BASE_TS + n)])
        newest[user] = BASE_TS + n

    def all_back() -> bool:
        if not redis_client.exists(popular_key(a.key_prefix)):
            return False
        for user, ts in newest.items():
            recs = read_list(redis_client, a, user)
            if recs is None or (recs.model_version, recs.updated_at) != (version, ts):
                return False
        return True

    workers[a].wait_for(all_back, 60, "the lists of both workers", also=[workers[b]])
    epoch = redis_client.get(epoch_key(a.key_prefix))
    assert epoch is not None

    assert services.redis is not None
    services.redis.stop()
    restart_redis()  # persistence is off: an empty Redis

    workers[a].wait_for(
        all_back, 30, "the popular list and both workers' lists again", also=[workers[b]]
    )
    assert redis_client.get(epoch_key(a.key_prefix)) not in (None, epoch)
    for worker in workers.values():
        assert worker.alive
        assert worker.metric_total("freshrec_worker_redis_data_lost_total") == 1
        assert "Redis lost its data" in worker.log_path.read_text()
