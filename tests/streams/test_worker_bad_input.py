"""Bad input never stops the worker: every bad message is dead-lettered with its reason.

Valid events around them are all reflected, and ``freshrec dlq list|replay``
read the dead letters back (once each) and republish the ones fixed since.
"""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
import redis

from freshrec.settings import Settings
from schemas.dead_letters import dead_letters_key, decode_tally
from schemas.events import EventType
from schemas.wire import topics_by_type
from streams.dead_letter import count_by_reason
from streams.dlq import read_dead_letters, replay
from tests.streams.worker import (
    BASE_TS,
    StartWorker,
    changelog_states,
    read_list,
    send_raw,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def good_watch(n: int, user: str = "mallory", **changes: object) -> dict:
    event = {
        "type": "watch",
        "event_id": f"bad{n}",
        "user_id": user,
        "item_id": f"item-{n}",
        "watched_s": 100.0,
        "ts": BASE_TS + n,
    }
    event.update(changes)
    return event


def drop(event: dict, field: str) -> dict:
    return {k: v for k, v in event.items() if k != field}


def j(event: dict) -> bytes:
    return orjson.dumps(event)


#: (topic kind, key, value, expected field, expected rule): 26 distinct kinds of bad message.
BAD: list[tuple[EventType, bytes | None, bytes | None, str, str]] = [
    ("watch", b"mallory", b"", "payload", "empty"),
    ("watch", b"mallory", None, "payload", "empty"),
    ("watch", b"mallory", b"not json at all", "payload", "json"),
    ("watch", b"mallory", b'{"type": "watch", "event_id": ', "payload", "json"),
    ("watch", b"mallory", b"\xff\xfe\x00garbage", "payload", "utf8"),
    ("watch", b"mallory", b"[1, 2, 3]", "payload", "type"),
    ("watch", b"mallory", b'"just a string"', "payload", "type"),
    ("watch", b"mallory", j(good_watch(1)).replace(b"100.0", b"NaN"), "payload", "json"),
    ("watch", b"mallory", j(drop(good_watch(2), "event_id")), "event_id", "required"),
    ("watch", b"mallory", j(drop(good_watch(3), "user_id")), "user_id", "required"),
    ("watch", b"mallory", j(drop(good_watch(4), "item_id")), "item_id", "required"),
    ("watch", b"mallory", j(drop(good_watch(5), "ts")), "ts", "required"),
    ("watch", b"mallory", j(drop(good_watch(6), "watched_s")), "watched_s", "required"),
    ("watch", b"mallory", j(good_watch(7, type="rate")), "type", "const"),
    ("watch", b"mallory", j(drop(good_watch(8), "type")), "type", "required"),
    ("watch", b"mallory", j(good_watch(9, extra=1)), "extra", "additionalProperties"),
    ("watch", b"mallory", j(good_watch(10, watched_s=-5)), "watched_s", "minimum"),
    ("watch", b"mallory", j(good_watch(11, watched_s="long")), "watched_s", "type"),
    ("watch", b"mallory", j(good_watch(12, ts=12)), "ts", "minimum"),
    ("watch", b"mallory", j(good_watch(13, ts="yesterday")), "ts", "type"),
    ("watch", b"mallory", j(good_watch(14, item_id="has space")), "item_id", "pattern"),
    ("watch", b"mallory", j(good_watch(15, duration_s=0)), "duration_s", "exclusiveMinimum"),
    ("watch", b"mallory", j(good_watch(16, item_id="x" * 5000)), "payload", "maxBytes"),
    (
        "rate",
        b"mallory",
        j(
            {
                "type": "rate",
                "event_id": "bad17",
                "user_id": "mallory",
                "item_id": "item-1",
                "rating": 7,
                "ts": BASE_TS,
            }
        ),
        "rating",
        "enum",
    ),
    (
        "forget",
        b"mallory",
        j({"type": "forget", "event_id": "bad18", "ts": BASE_TS}),
        "user_id",
        "required",
    ),
    ("watch", b"someone-else", j(good_watch(19)), "key", "partitioning"),
    ("watch", None, j(good_watch(20)), "key", "partitioning"),
]


def test_every_bad_message_is_dead_lettered_with_its_reason_and_valid_ones_all_count(
    worker_settings: Settings, start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    s = worker_settings
    topic = topics_by_type(s)
    worker = start_worker()
    valid = [good_watch(100 + n, user=f"v{n % 5}") for n in range(30)]
    messages: list[tuple[str, bytes | None, bytes | None]] = []
    for n, (kind, key, value, _, _) in enumerate(BAD):
        messages.append((topic[kind], key, value))
        event = valid[n] if n < len(valid) else None
        if event is not None:
            messages.append((s.topic_watch, event["user_id"].encode(), j(event)))
    messages += [(s.topic_watch, e["user_id"].encode(), j(e)) for e in valid[len(BAD) :]]
    for name in {t for t, _, _ in messages}:
        send_raw(s, name, [(k, v) for t, k, v in messages if t == name])

    worker.wait_for(
        lambda: worker.metric_total("freshrec_worker_events_consumed_total") == len(messages),
        60,
        "every message consumed",
    )
    assert worker.metric_total("freshrec_worker_events_invalid_total") == len(BAD)
    assert worker.metric_total("freshrec_worker_events_valid_total") == len(valid)
    assert worker.alive

    # A batch is counted as it is consumed, before its dead letters are acknowledged.
    worker.wait_for(lambda: len(read_dead_letters(s)) >= len(BAD), 30, "every dead letter")
    letters = read_dead_letters(s)
    assert len(letters) == len(BAD)
    assert sorted((x.topic, x.field, x.rule) for x in letters) == sorted(
        (topic[kind], field, rule) for kind, _, _, field, rule in BAD
    )
    # the tally by reason the ops page reads (issue 24, item 5), added with the batches
    # (once each: the first batch's pipeline meets a server without the list script,
    # and its resend must not add them again)
    worker.wait_for(
        lambda: (
            sum(decode_tally(redis_client.hgetall(dead_letters_key(s.key_prefix))).values())
            == len(BAD)
        ),
        30,
        "the dead-letter tally",
    )
    assert decode_tally(redis_client.hgetall(dead_letters_key(s.key_prefix))) == dict(
        count_by_reason(letters)
    )
    originals = {(key, value or b"") for _, key, value, _, _ in BAD}
    for letter in letters:
        assert (letter.key, letter.value) in originals  # the original bytes, untouched
        assert letter.reason.startswith(f"{letter.field}: ")

    states = changelog_states(s)
    for user in (f"v{u}" for u in range(5)):
        expected = sorted(e["item_id"] for e in valid if e["user_id"] == user)
        state = states[user]
        assert state is not None and sorted(i.item_id for i in state.history) == expected
        recs = read_list(redis_client, s, user)
        assert recs is not None
        assert recs.updated_at == max(e["ts"] for e in valid if e["user_id"] == user)
    assert "mallory" not in states


def test_dlq_cli_lists_counts_and_replays_the_fixed_ones(
    worker_settings: Settings, start_worker: StartWorker, redis_client: redis.Redis
) -> None:
    s = worker_settings
    worker = start_worker()
    wrong_key = good_watch(1, user="trent")
    send_raw(
        s,
        s.topic_watch,
        [
            (b"trent", b"not json"),
            (b"other", j(wrong_key)),  # valid but keyed wrong: replay re-keys it
            (b"trent", j(good_watch(2, user="trent", watched_s=-1))),
        ],
    )
    worker.wait_for(
        lambda: worker.metric_total("freshrec_worker_events_invalid_total") == 3,
        30,
        "three dead letters",
    )

    env = {**os.environ, **s.as_env()}
    listing = subprocess.run(
        [sys.executable, "-m", "cli", "dlq", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    assert "3 dead letter(s)" in listing.stdout
    for reason in ("payload/json", "key/partitioning", "watched_s/minimum"):
        assert f"1  {reason}" in listing.stdout

    assert replay(s, read_dead_letters(s), dry_run=True).replayed == 1
    again = subprocess.run(
        [sys.executable, "-m", "cli", "dlq", "replay"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1  # two are still invalid
    assert "replayed 1 of 3" in again.stdout
    assert "1  still invalid: payload/json" in again.stdout
    worker.wait_for(
        lambda: read_list(redis_client, s, "trent") is not None, 30, "the replayed event's list"
    )
    recs = read_list(redis_client, s, "trent")
    assert recs is not None and recs.updated_at == wrong_key["ts"]
