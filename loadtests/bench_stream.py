"""Benchmark the streaming worker: sustained events/s and freshness, beside a bare Faust agent.

Everything runs on loopback and is started here (``freshrec.stack``): a broker,
a redis-server, the worker (``freshrec worker``) and the baseline, a Faust app
whose one agent only counts events (this file, run with ``--bare``). Both get
the same backlog of ``--events`` events, published before they start, and both
are timed the same way: this script polls their event count and takes the time
from the first poll that sees an event to the first that sees them all, so
start-up and group joins are left out of both.

Two mixes of users (:data:`MIXES`), each its own backlog of ``--events``
events, timed for the worker and the bare agent alike: the worst case,
``uniform`` (users drawn alike from ``--users``, so nearly every event of a
batch is a different user), gives ``ratio``; the realistic ``zipf`` mix (user
activity Zipf-distributed, exponent 1.1: about 430 distinct users per 1,000
events at 20k users, so a batch holds each hot user several times) gives
``zipf_ratio``. Goals: ``ratio`` at least 0.45, ``zipf_ratio`` at least 0.5.

Freshness needs a stream that the worker keeps up with, not a backlog: a
phase after the worker's uniform backlog publishes ``--rate`` events/s (by
default half the worker's measured throughput) for ``--seconds`` seconds
(after one unmeasured second that connects the producer), each stamped with
the time it was produced, and reads the worker's
``freshrec_worker_freshness_seconds`` histogram (event timestamp to the Redis
write of the list that includes it) before and after, interpolating quantiles
within buckets the way Prometheus' ``histogram_quantile`` does (goal: p99 at
most 100 ms).

Issue 24's two prices are measured against a plain worker run again just
before and just after them over the same uniform backlog
(``plain_events_per_s``, the mean of the two, each in a consumer group of its
own; the first worker's figure is minutes older, and the load drifts). The online
metrics' bookkeeping (``streams.online``: each list's top kept in its user's
state, each event compared with it, the counts added to Redis):
``online_metrics_cost`` is ``1 - plain_events_per_s /
online_off_events_per_s``, the latter a worker with ``FRESHREC_ONLINE_TOP_K=0``
(goal: at most 0.05; noise on a loaded machine moves it either way). A canary
release makes the worker hold two models and rank each batch in two groups:
``canary_ratio`` is the events/s of a worker while a second version serves 20%
of the users over ``plain_events_per_s`` (goal: at least 0.8); the canary is
aborted after it. ``--skip-online`` and ``--skip-canary`` leave them out.

New items (issue 23): ``new_item_traffic_ratio`` is the events/s of a worker on
a backlog like the uniform one but with 10% of its events on items the model
does not know, over a plain worker's on the uniform backlog just before and
after (goal: at least 0.85); ``new_item_visible_p50_ms`` and ``_p99_ms`` time,
over 20 new items, the event that makes an item recommendable to a taste's
users (the last of 40 users' events on it, sent at once: at the bench's scale
ALS puts an item with 3 users far below every list's end) to the first list
of such a user holding it (goal: p99 at most 2,000 ms). ``--only-new-items`` runs this phase alone.

Scaling out: the last phase runs two bare agents, then two workers, each pair
in one consumer group of its own over the uniform backlog (the topics'
partitions split between the two processes), timed the same way over the sum
of the two counts, and one worker once more after them (``events_per_s_after``).
``scale_ratio`` is two workers' events/s over one worker's (the mean of the
runs before and after the pair, as the shared machine's load drifts), and
``two_bare_scale_ratio`` the same for the bare agent: on a machine whose
cores also run the broker and redis-server, the bare pair is the ceiling the
worker pair can reach.

Catalogue sizes: ``--items`` (default 2,000 and 27,000, a real movie
service's). The first size runs every phase above on a stack of its own; each
further one, on a fresh stack with a model trained on that many items, runs
the uniform, freshness and Zipf phases, its keys suffixed with the size
(``ratio_27k``, ``zipf_ratio_27k``, ``freshness_p99_ms_27k``, ...).

The worker's memory: after the first size's phases, a worker of its own reads
``--state-users`` distinct users' first events (one each; default 200,000,
what this two-core machine runs in a few minutes: a million would take a
quarter of an hour of its time), and ``bytes_per_held_user`` is the growth of
its resident set (``VmRSS``) over them divided by the count
(:func:`held_user_bytes`).

The model is trained here on synthetic data (64 factors) so that
the fold-in does real work. The last line of standard output is one JSON object:
``{"bench": "stream", "events_per_s", "bare_events_per_s", "ratio",
"freshness_p50_ms", "freshness_p99_ms", "zipf_events_per_s",
"zipf_bare_events_per_s", "zipf_ratio", "two_workers_events_per_s", "scale_ratio",
"two_bare_events_per_s", "two_bare_scale_ratio", "plain_events_per_s",
"online_off_events_per_s", "online_metrics_cost", "canary_events_per_s",
"canary_ratio", "bytes_per_held_user", "ratio_27k", "zipf_ratio_27k",
"freshness_p99_ms_27k", "new_item_traffic_ratio", "new_item_visible_p50_ms",
"new_item_visible_p99_ms", ...}``
(``--skip-zipf``, ``--skip-scale``, ``--skip-online``, ``--skip-canary`` and
``--skip-new-items``
leave their phases and keys out); the raw series the plots are
drawn from go to ``loadtests/results/stream.series.json``. ``profile_worker.py``
reuses the stack and the backlogs (:class:`Stack`, :func:`produce_backlog`).

Run: ``python loadtests/bench_stream.py`` (six to ten minutes on two cores, by their load;
``--items 2000 --state-users 0`` is the older two-to-three-minute run).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parents[1]
#: The raw series the plots are drawn from: events counted over time, and the freshness
#: histogram's buckets (cumulative counts, from its Prometheus scrapes) of the paced phase.
SERIES = ROOT / "loadtests" / "results" / "stream.series.json"
sys.path.insert(0, str(ROOT))

from freshrec.kafka_producer import producer_config  # noqa: E402
from freshrec.settings import Settings  # noqa: E402
from freshrec.stack import BrokerProcess, RedisProcess, free_port, wait_until  # noqa: E402

#: Event timestamps of the backlog start here (2025-01-01); the paced phase uses the clock.
BASE_TS = 1_735_689_600_000
#: Seconds of paced events published before the freshness phase, unmeasured.
WARM_UP_S = 1.0
#: How users are drawn for a backlog: "uniform", every user alike (20k users and
#: batches of a few hundred events: nearly every event a different user, the
#: worst case), or "zipf", user activity Zipf-distributed (a realistic mix:
#: about 430 distinct users per 1,000 events at 20k users).
MIXES = ("uniform", "zipf")
#: The Zipf mix's exponent.
ZIPF_EXPONENT = 1.1
#: Seconds between two reads of a process's event count. A scrape of the
#: worker's /metrics costs its event loop about a millisecond; at 50 per second
#: that was 5% of the worker's time, against nearly nothing for the baseline.
POLL_S = 0.1


# --- the baseline: a Faust agent that only counts ------------------------------


def bare_app(settings: Settings) -> Any:
    """The baseline app: same topics, serializers, batching and event loop; no work but counting.

    It is built by the worker's own :func:`streams.app.faust_app` (same broker,
    consumer, fetch-wait and producer settings), and consumes through
    ``noack_take`` and acks every batch exactly as the worker does (at once, with
    ``streams.transport``'s ``ack_processed``), so the ratio measures the
    worker's own work (validation, state, fold-in, writes), not a difference in
    how the two read the stream.
    """
    from schemas.wire import topics_by_type
    from streams.app import faust_app

    app = faust_app(
        settings.replace(data_dir=tempfile.mkdtemp(prefix="bench-bare-")),
        f"{settings.app_id}-bare",
    )
    source = app.topic(*topics_by_type(settings).values())
    count = [0]

    @app.agent(source)
    async def counter(stream: Any) -> None:
        async for events in stream.noack_take(settings.batch_size, settings.batch_max_wait_s):
            count[0] += len(events)
            ack = app.consumer.ack_processed  # type: ignore[attr-defined]  # streams.transport
            ack([event.message for event in events])

    @app.page("/count")
    async def count_page(web: Any, request: Any) -> Any:
        return web.json({"count": count[0]})

    return app


def run_bare() -> None:
    from faust.worker import Worker

    from streams.cli import tune_gc, use_fast_loop

    use_fast_loop()
    app = bare_app(Settings.from_env())
    tune_gc()  # as the worker: the ratio compares the worker's own work only
    Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


# --- helpers -------------------------------------------------------------------


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=2) as response:
        body: bytes = response.read()
        return body


def worker_metrics(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    text = get(f"http://127.0.0.1:{port}/metrics").decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + ("" if "le" not in sample.labels else f"|{sample.labels['le']}")
            out[key] = out.get(key, 0.0) + sample.value
    return out


def poll_count(count: Callable[[], float], procs: Iterable[subprocess.Popen[bytes]]) -> float:
    """``count()``, or 0 while the web server is not up; raises if one of ``procs`` exited."""
    for proc in procs:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
    try:
        return count()
    except OSError:
        return 0.0


def rate_to_count(
    count: Callable[[], float],
    total: int,
    timeout_s: float,
    *procs: subprocess.Popen[bytes],
    samples: list[list[float]] | None = None,
) -> float:
    """Events/s from the first poll that sees any events to the first that sees ``total``.

    The events already counted at the first poll are left out with its time.
    Each poll's ``[seconds since the first count, events counted]`` goes into
    ``samples`` when given (the events/s-over-time plot).
    """
    deadline = time.monotonic() + timeout_s
    first: float | None = None
    first_seen = 0.0
    while time.monotonic() < deadline:
        seen = poll_count(count, procs)
        now = time.monotonic()
        if seen > 0 and first is None:
            first, first_seen = now, seen
        if samples is not None and first is not None:
            samples.append([round(now - first, 3), seen])
        if seen >= total:
            assert first is not None
            if now - first < 0.5:
                raise RuntimeError("too few events to time: raise --events")
            return (total - first_seen) / (now - first)
        time.sleep(POLL_S)
    raise TimeoutError(f"not all {total} events counted within {timeout_s:.0f}s")


def quantile(q: float, before: dict[str, float], after: dict[str, float], name: str) -> float:
    """``histogram_quantile`` over the difference of two scrapes of histogram ``name``."""
    prefix = f"{name}_bucket|"
    bounds = sorted(
        (float(k[len(prefix) :]), after[k] - before.get(k, 0.0))
        for k in after
        if k.startswith(prefix)
    )
    total = bounds[-1][1]
    if total <= 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, cumulative in bounds:
        if cumulative >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(cumulative - below, 1e-12)
        lower, below = upper, cumulative
    return lower


def publish_model(settings: Settings, n_items: int, *, seed: int = 1, current: bool = True) -> str:
    """Train on synthetic data and save the version (current unless told); returns its id."""
    from freshrec.model_store import ModelStore
    from models.als import ALSConfig
    from models.synthetic import generate
    from models.weighting import DEFAULT_WEIGHTING
    from retrain.publish import train_and_publish

    data = generate(n_users=5000, n_items=n_items, n_interactions=100_000, factors=16, seed=1)
    # 64 factors, as every recorded run of this benchmark (the default is now 32)
    cfg = ALSConfig(factors=64, iterations=8, use_gpu=False, seed=seed)
    outcome = train_and_publish(
        ModelStore(settings.model_store),
        data.log,
        cfg,
        DEFAULT_WEIGHTING,
        popular_length=settings.list_length + settings.history_length,
        snapshot={"source": "bench_stream"},
        make_current=current,
    )
    return outcome.version.version_id


def draw_users(
    mix: str, n: int, users: int, rng: np.random.Generator, exponent: float = ZIPF_EXPONENT
) -> np.ndarray:
    """The user numbers (0 to ``users - 1``) of ``n`` events of ``mix`` (see :data:`MIXES`).

    In the Zipf mix the user of popularity rank ``r`` (1-based) is drawn with
    weight ``r ** -exponent``; ranks are dealt to user numbers by a random
    permutation, so that hot users land on every partition rather than on the
    few that hash the lowest numbers.
    """
    if mix == "uniform":
        return rng.integers(users, size=n)
    if mix != "zipf":
        raise ValueError(f"unknown mix {mix!r}: one of {MIXES}")
    weights = np.arange(1, users + 1, dtype=np.float64) ** -exponent
    ranks = rng.choice(users, size=n, p=weights / weights.sum())
    return rng.permutation(users)[ranks]


def event(n: int, user: int, item: int, ts: int) -> tuple[bytes, bytes]:
    """Event number ``n``, a watch of half of item ``item`` by user ``user``: (key, value)."""
    user_id = f"u{user}"
    doc = {
        "type": "watch",
        "event_id": f"e{n}",
        "user_id": user_id,
        "item_id": f"item-{item}",
        "watched_s": 900.0,
        "duration_s": 1800.0,
        "ts": ts,
    }
    return user_id.encode(), orjson.dumps(doc)


def produce_all(settings: Settings, records: Iterable[tuple[bytes, bytes]], what: str) -> None:
    """Publish ``records`` (key, value) to ``settings.topic_watch`` and wait for the broker."""
    producer = Producer(producer_config(settings, **{"linger.ms": 20}))
    for key, value in records:
        while True:
            try:
                producer.produce(settings.topic_watch, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0, f"{what} not acknowledged"


def produce_backlog(settings: Settings, mix: str, n: int, users: int, items: int) -> None:
    """Publish ``n`` events of ``mix`` to ``settings.topic_watch`` and wait for the broker."""
    rng = np.random.default_rng(7)
    users_drawn = draw_users(mix, n, users, rng).tolist()
    drawn = zip(users_drawn, rng.integers(items, size=n).tolist(), strict=True)
    records = (event(i, user, item, BASE_TS + i) for i, (user, item) in enumerate(drawn))
    produce_all(settings, records, "backlog")


def produce_paced(
    producer: Producer, topic: str, rate: int, seconds: float, users: int, items: int, start: int
) -> int:
    """Publish ``rate`` events/s (every user alike), each stamped with its production time;
    returns the count."""
    rng = np.random.default_rng(start)
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    began = time.monotonic()
    sent = 0
    while time.monotonic() - began < seconds:
        now_ms = int(time.time() * 1000)
        for _ in range(per_tick):
            user, item = int(rng.integers(users)), int(rng.integers(items))
            key, value = event(start + sent, user, item, now_ms)
            producer.produce(topic, key=key, value=value)
            sent += 1
        producer.poll(0)
        next_tick = began + (sent / per_tick) * tick
        time.sleep(max(0.0, next_tick - time.monotonic()))
    assert producer.flush(30) == 0
    return sent


# --- the stack and the processes on it --------------------------------------------


#: The worker, and the baseline (this file with ``--bare``), as processes.
WORKER_CMD = [sys.executable, "-m", "cli", "worker"]
BARE_CMD = [sys.executable, __file__, "--bare"]
#: The worker's count of events whose list is in Redis: the freshness histogram
#: is observed right after that write.
FRESHNESS = "freshrec_worker_freshness_seconds"


def worker_count(s: Settings) -> float:
    """Events whose lists the worker of ``s`` has written to Redis."""
    return worker_metrics(s.worker_web_port).get(f"{FRESHNESS}_count", 0.0)


def bare_count(s: Settings) -> float:
    """Events the bare agent of ``s`` has counted."""
    return float(json.loads(get(f"http://127.0.0.1:{s.worker_web_port}/count"))["count"])


class Stack:
    """A broker and a redis-server on loopback, a published model, and the processes run on them.

    Each mix has topics, a consumer group and a changelog of its own
    (:meth:`settings`); processes started by :meth:`spawn` are stopped on exit.
    """

    def __init__(self, items: int) -> None:
        self.items = items
        self.work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
        self._broker = BrokerProcess(log_path=self.work / "broker.log")
        self._redis = RedisProcess(log_path=self.work / "redis.log")
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Stack:
        self._broker.start()
        self._redis.start()
        try:
            publish_model(self.settings("uniform"), self.items)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            self.stop(proc)
        self._redis.stop()
        self._broker.stop()

    def settings(self, mix: str) -> Settings:
        """The settings of ``mix``'s worker (its topics exist once this returns)."""
        from streams.topics import ensure_topics

        topics = "bench-" if mix == "uniform" else f"bench-{mix}-"
        settings = Settings(
            bootstrap_servers=self._broker.bootstrap_servers,
            redis_url=self._redis.url,
            topic_watch=f"{topics}watch",
            topic_rate=f"{topics}rate",
            topic_forget=f"{topics}forget",
            topic_dead_letter=f"{topics}dlq",
            topic_partitions=4,
            app_id="bench-stream" if mix == "uniform" else f"bench-stream-{mix}",
            key_prefix="bench:",
            model_store=str(self.work / "models"),
            data_dir=str(self.work / f"worker-{mix}"),
            worker_web_port=free_port(),
            broker_session_timeout_s=6.0,
            broker_heartbeat_interval_s=0.5,
        )
        ensure_topics(settings)
        return settings

    def spawn(self, cmd: list[str], s: Settings, log: str) -> subprocess.Popen[bytes]:
        """Start ``cmd`` with ``s`` as its environment, its output in ``log`` (in :attr:`work`)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
        env.update(s.as_env())
        with open(self.work / log, "wb") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop ``proc`` (SIGTERM, then SIGKILL after 20 s)."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def group_rate(
        self,
        cmd: list[str],
        settings: Settings,
        n: int,
        count_of: Callable[[Settings], float],
        events: int,
        timeout_s: float,
    ) -> float:
        """Events/s of ``n`` processes of ``cmd`` in one new consumer group, over ``events``.

        The group is ``settings.app_id``, new, so it reads the backlog from the
        start; the processes are started together so that all join the group's
        first generation, timed over the sum of their counts, and stopped.
        """
        group = [settings.replace(worker_web_port=free_port()) for _ in range(n)]
        started = [self.spawn(cmd, s, f"{s.app_id}-{i}.log") for i, s in enumerate(group)]
        per_s = rate_to_count(lambda: sum(count_of(s) for s in group), events, timeout_s, *started)
        for proc in started:
            self.stop(proc)
        return per_s


# --- the phases --------------------------------------------------------------------


@dataclass(frozen=True)
class Freshness:
    """The paced phase's raw material: the worker's events counted over time (its backlog
    run) and its /metrics before and after the paced events."""

    counted: list[list[float]]
    before: dict[str, float]
    after: dict[str, float]


def uniform_phases(
    stack: Stack, settings: Settings, args: argparse.Namespace, items: int
) -> tuple[dict[str, Any], str, float, Freshness]:
    """The bare agent, then the worker, on the uniform backlog, then the paced freshness
    phase on the same worker: their figures, a summary, the worker's events/s, and the
    series for the plots."""
    # Baseline first, alone on the machine, then the worker, alone too.
    bare_per_s = stack.group_rate(BARE_CMD, settings, 1, bare_count, args.events, args.timeout)
    name = FRESHNESS
    worker = stack.spawn(WORKER_CMD, settings, "worker.log")
    counted: list[list[float]] = []
    events_per_s = rate_to_count(
        lambda: worker_count(settings), args.events, args.timeout, worker, samples=counted
    )

    # Freshness is a property of a worker that keeps up: by default the
    # stream runs at half the throughput just measured.
    rate = args.rate or max(1, round(events_per_s / 2))
    # A site back-end's producer is long connected: a fresh one holds its
    # first events for up to a second while it connects, which measured the
    # client, not the worker. So one second of the same stream warms it up
    # first, outside the measurement.
    producer = Producer(producer_config(settings))
    total = args.events
    paced = functools.partial(produce_paced, producer, settings.topic_watch, rate)
    total += paced(WARM_UP_S, args.users, items, total)
    wait_until(lambda: worker_count(settings) >= total, args.timeout, "warm-up processed")
    port = settings.worker_web_port
    before = worker_metrics(port)
    sent = paced(args.seconds, args.users, items, total)
    total += sent
    wait_until(lambda: worker_count(settings) >= total, args.timeout, "paced events processed")
    after = worker_metrics(port)
    stack.stop(worker)

    result: dict[str, Any] = {
        "bench": "stream",
        "events": args.events,
        "events_per_s": round(events_per_s),
        "bare_events_per_s": round(bare_per_s),
        "ratio": round(events_per_s / bare_per_s, 3),
        "freshness_p50_ms": round(quantile(0.5, before, after, name) * 1000, 1),
        "freshness_p99_ms": round(quantile(0.99, before, after, name) * 1000, 1),
        "freshness_rate_per_s": rate,
        "freshness_events": sent,
    }
    summary = (
        f"worker {events_per_s:,.0f} events/s, bare agent {bare_per_s:,.0f} events/s; "
        f"freshness at {rate}/s: p50 {result['freshness_p50_ms']} ms, "
        f"p99 {result['freshness_p99_ms']} ms"
    )
    return result, summary, events_per_s, Freshness(counted, before, after)


def zipf_phase(
    stack: Stack, zipf: Settings, args: argparse.Namespace
) -> tuple[dict[str, Any], str]:
    """The bare agent and the worker on the Zipf backlog (already published): figures, summary."""
    zipf_bare = stack.group_rate(BARE_CMD, zipf, 1, bare_count, args.events, args.timeout)
    zipf_worker = stack.group_rate(WORKER_CMD, zipf, 1, worker_count, args.events, args.timeout)
    figures = {
        "zipf_events_per_s": round(zipf_worker),
        "zipf_bare_events_per_s": round(zipf_bare),
        "zipf_ratio": round(zipf_worker / zipf_bare, 3),
    }
    said = f"; Zipf mix: worker {zipf_worker:,.0f} events/s, bare agent {zipf_bare:,.0f} events/s"
    return figures, said


def other_size(args: argparse.Namespace, items: int) -> tuple[dict[str, Any], str]:
    """A further catalogue size on a stack of its own (model trained on ``items`` items):
    the uniform, freshness and Zipf phases only."""
    with Stack(items) as stack:
        settings = stack.settings("uniform")
        produce_backlog(settings, "uniform", args.events, args.users, items)
        zipf = None
        if not args.skip_zipf:
            zipf = stack.settings("zipf")
            produce_backlog(zipf, "zipf", args.events, args.users, items)
        figures, summary, _, _ = uniform_phases(stack, settings, args, items)
        del figures["bench"], figures["events"]
        if zipf is not None:
            more, said = zipf_phase(stack, zipf, args)
            figures.update(more)
            summary += said
    return figures, summary


def resident_bytes(pid: int) -> int:
    """The resident set of process ``pid`` (``VmRSS``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def held_user_bytes(
    stack: Stack, settings: Settings, users: int, items: int, timeout_s: float
) -> dict[str, Any]:
    """Resident bytes per user a worker holds: its resident set before and after ``users``
    distinct users' first events (one each), over the count.

    A worker of its own (new group, new topics) first processes one event each
    of 2,000 users, so that imports, the model, buffers and the state cache's
    first fill are in the "before" figure; its state cache holds at most
    ``FRESHREC_STATE_CACHE_USERS`` decoded states whatever the count, so what
    grows with it is the state table (the encoded record per user, in memory)
    and the per-user bookkeeping. ``users`` is what this machine runs in a few
    minutes, not a million: the figure per user is what scales.
    """
    held = stack.settings("state")  # topics, group and changelog of its own
    warm = 2_000
    produce_distinct(held, 0, warm, items)
    worker = stack.spawn(WORKER_CMD, held, "state-worker.log")
    wait_until(lambda: worker_count(held) >= warm, timeout_s, "state warm-up processed")
    rss_before = resident_bytes(worker.pid)
    produce_distinct(held, warm, users, items)
    wait_until(lambda: worker_count(held) >= warm + users, 4 * timeout_s, "state run processed")
    rss_after = resident_bytes(worker.pid)
    stack.stop(worker)
    return {
        "bytes_per_held_user": round((rss_after - rss_before) / users),
        "state_users": users,
        "state_rss_mib": [round(rss_before / 2**20), round(rss_after / 2**20)],
    }


def produce_distinct(settings: Settings, first: int, n: int, items: int) -> None:
    """One watch each for users ``first`` to ``first + n - 1``, to ``settings.topic_watch``."""
    rng = np.random.default_rng(first)
    drawn = enumerate(rng.integers(items, size=n).tolist())
    records = (event(first + i, first + i, item, BASE_TS + i) for i, item in drawn)
    produce_all(settings, records, "state events")


# --- new items (issue 23): their traffic's cost, and how soon they reach a list ------


#: Share of the new-item backlog's events on items the model does not know.
NEW_ITEM_SHARE = 0.1
#: Items the model does not know in that backlog.
NEW_ITEMS = 200
#: Trials of the visibility phase, each a new item with its users and probes.
VISIBILITY_TRIALS = 20
#: Users who take each new item of the visibility phase, all with the probes' history.
#: ALS scores an item by how many of a taste's users took it: at the bench's 5,000
#: trained users, 3 users put it at a twentieth of the 150th item's score, 40 in the
#: probes' top 150 (measured on the bench's model).
VISIBILITY_USERS = 40


def produce_new_item_backlog(settings: Settings, n: int, users: int, items: int) -> None:
    """The uniform backlog's events with :data:`NEW_ITEM_SHARE` of them on items the model
    does not know (``fresh-0`` to ``fresh-199``), on ``settings``' watch topic."""
    rng = np.random.default_rng(7)
    users_drawn = draw_users("uniform", n, users, rng).tolist()
    drawn = zip(users_drawn, rng.integers(items, size=n).tolist(), strict=True)
    fresh = (rng.random(n) < NEW_ITEM_SHARE).tolist()
    picks = rng.integers(NEW_ITEMS, size=n).tolist()

    def records() -> Iterator[tuple[bytes, bytes]]:
        for i, (user, item) in enumerate(drawn):
            key, value = event(i, user, item, BASE_TS + i)
            if fresh[i]:
                value = value.replace(f'"item-{item}"'.encode(), f'"fresh-{picks[i]}"'.encode())
            yield key, value

    produce_all(settings, records(), "backlog")


def _list_holds(client: Any, s: Settings, user: str, item: str) -> int | None:
    """``written_at`` of ``user``'s list when it holds ``item`` (a list naming an item the
    model does not know is in the JSON form), else None."""
    from schemas.recs import compact_version, decode, user_key

    raw = client.hget(user_key(s.key_prefix, user), "data")
    if raw is None or compact_version(raw) is not None:
        return None
    recs = decode(raw)
    return recs.written_at if any(i.item == item for i in recs.items) else None


def _all_listed(client: Any, keys: list[str]) -> bool:
    return all(client.hexists(k, "data") for k in keys)


def visibility(s: Settings, items: int, trials: int, timeout_s: float) -> list[float]:
    """Per trial, ms from the event that makes a new item recommendable to the probes (the
    last of :data:`VISIBILITY_USERS` users' events on it, sent at once; stamped with its
    production time) to the first list holding it (that list's ``written_at``).

    Each trial: users with one history (eight known items of one planted
    cluster: a taste; random items make a vector too weak for any item with
    40 users to reach the top 150 of some of them) take the item;
    users with the same history are the probes, one event each every 50 ms, so
    that their lists are rewritten while the item's vector travels (the item
    agent, Redis, each worker's next batch)."""
    import redis

    from schemas.recs import user_key

    producer = Producer(producer_config(s))
    client = redis.Redis.from_url(s.redis_url)
    rng = np.random.default_rng(11)
    out: list[float] = []
    n = 0

    def send(user: str, item: str, ts: int) -> None:
        nonlocal n
        doc = {
            "type": "watch",
            "event_id": f"v{n}",
            "user_id": user,
            "item_id": item,
            "watched_s": 1700.0,
            "duration_s": 1800.0,
            "ts": ts,
        }
        n += 1
        producer.produce(s.topic_watch, key=user.encode(), value=orjson.dumps(doc))

    for trial in range(trials):
        # a taste: eight items of one planted cluster (item i is in cluster i % 16)
        cluster = np.arange(trial % 16, items, 16)
        history = [f"item-{i}" for i in rng.choice(cluster, 8, replace=False).tolist()]
        intro = [f"vi{trial}-{a}" for a in range(max(VISIBILITY_USERS, s.new_item_min_users))]
        probes = [f"vp{trial}-{b}" for b in range(4)]
        ts = int(time.time() * 1000)
        for user in intro + probes:
            for k, item in enumerate(history):
                send(user, item, ts - 10_000 + k)
        producer.flush(10)
        wait_until(
            functools.partial(_all_listed, client, [user_key(s.key_prefix, p) for p in probes]),
            timeout_s,
            "the probes' lists",
        )
        new = f"visible-{trial}"
        made_ms = int(time.time() * 1000)
        for user in intro:
            send(user, new, made_ms)
        producer.flush(10)
        seen: int | None = None
        deadline = time.monotonic() + timeout_s
        tick = 0
        while seen is None and time.monotonic() < deadline:
            tick += 1
            for p in probes:
                send(p, history[tick % len(history)], int(time.time() * 1000))
            producer.poll(0)
            time.sleep(0.05)
            stamps = [_list_holds(client, s, p, new) for p in probes]
            found = [w for w in stamps if w is not None]
            seen = min(found) if found else None
        out.append(float(seen - made_ms) if seen is not None else timeout_s * 1000)
    producer.flush(10)
    return out


def new_items_phase(
    stack: Stack, settings: Settings, events: int, users: int, items: int, timeout_s: float
) -> tuple[dict[str, Any], str]:
    """``new_item_traffic_ratio`` (events/s of a worker on a backlog with 10% of its events on
    unknown items, over the same backlog without: a plain run before and one after, their
    mean) and ``new_item_visible_p50_ms``/``_p99_ms`` (:func:`visibility`)."""
    from streams.topics import ensure_topics

    mixed = stack.settings("newitems").replace(topic_contributions="bench-newitems-contributions")
    ensure_topics(mixed)
    produce_new_item_backlog(mixed, events, users, items)

    def run(s: Settings, app_id: str) -> float:
        return stack.group_rate(
            WORKER_CMD, s.replace(app_id=app_id), 1, worker_count, events, timeout_s
        )

    before = run(settings, "bench-newitems-plain")
    with_new = run(mixed, "bench-newitems-mixed")
    after = run(settings, "bench-newitems-plain-after")
    plain = (before + after) / 2
    visible = mixed.replace(
        app_id="bench-newitems-visible",
        topic_watch="bench-visible-watch",
        topic_rate="bench-visible-rate",
        topic_forget="bench-visible-forget",
        topic_contributions="bench-visible-contributions",
    )
    ensure_topics(visible)
    worker = stack.spawn(WORKER_CMD, visible, "worker-visible.log")
    wait_until(lambda: worker_metrics(visible.worker_web_port) != {}, timeout_s, "the worker")
    latencies = visibility(visible, items, VISIBILITY_TRIALS, min(timeout_s, 10.0))
    stack.stop(worker)
    result = {
        "new_item_events_per_s": round(with_new),
        "new_item_plain_events_per_s": [round(before), round(after)],
        "new_item_traffic_ratio": round(with_new / plain, 3),
        "new_item_visible_p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "new_item_visible_p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "new_item_visible_trials": len(latencies),
        "new_item_visible_ms": [round(x) for x in latencies],
    }
    summary = (
        f"; with {NEW_ITEM_SHARE:.0%} new-item traffic {with_new:,.0f} events/s against "
        f"{before:,.0f} and {after:,.0f} without (x{result['new_item_traffic_ratio']}), "
        f"a new item in a list p50 {result['new_item_visible_p50_ms']} ms, "
        f"p99 {result['new_item_visible_p99_ms']} ms"
    )
    return result, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=50_000, help="backlog size (N), each mix")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument(
        "--items",
        default="2000,27000",
        help="catalogue sizes, comma-separated: the first runs every phase, each further one "
        "the uniform, freshness and Zipf phases, its keys suffixed (default: %(default)s)",
    )
    parser.add_argument(
        "--state-users",
        type=int,
        default=200_000,
        help="distinct users of the state run (bytes_per_held_user); 0 leaves it out",
    )
    parser.add_argument(
        "--rate",
        type=int,
        default=0,
        help="events/s of the freshness phase; 0 (default): half the measured worker throughput",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the freshness phase")
    parser.add_argument("--timeout", type=float, default=240.0, help="limit of each phase, seconds")
    parser.add_argument("--skip-zipf", action="store_true", help="leave out the Zipf mix")
    parser.add_argument("--skip-scale", action="store_true", help="leave out the two-process runs")
    parser.add_argument(
        "--skip-online", action="store_true", help="leave out the online-metrics-off run"
    )
    parser.add_argument("--skip-canary", action="store_true", help="leave out the canary run")
    parser.add_argument(
        "--skip-new-items", action="store_true", help="leave out the new-item phase"
    )
    parser.add_argument(
        "--only-new-items",
        action="store_true",
        help="run the new-item phase alone (with the backlog it compares against)",
    )
    args = parser.parse_args()
    if args.bare:
        run_bare()
        return 0

    sizes = [int(size) for size in args.items.split(",")]
    items = sizes[0]
    with Stack(items) as stack:
        work = stack.work
        settings = stack.settings("uniform")
        produce_backlog(settings, "uniform", args.events, args.users, items)
        if args.only_new_items:
            only, summary = new_items_phase(
                stack, settings, args.events, args.users, items, args.timeout
            )
            print(f"{summary[2:]} (logs in {work})")
            print(json.dumps({"bench": "stream-new-items", **only}))
            return 0
        zipf = None
        if not args.skip_zipf:
            zipf = stack.settings("zipf")
            produce_backlog(zipf, "zipf", args.events, args.users, items)
        result, summary, events_per_s, fresh = uniform_phases(stack, settings, args, items)
        bare_per_s = result["bare_events_per_s"]
        counted, before, after = fresh.counted, fresh.before, fresh.after
        name = FRESHNESS

        # The online metrics off, and a 20% canary, each against a plain worker (neither)
        # run just before and just after them on the same backlog (groups of their own):
        # the first worker above is minutes older, a shared machine's load drifts, and
        # the mean of the plain runs either side cancels a drift that is linear in time.
        if not (args.skip_online and args.skip_canary):

            def plain(app_id: str) -> float:
                return stack.group_rate(
                    WORKER_CMD,
                    settings.replace(app_id=app_id),
                    1,
                    worker_count,
                    args.events,
                    args.timeout,
                )

            before_per_s = plain("bench-plain")
            off_per_s = canary_per_s = 0.0
            if not args.skip_online:
                off = settings.replace(app_id="bench-online-off", online_top_k=0)
                off_per_s = stack.group_rate(
                    WORKER_CMD, off, 1, worker_count, args.events, args.timeout
                )
            if not args.skip_canary:
                from freshrec.model_store import ModelStore

                store = ModelStore(settings.model_store)
                candidate = publish_model(settings, items, seed=2, current=False)
                store.start_canary(candidate, 0.2, by="bench_stream")
                canary_per_s = plain("bench-canary")
                store.end_canary(promote=False, by="bench_stream")
            after_per_s = plain("bench-plain-after")
            plain_per_s = (before_per_s + after_per_s) / 2
            result["plain_events_per_s"] = round(plain_per_s)
            result["plain_events_per_s_before_after"] = [round(before_per_s), round(after_per_s)]
            summary += f"; a plain worker {before_per_s:,.0f} then {after_per_s:,.0f} events/s"
            if not args.skip_online:
                result["online_off_events_per_s"] = round(off_per_s)
                result["online_metrics_cost"] = round(1 - plain_per_s / off_per_s, 3)
                summary += (
                    f", with the online metrics off {off_per_s:,.0f} events/s "
                    f"(cost {result['online_metrics_cost']:+.1%})"
                )
            if not args.skip_canary:
                result["canary_events_per_s"] = round(canary_per_s)
                result["canary_ratio"] = round(canary_per_s / plain_per_s, 3)
                summary += (
                    f", with a 20% canary {canary_per_s:,.0f} events/s (x{result['canary_ratio']})"
                )

        # The Zipf mix: the same count of events, a few hot users in every batch.
        if zipf is not None:
            figures, said = zipf_phase(stack, zipf, args)
            result.update(figures)
            summary += said

        # Two processes in one group, on the same backlog: first the bare agent's
        # pair (the ceiling), then the worker's. Each pair's group is new, so it
        # reads the backlog from the start.
        if not args.skip_scale:
            two = settings.replace(app_id="bench-two")
            two_bare_per_s = stack.group_rate(
                BARE_CMD, two, 2, bare_count, args.events, args.timeout
            )
            two_per_s = stack.group_rate(
                WORKER_CMD, two, 2, worker_count, args.events, args.timeout
            )
            # One worker again, after the pair: the machine is shared, and its load
            # drifts over minutes; the pair is compared with the mean of one worker
            # before and after it.
            again_per_s = stack.group_rate(
                WORKER_CMD,
                settings.replace(app_id="bench-one-again"),
                1,
                worker_count,
                args.events,
                args.timeout,
            )
            one_per_s = (events_per_s + again_per_s) / 2
            result.update(
                {
                    "two_workers_events_per_s": round(two_per_s),
                    "events_per_s_after": round(again_per_s),
                    "scale_ratio": round(two_per_s / one_per_s, 3),
                    "two_bare_events_per_s": round(two_bare_per_s),
                    "two_bare_scale_ratio": round(two_bare_per_s / bare_per_s, 3),
                }
            )
            summary += (
                f"; one worker again {again_per_s:,.0f} events/s, two workers "
                f"{two_per_s:,.0f} events/s (x{result['scale_ratio']}), two bare agents "
                f"{two_bare_per_s:,.0f} events/s (x{result['two_bare_scale_ratio']})"
            )
        if args.state_users:
            result.update(held_user_bytes(stack, settings, args.state_users, items, args.timeout))
            summary += (
                f"; {args.state_users:,} users held: {result['bytes_per_held_user']:,} "
                "resident bytes each"
            )
        if not args.skip_new_items:
            added, more = new_items_phase(
                stack, settings, args.events, args.users, items, args.timeout
            )
            result.update(added)
            summary += more
        result.update(
            {
                "users": args.users,
                "items": items,
                "batch_size": settings.batch_size,
                "partitions": settings.topic_partitions,
                "cpus": os.cpu_count(),
            }
        )
        print(f"{summary} (logs in {work})")
        prefix = f"{name}_bucket|"
        SERIES.parent.mkdir(parents=True, exist_ok=True)
        SERIES.write_text(
            json.dumps(
                {
                    "events_counted_over_time": counted,
                    "freshness_buckets_s": sorted(
                        [float(k[len(prefix) :]), after[k] - before.get(k, 0.0)]
                        for k in after
                        if k.startswith(prefix)
                    ),
                }
            )
        )
    for size in sizes[1:]:
        figures, said = other_size(args, size)
        suffix = f"_{size // 1000}k" if size % 1000 == 0 else f"_{size}"
        result |= {f"{key}{suffix}": value for key, value in figures.items()}
        print(f"{size} items: {said}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
