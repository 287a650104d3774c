"""The item table: item records published by file, by Publisher and by POST /items reach Redis
through the worker; an invalid record is dead-lettered with its reason and changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from freshrec.settings import Settings
from schemas.items import ItemRecord, decode_record, decode_takedown, items_hash_key, takedown_key
from schemas.recs import DATA_FIELD
from streams.dlq import read_dead_letters, replay
from streams.publisher import Publisher
from tests.serving.conftest import live_api
from tests.streams.worker import BASE_TS, WorkerProcess, send_raw


def post_json(url: str, body: Any) -> tuple[int, Any]:
    """Status and decoded answer of a JSON POST, for 2xx and error answers alike."""
    request = urllib.request.Request(
        url, orjson.dumps(body), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def table(client: Any, settings: Settings) -> dict[str, ItemRecord]:
    raw = client.hgetall(items_hash_key(settings.key_prefix))
    return {k.decode(): decode_record(v) for k, v in raw.items()}


def test_items_by_file_publisher_and_http_reach_the_item_table(
    start_worker: Callable[..., WorkerProcess],
    worker_settings: Settings,
    redis_client: Any,
    tmp_path: Path,
) -> None:
    settings = worker_settings
    worker = start_worker()
    catalog = tmp_path / "catalog.csv"
    catalog.write_text(
        "item_id,title,tags,available,year\n"
        "f1,First,drama|crime,,1995\n"
        "f2,Second,comedy,false,2001\n"
        "f3,Bad tag,a\x01b,,\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
    env.update(settings.as_env())
    done = subprocess.run(
        [sys.executable, "-m", "cli", "catalog", "publish", str(catalog)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr  # one line rejected, the rest sent
    assert "catalog.csv:4: rejected: tags[0]" in done.stderr, done.stderr
    assert "sent 2 item record(s), rejected 1" in done.stdout

    with Publisher(settings) as publisher:
        publisher.publish(ItemRecord("p1", BASE_TS, "By publisher", ("drama",)))
        report = publisher.publish_items([{"item_id": "p2", "ts": BASE_TS}, {"item_id": "bad id"}])
    assert report.sent == 1 and report.rejected[0][0] == 2

    with live_api(settings) as api:
        status, body = post_json(
            api.url + "/items",
            [{"item_id": "h1", "ts": BASE_TS, "title": "By HTTP"}, {"item_id": "h2"}],
        )
    assert status == 207, body
    results = body["results"]
    assert results[0] == {"index": 0, "status": "accepted", "item_id": "h1"}
    assert (results[1]["status"], results[1]["field"]) == ("rejected", "ts")

    wanted = {"f1", "f2", "p1", "p2", "h1"}
    worker.wait_for(lambda: set(table(redis_client, settings)) == wanted, 30, "the item table")
    items = table(redis_client, settings)
    assert items["f1"].tags == ("drama", "crime") and items["f1"].attrs == {"year": "1995"}
    assert items["f2"].available is False and items["h1"].title == "By HTTP"
    takedown = decode_takedown(redis_client.hget(takedown_key(settings.key_prefix), DATA_FIELD))
    assert takedown.unavailable == {"f2"}

    # Straight to the topic, as any Kafka client could: bad ones are dead-lettered with
    # their reason, an older record of an item never replaces a newer one.
    send_raw(
        settings,
        settings.topic_items,
        [
            (b"f1", orjson.dumps({"item_id": "f1", "ts": BASE_TS, "tags": "drama"})),
            (b"other", orjson.dumps({"item_id": "f3", "ts": BASE_TS})),
            (b"f1", orjson.dumps({"item_id": "f1", "ts": BASE_TS - 1, "title": "Older"})),
            # newer than the file's record, which the publish stamped with its own time
            (b"f2", orjson.dumps({"item_id": "f2", "ts": int(time.time() * 1000) + 60_000})),
        ],
    )

    def lettered() -> list[Any]:
        return [d for d in read_dead_letters(settings) if d.topic == settings.topic_items]

    worker.wait_for(lambda: len(lettered()) == 2, 30, "two dead letters")
    worker.wait_for(lambda: table(redis_client, settings)["f2"].available, 30, "f2 back")
    reasons = sorted(d.reason for d in lettered())
    assert reasons[0].startswith("key: must be the record's item_id"), reasons
    assert reasons[1].startswith("tags: "), reasons
    items = table(redis_client, settings)
    assert set(items) == wanted  # f3 was refused: no record of it
    assert items["f1"].title == "First"  # the older record did not win
    takedown = decode_takedown(redis_client.hget(takedown_key(settings.key_prefix), DATA_FIELD))
    assert takedown.unavailable == frozenset()

    # freshrec dlq replay republishes the record refused only for its key, keyed right.
    replayed = replay(settings, lettered())
    assert replayed.replayed == 1 and sum(replayed.still_invalid.values()) == 1
    worker.wait_for(lambda: "f3" in table(redis_client, settings), 30, "f3 replayed")

    # Redis loses its data (every key of this deployment, its epoch token included): the
    # worker notices at its next poll and rebuilds the item table from the items topic.
    send_raw(settings, settings.topic_items, [(b"f1", orjson.dumps(TAKEN_DOWN_F1))])
    worker.wait_for(lambda: not table(redis_client, settings)["f1"].available, 30, "f1 down")
    before = table(redis_client, settings)
    for key in redis_client.scan_iter(match=f"{settings.key_prefix}*"):
        redis_client.delete(key)
    worker.wait_for(lambda: table(redis_client, settings) == before, 30, "the table rebuilt")
    takedown = decode_takedown(redis_client.hget(takedown_key(settings.key_prefix), DATA_FIELD))
    assert takedown.unavailable == {"f1"}


#: A takedown of f1 newer than every record the test publishes before it.
TAKEN_DOWN_F1 = {"item_id": "f1", "ts": 4_000_000_000_000, "available": False}
