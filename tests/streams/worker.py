"""Test helpers for the streaming worker: run it as a real process, feed it, read its results.

The worker under test is always a separate process (``python -m cli worker``)
configured through ``Settings.as_env()``, so that SIGKILL means what it means in
production. Waits are conditions with deadlines; each one also fails
fast, with the worker's log, when the worker died.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis
from prometheus_client.parser import text_string_to_metric_families

from freshrec.model_store import ModelStore
from freshrec.settings import Settings
from freshrec.stack import wait_until
from models.als import ALSConfig
from models.interactions import InteractionLog
from models.synthetic import SyntheticData, generate
from models.weighting import DEFAULT_WEIGHTING
from retrain.publish import train_and_publish
from schemas.recs import RecList, compact_version, decode, decode_items, items_key, user_key
from schemas.state import UserState, changelog_topic
from schemas.state import decode as decode_state
from schemas.wire import topics_by_type
from streams.dlq import read_topic
from streams.publisher import Publisher

#: Event timestamps used by the tests (2025-01-01), inside the schema's bounds.
BASE_TS = 1_735_689_600_000


class WorkerProcess:
    """One ``freshrec worker`` child process and its log."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
        env.update(self.settings.as_env())
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "worker"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is flushed or committed. Also how a test
        discards a worker it is done with: the orderly stop takes a second or two."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 20.0) -> None:
        if not self.alive:
            return
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_for(
        self,
        check: Callable[[], bool],
        timeout_s: float,
        what: str,
        also: Sequence[WorkerProcess] = (),
    ) -> None:
        """Wait for ``check``; fail at once, with the log, if this worker (or one of
        ``also``) died meanwhile."""
        watched = [self, *also]

        def guarded() -> bool:
            if not all(w.alive for w in watched):
                return True
            return check()

        wait_until(guarded, timeout_s, what, interval_s=0.1)
        for worker in watched:
            if not worker.alive:
                raise AssertionError(
                    f"{worker.log_path.name} exited while waiting for {what}:\n{worker.log_tail()}"
                )

    def metrics(self) -> dict[str, float]:
        """Every sample of ``/metrics`` as ``name{labels}`` -> value."""
        url = f"http://127.0.0.1:{self.settings.worker_web_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}"] = sample.value
        return out

    def metric_total(self, prefix: str) -> float:
        """Sum of every sample whose name starts with ``prefix`` (all label values)."""
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix + "{"))


#: The ``start_worker`` fixture (tests/streams/conftest.py): starts a worker, optionally
#: with other settings; every worker it started is stopped at the end of the test.
StartWorker = Callable[..., WorkerProcess]


def watch(event_id: str, user: str, item: str, ts: int, watched_s: float = 1500.0) -> dict:
    return {
        "type": "watch",
        "event_id": event_id,
        "user_id": user,
        "item_id": item,
        "watched_s": watched_s,
        "duration_s": 1800.0,
        "ts": ts,
    }


def stream(users: int, per_user: int, start: int = 0, prefix: str = "e") -> list[dict]:
    """``users * per_user`` watch events, users interleaved, every ``ts`` distinct."""
    return [
        watch(f"{prefix}{n}", f"u{n % users}", f"item-{(n // users) % 96}", BASE_TS + n)
        for n in range(start, start + users * per_user)
    ]


def rate(event_id: str, user: str, item: str, ts: int, rating: float = 5.0) -> dict:
    return {
        "type": "rate",
        "event_id": event_id,
        "user_id": user,
        "item_id": item,
        "rating": rating,
        "ts": ts,
    }


def publish(settings: Settings, events: Iterable[dict | bytes]) -> None:
    with Publisher(settings) as publisher:
        report = publisher.publish_many(events)
    assert not report.rejected, report.rejected


def send_raw(settings: Settings, topic: str, messages: Sequence[tuple[bytes | None, Any]]) -> None:
    """Produce raw (key, value) messages, bypassing validation: how bad input gets in."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 5})
    for key, value in messages:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0


def read_list(client: Any, settings: Settings, user: str) -> RecList | None:
    """``user``'s stored list, in either format, as the API reads it (a compact list with
    its model's item table); ``client`` is a Redis or a RedisCluster client.

    None while there is no list, and while a compact list's item table is missing
    (a Redis that lost its data, until the worker writes the table again): the API
    cannot serve such a list either.
    """
    raw = client.hget(user_key(settings.key_prefix, user), "data")
    if raw is None:
        return None
    version = compact_version(raw)
    if version is None:
        return decode(raw)
    table = client.get(items_key(settings.key_prefix, version))
    return None if table is None else decode(raw, decode_items(table), user)


def list_updated_at(client: redis.Redis, settings: Settings, user: str) -> int | None:
    """The newest event time in ``user``'s stored list; None while there is no list."""
    recs = read_list(client, settings, user)
    return None if recs is None else recs.updated_at


