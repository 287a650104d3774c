"""Benchmark the streaming worker: sustained events/s and freshness, beside a bare Faust agent.

Everything runs on loopback and is started here (``freshrec.stack``): a broker,
a redis-server, the worker (``freshrec worker``) and the baseline, a Faust app
whose one agent only counts events (this file, run with ``--bare``). Both get
the same backlog of ``--events`` events, published before they start, and both
are timed the same way: this script polls their event count and takes the time
from the first poll that sees an event to the first that sees them all, so
start-up and group joins are left out of both.

Freshness needs a stream that the worker keeps up with, not a backlog: a
second phase publishes ``--rate`` events/s (by default half the worker's
measured throughput) for ``--seconds`` seconds (after one unmeasured second
that connects the producer), each
stamped with the time it was produced, and reads the worker's
``freshrec_worker_freshness_seconds`` histogram (event timestamp to the Redis
write of the list that includes it) before and after, interpolating quantiles
within buckets the way Prometheus' ``histogram_quantile`` does.

Scaling out: a third phase runs two bare agents, then two workers, each pair
in one consumer group of its own over the same backlog (the topics' partitions
split between the two processes), timed the same way over the sum of the two
counts, and one worker once more after them (``events_per_s_after``).
``scale_ratio`` is two workers' events/s over one worker's (the mean of the
runs before and after the pair, as the shared machine's load drifts), and
``two_bare_scale_ratio`` the same for the bare agent: on a machine whose
cores also run the broker and redis-server, the bare pair is the ceiling the
worker pair can reach.

The model is trained here on synthetic data (64 factors) so that
the fold-in does real work. The last line of standard output is one JSON object:
``{"bench": "stream", "events_per_s", "bare_events_per_s", "ratio",
"freshness_p50_ms", "freshness_p99_ms", "two_workers_events_per_s", "scale_ratio",
"two_bare_events_per_s", "two_bare_scale_ratio", ...}``; the raw series the plots are
drawn from go to ``loadtests/results/stream.series.json``.

Run: ``python loadtests/bench_stream.py`` (about three minutes on two cores).
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
from collections.abc import Callable
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
#: Seconds between two reads of a process's event count. A scrape of the
#: worker's /metrics costs its event loop about a millisecond; at 50 per second
#: that was 5% of the worker's time, against nearly nothing for the baseline.
POLL_S = 0.1


# --- the baseline: a Faust agent that only counts ------------------------------


def bare_app(settings: Settings) -> Any:
    """The baseline app: same topics, serializers, batching and event loop; no work but counting.

    It is built by the worker's own :func:`streams.app.faust_app` (same broker,
    consumer, fetch-wait and producer settings), and consumes through
    ``noack_take`` and acks every event exactly as the worker does, so the ratio measures the
    worker's own work (validation, state, fold-in, writes), not a difference in
    how the two read the stream.
    """
    from streams.app import faust_app

    app = faust_app(
        settings.replace(data_dir=tempfile.mkdtemp(prefix="bench-bare-")),
        f"{settings.app_id}-bare",
    )
    source = app.topic(settings.topic_watch, settings.topic_rate, settings.topic_forget)
    count = [0]

    @app.agent(source)
    async def counter(stream: Any) -> None:
        async for events in stream.noack_take(settings.batch_size, settings.batch_max_wait_s):
            count[0] += len(events)
            for event in events:
                await stream.ack(event)

    @app.page("/count")
    async def count_page(web: Any, request: Any) -> Any:
        return web.json({"count": count[0]})

    return app


def run_bare() -> None:
    from faust.worker import Worker

    from streams.cli import use_fast_loop

    use_fast_loop()

    Worker(bare_app(Settings.from_env()), loglevel="warning", quiet=True).execute_from_commandline()


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
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            seen = count()
        except OSError:
            seen = 0  # web server not up yet
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


def publish_model(settings: Settings, n_items: int) -> None:
    from models.als import ALSConfig
    from models.publish import train_and_publish
    from models.store import ModelStore
    from models.synthetic import generate
    from models.weighting import DEFAULT_WEIGHTING

    data = generate(n_users=5000, n_items=n_items, n_interactions=100_000, factors=16, seed=1)
    # 64 factors, as every recorded run of this benchmark (the default is now 32)
    cfg = ALSConfig(factors=64, iterations=8, use_gpu=False)
    train_and_publish(
        ModelStore(settings.model_store),
        data.log,
        cfg,
        DEFAULT_WEIGHTING,
        popular_length=settings.list_length + settings.history_length,
        snapshot={"source": "bench_stream"},
    )


def event(n: int, users: int, items: int, rng: np.random.Generator, ts: int) -> tuple[bytes, bytes]:
    user = f"u{int(rng.integers(users))}"
    doc = {
        "type": "watch",
        "event_id": f"e{n}",
        "user_id": user,
        "item_id": f"item-{int(rng.integers(items))}",
        "watched_s": 900.0,
        "duration_s": 1800.0,
        "ts": ts,
    }
    return user.encode(), orjson.dumps(doc)


def produce_backlog(settings: Settings, n: int, users: int, items: int) -> None:
    producer = Producer(producer_config(settings, **{"linger.ms": 20}))
    rng = np.random.default_rng(7)
    for i in range(n):
        key, value = event(i, users, items, rng, BASE_TS + i)
        while True:
            try:
                producer.produce(settings.topic_watch, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0, "backlog not acknowledged"


def produce_paced(
    producer: Producer, topic: str, rate: int, seconds: float, users: int, items: int, start: int
) -> int:
    """Publish ``rate`` events/s, each stamped with its production time; returns the count."""
    rng = np.random.default_rng(start)
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    began = time.monotonic()
    sent = 0
    while time.monotonic() - began < seconds:
        now_ms = int(time.time() * 1000)
        for _ in range(per_tick):
            key, value = event(start + sent, users, items, rng, now_ms)
            producer.produce(topic, key=key, value=value)
            sent += 1
        producer.poll(0)
        next_tick = began + (sent / per_tick) * tick
        time.sleep(max(0.0, next_tick - time.monotonic()))
    assert producer.flush(30) == 0
    return sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=50_000, help="backlog size (N)")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument(
        "--rate",
        type=int,
        default=0,
        help="events/s of the freshness phase; 0 (default): half the measured worker throughput",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the freshness phase")
    parser.add_argument("--timeout", type=float, default=240.0, help="limit of each phase, seconds")
    args = parser.parse_args()
    if args.bare:
        run_bare()
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    broker = BrokerProcess(log_path=work / "broker.log")
    redis_srv = RedisProcess(log_path=work / "redis.log")
    broker.start()
    redis_srv.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        settings = Settings(
            bootstrap_servers=broker.bootstrap_servers,
            redis_url=redis_srv.url,
            topic_watch="bench-watch",
            topic_rate="bench-rate",
            topic_forget="bench-forget",
            topic_dead_letter="bench-dlq",
            topic_partitions=4,
            app_id="bench-stream",
            key_prefix="bench:",
            model_store=str(work / "models"),
            data_dir=str(work / "worker"),
            worker_web_port=free_port(),
            broker_session_timeout_s=6.0,
            broker_heartbeat_interval_s=0.5,
        )
        from streams.topics import ensure_topics

        ensure_topics(settings)
        publish_model(settings, args.items)
        produce_backlog(settings, args.events, args.users, args.items)

        def spawn(cmd: list[str], s: Settings, log: str) -> subprocess.Popen[bytes]:
            env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
            env.update(s.as_env())
            with open(work / log, "wb") as out:
                proc = subprocess.Popen(
                    cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
                )
            procs.append(proc)
            return proc

        # Baseline first, alone on the machine, then the worker, alone too.
        bare_settings = settings.replace(worker_web_port=free_port())
        bare = spawn([sys.executable, __file__, "--bare"], bare_settings, "bare.log")
        bare_url = f"http://127.0.0.1:{bare_settings.worker_web_port}/count"
        bare_per_s = rate_to_count(
            lambda: json.loads(get(bare_url))["count"], args.events, args.timeout, bare
        )
        bare.terminate()
        bare.wait(30)

        # An event counts for the worker once the list that includes it is in
        # Redis: the freshness histogram is observed right after that write.
        name = "freshrec_worker_freshness_seconds"
        port = settings.worker_web_port
        worker = spawn([sys.executable, "-m", "cli", "worker"], settings, "worker.log")
        counted: list[list[float]] = []
        events_per_s = rate_to_count(
            lambda: worker_metrics(port).get(f"{name}_count", 0.0),
            args.events,
            args.timeout,
            worker,
            samples=counted,
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
        total += paced(WARM_UP_S, args.users, args.items, total)
        wait_until(
            lambda: worker_metrics(port)[f"{name}_count"] >= total,
            args.timeout,
            "warm-up processed",
        )
        before = worker_metrics(port)
        sent = paced(args.seconds, args.users, args.items, total)
        total += sent
        wait_until(
            lambda: worker_metrics(port)[f"{name}_count"] >= total,
            args.timeout,
            "paced events processed",
        )
        after = worker_metrics(port)
        worker.terminate()
        worker.wait(30)

        # Two processes in one group, on the same backlog: first the bare agent's
        # pair (the ceiling), then the worker's. Each pair's group is new, so it
        # reads the backlog from the start; the pair is started together so
        # that both join the group's first generation.
        def group_rate(
            cmd: list[str], group: str, n: int, count_of: Callable[[Settings], float]
        ) -> float:
            pair = [settings.replace(app_id=group, worker_web_port=free_port()) for _ in range(n)]
            started = [spawn(cmd, s, f"{group}-{i}.log") for i, s in enumerate(pair)]
            per_s = rate_to_count(
                lambda: sum(count_of(s) for s in pair), args.events, args.timeout, *started
            )
            for proc in started:
                proc.terminate()
            for proc in started:
                proc.wait(30)
            return per_s

        def bare_count(s: Settings) -> float:
            return float(json.loads(get(f"http://127.0.0.1:{s.worker_web_port}/count"))["count"])

        def worker_count(s: Settings) -> float:
            return worker_metrics(s.worker_web_port).get(f"{name}_count", 0.0)

        bare_cmd = [sys.executable, __file__, "--bare"]
        worker_cmd = [sys.executable, "-m", "cli", "worker"]
        two_bare_per_s = group_rate(bare_cmd, "bench-two", 2, bare_count)
        two_per_s = group_rate(worker_cmd, "bench-two", 2, worker_count)
        # One worker again, after the pair: the machine is shared, and its load
        # drifts over minutes; the pair is compared with the mean of one worker
        # before and after it.
        again_per_s = group_rate(worker_cmd, "bench-one-again", 1, worker_count)
        one_per_s = (events_per_s + again_per_s) / 2
        result = {
            "bench": "stream",
            "events": args.events,
            "events_per_s": round(events_per_s),
            "bare_events_per_s": round(bare_per_s),
            "ratio": round(events_per_s / bare_per_s, 3),
            "freshness_p50_ms": round(quantile(0.5, before, after, name) * 1000, 1),
            "freshness_p99_ms": round(quantile(0.99, before, after, name) * 1000, 1),
            "freshness_rate_per_s": rate,
            "freshness_events": sent,
            "two_workers_events_per_s": round(two_per_s),
            "events_per_s_after": round(again_per_s),
            "scale_ratio": round(two_per_s / one_per_s, 3),
            "two_bare_events_per_s": round(two_bare_per_s),
            "two_bare_scale_ratio": round(two_bare_per_s / bare_per_s, 3),
            "users": args.users,
            "items": args.items,
            "batch_size": settings.batch_size,
            "partitions": settings.topic_partitions,
            "cpus": os.cpu_count(),
        }
        print(
            f"worker {events_per_s:,.0f} events/s, bare agent {bare_per_s:,.0f} events/s; "
            f"freshness at {rate}/s: p50 {result['freshness_p50_ms']} ms, "
            f"p99 {result['freshness_p99_ms']} ms; one worker again {again_per_s:,.0f} events/s, "
            f"two workers {two_per_s:,.0f} events/s "
            f"(x{result['scale_ratio']}), two bare agents {two_bare_per_s:,.0f} events/s "
            f"(x{result['two_bare_scale_ratio']}) (logs in {work})"
        )
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
        print(json.dumps(result))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        redis_srv.stop()
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
