"""Chaos, round two (issue 28): a broker that comes back different, a stop during a retry,
and a black hole between the worker and the broker.

Each scenario prints one line of figures (``chaos NAME: ...``) and asserts that
nothing valid was lost or doubled, on real services: a broker of the test's own
that is killed and started again empty, redis-server stopped under the worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from freshrec.errors import DeliveryError
from freshrec.settings import Settings
from freshrec.stack import BrokerProcess, free_port
from schemas.state import changelog_topic
from streams.publisher import Publisher
from tests.conftest import Services
from tests.streams.test_chaos import Figures, reflected
from tests.streams.worker import (
    BASE_TS,
    StartWorker,
    WorkerProcess,
    changelog_states,
    committed_offsets,
    lists_caught_up,
    newest_offsets,
    publish,
    read_list,
    stream,
    watch,
)
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The broker's own partition count for a topic it creates by itself (Tansu: 4); the
#: tests configure another, so that a topic created behind freshrec's back shows.
BROKER_DEFAULT_PARTITIONS = 4


class Writer:
    """A site back-end that keeps publishing through a broker restart; failures are counted."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.failed = 0
        self.sent: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        n = 0
        with Publisher(self.settings.replace(publish_timeout_s=1.0)) as publisher:
            while not self._stop.wait(0.05):
                event = stream(1, 1, start=90_000 + n, prefix="w")[0]
                n += 1
                try:
                    publisher.publish(event)
                except DeliveryError:
                    self.failed += 1


def topic_partitions(settings: Settings, names: list[str]) -> dict[str, int]:
    listed = AdminClient({"bootstrap.servers": settings.bootstrap_servers}).list_topics(timeout=10)
    return {t: len(listed.topics[t].partitions) for t in names if t in listed.topics}


