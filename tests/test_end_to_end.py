"""The first end-to-end slice: an event published to the broker changes the list the API serves.

Everything runs as a user would run it: the broker and redis-server from
``tests/conftest.py``, a model published to the store, ``freshrec worker`` and
``freshrec api`` as processes, events sent with the publisher, the list read
over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from freshrec.settings import Settings
from tests.api_process import api_process, get_json, quick_processes
from tests.streams.worker import BASE_TS, WorkerProcess, publish, publish_model, synthetic, watch

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def e2e_settings(settings: Settings, topics: list[str]) -> Settings:
    return quick_processes(settings)


@pytest.fixture
def api(e2e_settings: Settings, tmp_path: Path) -> Iterator[str]:
    with api_process(e2e_settings, tmp_path / "api.log") as base:
        yield base


def test_published_watch_changes_the_list_the_api_serves(
    e2e_settings: Settings, api: str, tmp_path: Path
) -> None:
    data = synthetic()
    version = publish_model(e2e_settings, data)
    worker = WorkerProcess(e2e_settings, tmp_path / "worker.log").start()
    try:
        status, before = get_json(f"{api}/recs/alice?k=10")
        assert status == 200 and before["source"] == "popular"

        publish(e2e_settings, [watch("e2e-1", "alice", "item-3", BASE_TS + 1)])

        def personal() -> bool:
            return get_json(f"{api}/recs/alice?k=10")[1]["source"] == "personal"

        worker.wait_for(personal, 60, "alice's personal list from the API")
        status, body = get_json(f"{api}/recs/alice?k=10")
        assert status == 200
        assert body["user"] == "alice"
        assert body["model_version"] == version
        assert body["updated_at"] == BASE_TS + 1
        items = [entry["item"] for entry in body["items"]]
        assert len(items) == 10 and "item-3" not in items
        neighbours = set(data.neighbours("item-3"))
        assert sum(item in neighbours for item in items) >= 8, items
        assert all(entry.get("because") == "item-3" for entry in body["items"])
    finally:
        worker.kill()  # done with it: an orderly stop costs a second or two