def list_model(client: redis.Redis, settings: Settings, user: str) -> str | None:
    """The model version of ``user``'s stored list; None while there is no list."""
    recs = read_list(client, settings, user)
    return None if recs is None else recs.model_version


def lists_caught_up(settings: Settings, client: redis.Redis, events: Sequence[dict]) -> bool:
    """Whether every user's list in Redis includes that user's newest event of ``events``."""
    newest: dict[str, int] = {}
    for e in events:
        newest[e["user_id"]] = max(newest.get(e["user_id"], 0), e["ts"])
    for user, ts in newest.items():
        recs = read_list(client, settings, user)
        if recs is None or recs.updated_at != ts:
            return False
    return True


def synthetic(seed: int = 0) -> SyntheticData:
    """A small log with 8 planted item clusters: enough for ALS to learn them in a second."""
    return generate(n_users=400, n_items=96, n_interactions=12_000, factors=8, seed=seed)


def publish_model(
    settings: Settings,
    data: SyntheticData | InteractionLog,
    seed: int = 42,
    make_current: bool = True,
) -> str:
    """Train on ``data`` (or a log of its own), store the version and, with
    ``make_current``, move the current pointer; returns its id."""
    cfg = ALSConfig(factors=8, iterations=12, num_threads=1, seed=seed, use_gpu=False)
    outcome = train_and_publish(
        ModelStore(settings.model_store),
        data.log if isinstance(data, SyntheticData) else data,
        cfg,
        DEFAULT_WEIGHTING,
        popular_length=settings.list_length,
        snapshot={"source": "test"},
        make_current=make_current,
    )
    return outcome.version.version_id


def newest_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    """The newest offset of every partition of the consumed topics that holds records now."""
    newest: dict[tuple[str, int], int] = {}
    for topic in topics_by_type(settings).values():
        for msg in read_topic(settings, topic):
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None  # a consumed record has both
            newest[(topic, partition)] = max(newest.get((topic, partition), -1), offset)
    return newest


def committed_offsets(
    settings: Settings, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The worker group's committed offset of each of ``partitions`` (negative: none)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": settings.bootstrap_servers, "group.id": settings.app_id}
    )
    try:
        committed = consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout=5)
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): tp.offset for tp in committed}


def commits_behind(settings: Settings, offsets: dict[tuple[str, int], int]) -> dict[str, int]:
    """For each partition whose commit is not past its offset in ``offsets``: how far behind."""
    committed = committed_offsets(settings, offsets)
    return {
        f"{t}[{p}]": offsets[(t, p)] + 1 - max(committed[(t, p)], 0)
        for t, p in offsets
        if committed[(t, p)] <= offsets[(t, p)]
    }


def committed_past(settings: Settings, offsets: dict[tuple[str, int], int]) -> bool:
    """Whether the worker group committed past every offset in ``offsets``.

    A worker stopped once this holds redelivers none of those records to the
    next one: how a test gets a clean handover between two workers.
    """
    return not commits_behind(settings, offsets)


def changelog_states(settings: Settings, timeout_s: float = 30.0) -> dict[str, UserState | None]:
    """The worker's durable state as the changelog holds it: the last record per user.

    This is what a restarted worker recovers, so it is what "reflected in the
    histories" means from outside the worker process.
    """
    topic = changelog_topic(settings.app_id)
    states: dict[str, UserState | None] = {}
    for msg in read_topic(settings, topic, timeout_s):
        key, value = msg.key(), msg.value()
        assert key is not None, "a changelog record is keyed by user"
        states[key.decode()] = None if value is None else decode_state(value)
    return states


def histories(log: InteractionLog, per_user: int) -> list[dict]:
    """Each user's newest ``per_user`` interactions of ``log`` as watch events, timed from
    :data:`BASE_TS` (a second apart): what a worker holds before a test's own events."""
    events = []
    for u, user in enumerate(log.users.ids):
        rows = np.flatnonzero(log.user == u)[-per_user:]
        for n, row in enumerate(rows.tolist()):
            item = log.items.ids[int(log.item[row])]
            events.append(watch(f"h-{user}-{n}", user, item, BASE_TS + n * 1000))
    return events


def lists_hold(client: redis.Redis, settings: Settings, users: Sequence[str], item: str) -> float:
    """Share of ``users`` whose stored list holds ``item``."""
    held = 0
    for user in users:
        recs = read_list(client, settings, user)
        held += recs is not None and any(i.item == item for i in recs.items)
    return held / len(users)