def test_chaos_broker_back_empty_under_writers_creates_no_topic_and_the_loss_is_counted(
    settings_on: Callable[..., Settings],
    own_broker: BrokerProcess,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """Regression (issue 28): a broker restarted empty got ``watch``, ``rate`` and the
    changelog created again with its default partition count by the producers still
    writing (the worker's own included); then 40 forgets wedged the worker for good. Now
    no client of freshrec creates a topic: the running worker exits 75, its restart
    creates the topics with the configured count, counts the offsets the broker lost
    (metric and log line), and 40 forgets and 200 events after it are all reflected."""
    s = settings_on(own_broker.bootstrap_servers, topic_partitions=2)
    ours = [s.topic_watch, s.topic_rate, s.topic_forget, changelog_topic(s.app_id)]
    worker = WorkerProcess(s, tmp_path / "w1.log").start()
    try:
        before = stream(10, 20)
        publish(s, before)
        worker.wait_for(lambda: lists_caught_up(s, redis_client, before), 60, "before")
        checks = worker.metric_total("freshrec_worker_progress_checks_total")
        worker.wait_for(  # a check after every event was read: the ledger holds them all
            lambda: worker.metric_total("freshrec_worker_progress_checks_total") >= checks + 2,
            30,
            "two progress checks",
        )
        with Writer(s) as writer:
            own_broker.kill()
            own_broker.start()
            restarted = time.monotonic()
            assert worker.proc is not None
            assert worker.proc.wait(60) == 75  # the watch saw its topics gone
            time.sleep(2.0)  # the writer goes on against the empty broker, not a wait
            created = topic_partitions(s, ours)
        assert created == {}, f"created behind freshrec's back: {created}"
        assert writer.failed > 0
        again = WorkerProcess(s, tmp_path / "w2.log").start()
        try:
            again.wait_for(
                lambda: again.metric_total("freshrec_worker_progress_checks_total") >= 1,
                60,
                "the restarted worker's first check",
            )
            lost = again.metric_total("freshrec_worker_broker_lost_offsets_total")
            forgets = [
                {"type": "forget", "event_id": f"f{n}", "user_id": f"u{n}", "ts": BASE_TS + 5000}
                for n in range(10)
            ] + [
                {"type": "forget", "event_id": f"g{n}", "user_id": f"x{n}", "ts": BASE_TS + 5000}
                for n in range(30)
            ]
            after = [
                watch(f"a{n}", f"v{n % 20}", f"item-{n % 96}", BASE_TS + 10_000 + n)
                for n in range(200)
            ]
            publish(s, forgets + after)
            again.wait_for(lambda: lists_caught_up(s, redis_client, after), 60, "after")
            again.wait_for(
                lambda: all(read_list(redis_client, s, f"u{n}") is None for n in range(10)),
                30,
                "the forgets",
            )
            resume_s = time.monotonic() - restarted
            states = changelog_states(s)
            forgotten = [states.get(str(f["user_id"])) for f in forgets]
            marked = sum(1 for st in forgotten if st is not None and st.is_marker)
            got, doubled = reflected(s, after)
            counts = topic_partitions(s, ours)
        finally:
            again.stop()
    finally:
        worker.stop()
    figures = Figures("broker-back-empty-under-writers", len(after), len(after), got, doubled, 0)
    figures.resume_s = resume_s
    figures.report()
    print(
        f"(lost offsets counted: {lost:.0f} of {len(before)} the broker dropped; forgets "
        f"reflected: {marked} of {len(forgets)}; publishes refused meanwhile: {writer.failed})"
    )
    assert lost == len(before)
    assert "the broker lost 200 offset(s)" in again.log_path.read_text()
    assert marked == len(forgets)
    assert counts == dict.fromkeys(ours, 2)
    assert figures.lost == 0 and figures.doubled == 0


def test_chaos_topics_with_another_partition_count_are_refused_in_one_line(
    settings_on: Callable[..., Settings], own_broker: BrokerProcess
) -> None:
    """Regression (issue 28): a broker back empty had ``watch`` created again by a producer
    that still auto-created topics (4 partitions beside 2): the worker must refuse, in one
    line naming each topic and its count, and leave every event on the topics (no commit)."""
    s = settings_on(own_broker.bootstrap_servers, topic_partitions=2)
    own_broker.kill()
    own_broker.start()
    foreign = Producer({"bootstrap.servers": s.bootstrap_servers, "allow.auto.create.topics": True})
    events = stream(10, 4)
    for e in events:
        foreign.produce(s.topic_watch, key=e["user_id"].encode(), value=orjson.dumps(e))
    assert foreign.flush(10) == 0
    assert topic_partitions(s, [s.topic_watch]) == {s.topic_watch: BROKER_DEFAULT_PARTITIONS}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "cli", "worker"],
        env={**env, **s.as_env()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    lines = done.stderr.strip().splitlines()
    print(
        f"\nchaos partition-mismatch-refused: exit={done.returncode} took_s={took:.1f} "
        f"events_left_on_topic={len(events)} line={lines[-1] if lines else ''!r}"
    )
    assert done.returncode == 1
    assert len(lines) == 1, done.stderr
    assert f"{s.topic_watch} has {BROKER_DEFAULT_PARTITIONS}" in lines[0]
    assert "FRESHREC_TOPIC_PARTITIONS=2" in lines[0]
    partitions = [(s.topic_watch, p) for p in range(BROKER_DEFAULT_PARTITIONS)]
    assert all(o < 0 for o in committed_offsets(s, partitions).values())


def test_chaos_sigterm_while_a_batch_waits_out_a_retry_exits_within_the_grace_period(
    worker_settings: Settings,
    start_worker: StartWorker,
    worker_with_lists: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
    services: Services,
    restart_redis: Callable[[], None],
) -> None:
    """Regression (issue 28): SIGTERM took 99-132 s (the pod's grace period is 60 s) while
    a batch waited out its retry: the stop waited for its acks. Now the stop waits at most
    FRESHREC_WORKER_STOP_WAIT_S, commits nothing of the unwritten batch, and the next
    worker writes it."""
    s = worker_settings.replace(retry_deadline_s=300.0)
    before = stream(20, 2)
    worker = worker_with_lists(s, before)
    worker.wait_for(
        lambda: all(o >= 0 for o in committed_offsets(s, newest_offsets(s)).values()),
        10,
        "the first commits",
    )
    assert services.redis is not None
    services.redis.stop()
    try:
        during = stream(20, 2, start=len(before))
        publish(s, during)
        worker.wait_for(
            lambda: worker.metric_total("freshrec_worker_retries_total") >= 3,
            30,
            "the worker retrying Redis",
        )
        committed = committed_offsets(s, newest_offsets(s))
        assert worker.proc is not None
        stopping = time.monotonic()
        worker.proc.terminate()
        code = worker.proc.wait(60)
        stop_s = time.monotonic() - stopping
        after_stop = committed_offsets(s, committed)
    finally:
        restart_redis()
    assert after_stop == committed, "offsets of an unwritten batch were committed"
    again = start_worker(s)
    events = before + during
    again.wait_for(lambda: lists_caught_up(s, redis_client, events), 60, "lists after")
    got, doubled = reflected(s, events)
    figures = Figures("sigterm-during-retry", len(events), len(events), got, doubled, 0)
    figures.report()
    print(f"(stop took {stop_s:.1f}s, exit {code}; grace period 60s)")
    assert stop_s < 30.0, stop_s
    assert figures.lost == 0 and figures.doubled == 0


#: How long the black hole lasts: the 30 s the issue's probe found the worker silent for.
HOLE_S = 30.0


def scrape(worker: WorkerProcess, path: str) -> tuple[int, bytes, float]:
    """Status, body and seconds of one GET of the worker's web server (1 s at most)."""
    url = f"http://127.0.0.1:{worker.settings.worker_web_port}{path}"
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status, response.read(), time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), time.monotonic() - started


