"""``POST /events`` end to end: the valid events of a mixed batch reach the worker and change
the lists the API serves; the invalid ones reach no topic, not even the dead-letter one."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from freshrec.stack import wait_until
from tests.serving.conftest import RunningSystem
from tests.serving.test_events import topic_messages
from tests.streams.worker import rate, watch

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def call(url: str, data: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_valid_events_of_a_mixed_batch_change_the_lists_invalid_ones_reach_no_topic(
    running_system: RunningSystem,
) -> None:
    base, settings, items = running_system.api.url, running_system.settings, running_system.items
    now = int(time.time() * 1000)
    batch = [
        watch("w1", "mallory", items[0], now),
        watch("w2", "mallory", items[8], now + 1),
        rate("w3", "mallory", items[16], now + 2, rating=11),  # invalid rating
        watch("w4", "nina", items[1], now + 3),
        {"type": "watch", "event_id": "w5", "user_id": "nina"},  # fields missing
    ]
    status, body = call(f"{base}/events", json.dumps(batch).encode())
    assert status == 207, body
    assert [r["status"] for r in body["results"]] == [
        "accepted",
        "accepted",
        "rejected",
        "accepted",
        "rejected",
    ]

    def personal(user: str, newest: int) -> bool:
        code, recs = call(f"{base}/recs/{user}?k=20")
        return code == 200 and recs["source"] == "personal" and recs["updated_at"] == newest

    wait_until(lambda: personal("mallory", now + 1) and personal("nina", now + 3), 30, "lists")
    _, mallory = call(f"{base}/recs/mallory?k=20")
    shown = {i["item"] for i in mallory["items"]}
    assert items[0] not in shown and items[8] not in shown  # watched items are masked

    messages = topic_messages(settings)
    produced = sorted(v["event_id"] for topic in messages for _, v in messages[topic])
    assert produced == ["w1", "w2", "w4"]
    assert messages[settings.topic_dead_letter] == []