def gauge(body: bytes, name: str) -> float:
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics")


def test_chaos_a_30s_black_hole_to_the_broker_leaves_metrics_and_probes_answering(
    settings_on: Callable[..., Settings], redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Regression (issue 28): during a black hole between the worker and the broker no scrape
    of /metrics was answered (the lag was measured by a broker call with no timeout at the
    scrape), and the liveness probe used /metrics. Now every scrape answers within 1 s, the
    lag's age and the seconds since progress show the stall, /livez stays 200 while /readyz
    turns 503, and after the heal nothing is lost or doubled."""
    proxy_port = free_port()
    broker = BrokerProcess(
        log_path=tmp_path / "own-broker.log", advertised=f"127.0.0.1:{proxy_port}"
    )
    broker.start()
    try:
        with TcpProxy(("127.0.0.1", broker.port), port=proxy_port) as proxy:
            s = settings_on(proxy.address)
            worker = WorkerProcess(s, tmp_path / "w1.log").start()
            try:
                before = stream(10, 5)
                publish(s, before)
                worker.wait_for(lambda: lists_caught_up(s, redis_client, before), 60, "before")
                worker.wait_for(lambda: scrape(worker, "/readyz")[0] == 200, 30, "the worker ready")
                proxy.black_hole()
                hole_s, scrapes, slowest, unanswered = HOLE_S, 0, 0.0, 0
                statuses: dict[str, set[int]] = {"/livez": set(), "/readyz": set()}
                age = stalled = 0.0
                started = time.monotonic()
                while time.monotonic() - started < hole_s:
                    try:
                        _, body, took = scrape(worker, "/metrics")
                    except OSError:
                        unanswered += 1
                        continue
                    scrapes += 1
                    slowest = max(slowest, took)
                    age = gauge(body, "freshrec_worker_consumer_lag_age_seconds")
                    stalled = gauge(body, "freshrec_worker_seconds_since_progress")
                    for probe in statuses:
                        statuses[probe].add(scrape(worker, probe)[0])
                    time.sleep(0.5)  # a scrape every half second: the load, not a wait
                proxy.heal()
                after = stream(10, 5, start=1000, prefix="a")
                publish(s, after)
                events = before + after
                worker.wait_for(lambda: lists_caught_up(s, redis_client, events), 90, "after")
                got, doubled = reflected(s, events)
            finally:
                worker.stop()
    finally:
        broker.stop()
    figures = Figures(f"black-hole-{HOLE_S:.0f}s", len(events), len(events), got, doubled, 0)
    figures.report()
    print(
        f"(scrapes answered {scrapes}, unanswered {unanswered}, slowest {slowest:.2f}s; "
        f"lag age {age:.0f}s, seconds since progress {stalled:.0f}s at the end of the hole; "
        f"/livez {sorted(statuses['/livez'])}, /readyz {sorted(statuses['/readyz'])})"
    )
    assert unanswered == 0 and slowest < 1.0
    assert age > HOLE_S - 5 and stalled > HOLE_S - 5
    assert statuses["/livez"] == {200} and 503 in statuses["/readyz"]
    assert figures.lost == 0 and figures.doubled == 0
