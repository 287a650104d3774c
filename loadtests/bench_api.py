"""HTTP load on ``GET /recs/<user>`` beside ``redis-benchmark`` on the same keys, in one run.

    python loadtests/bench_api.py [--users 100000] [--connections 200] [--duration 30]
                                  [--workers CORES] [--list-length 150] [--k 10]
                                  [--wrk-threads 1] [--format compact|json] [--because 0]

Starts its own redis-server and ``freshrec api --workers N`` on free loopback
ports, stores ``--users`` lists of ``--list-length`` items the way the worker
does (``--format compact``, the default: ``schemas.recs.ItemTable``, with the
model's item table at ``P items:<version>``; ``--format json``: the JSON lists
of older workers and of lists made without a model, ``schemas.recs.encode``),
with explanations drawn from ``--because`` history items per list (0: none),
and measures Redis's ``used_memory`` before and after storing the users' lists:
``redis_bytes_per_user`` is the growth per user (keys, hash encoding and
allocator overhead included; goal at 150 items: <= 1,500). Then:

1. ``wrk`` (Debian package ``wrk``) with ``--connections`` connections for
   ``--duration`` seconds, each request for a random user's top ``--k``;
2. ``redis-benchmark`` (ships with redis-server) with as many connections,
   reading the same keys' ``data`` field (``HGET``, the API's one command per
   request; the lists are hashes, so this is the GET of the issue) as the
   ceiling: the API can never be faster than the store behind it.

``ratio`` = API requests/s / redis-benchmark reads/s. Goal on 2 cores:
>= 5,000 req/s, p99 < 50 ms, ratio >= 0.25. Everything shares the machine's
cores (load generator included), so figures are noisy on a busy machine. wrk
runs one thread by default (``--wrk-threads``): one thread on loopback drives
far more requests than the API answers, and each extra thread only takes CPU
from the API workers it measures. redis-benchmark is single-threaded too.

``api_cpu_us_per_request`` is the CPU time (user + system) the API workers
used during the wrk run divided by the requests answered: unlike requests/s
it hardly depends on what else the machine is doing, so it is the figure to
compare between changes.

3. Events over HTTP, after the reads (so the read figures are measured before
   any producer exists): a broker is started (``freshrec stack``'s), and the
   same ``--events`` valid ``watch`` events are sent twice, each way measured
   until the broker acknowledged the last one: ``POST /events`` in batches of
   ``--batch`` (100) over ``--post-connections`` connections
   (``events_post_per_s``), and the Python publisher straight to the broker
   (``Publisher.publish_many``, ``publisher_events_per_s``). Goal:
   ``events_post_ratio`` = events_post_per_s / publisher_events_per_s >= 0.5.

Last stdout line: one JSON object (docs/ENGINEERING.md, Benchmarks). The raw
series the plots are drawn from (wrk's latency percentiles, the API's requests
counted each second) go to ``loadtests/results/api.series.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from itertools import pairwise
from pathlib import Path
from typing import Any

import redis

from freshrec.settings import Settings
from freshrec.stack import LOOPBACK, BrokerProcess, RedisProcess, free_port, wait_until
from schemas.recs import (
    DATA_FIELD,
    ORDER_FIELD,
    ItemTable,
    RecItem,
    RecList,
    encode,
    encode_items,
    items_key,
    order_token,
    popular_key,
    user_key,
)

ROOT = Path(__file__).resolve().parents[1]
SERIES = ROOT / "loadtests" / "results" / "api.series.json"

PREFIX = "bench:"
#: A model version id of the store's shape (``ModelStore.new_version_id``).
MODEL_VERSION = "20260101T000000000000Z-3f9a"
CATALOG = 20_000
TEMPLATES = 1_000
LOAD_BATCH = 1_000
#: redis-benchmark replaces ``__rand_int__`` with a 12-digit zero-padded number,
#: so user ids have that shape and both tools read exactly the same keys.
USER_FORMAT = "u{:012d}"

WRK_SCRIPT = """
local users = %(users)d
local k = %(k)d
function setup(thread)
  thread:set("seed", math.random(1, 1000000))
end
function init(args)
  math.randomseed(seed)
end
function request()
  return wrk.format("GET", string.format("/recs/u%%012d?k=%%d", math.random(0, users - 1), k))
end
function done(summary, latency, requests)
  local e = summary.errors
  local p = {}
  for i = 1, 199 do p[#p + 1] = string.format("%%d", latency:percentile(i / 2)) end
  p[#p + 1] = string.format("%%d", latency:percentile(99.9))
  io.write(string.format(
    "WRK_JSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%d, " ..
    "\\"p99_us\\": %%d, \\"errors\\": %%d, \\"percentiles_us\\": [%%s]}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout, table.concat(p, ",")))
end
"""


def require(tool: str, install: str) -> str:
    path = shutil.which(tool)
    if path is None:
        sys.exit(f"bench_api: '{tool}' is not installed; install it with: {install}")
    return path


def load_lists(
    client: redis.Redis, users: int, length: int, rng: random.Random, compact: bool, because: int
) -> float:
    """Store one list per user and the popular fallback, as the worker writes them; returns
    Redis's memory growth per user list (``used_memory``, the popular list and the item
    table left out).

    Each user gets one of ``TEMPLATES`` random item lists (falling scores,
    explanations from ``because`` random history items): distinct enough for a
    read benchmark, and quick to load.
    """
    import numpy as np

    now = int(time.time() * 1000)
    catalog = [f"item-{n}" for n in range(CATALOG)]
    scores = [round(1.0 - rank / length, 6) for rank in range(length)]
    picks = [rng.sample(range(CATALOG), length) for _ in range(TEMPLATES)]
    explained: list[list[int]] = []
    for _ in range(TEMPLATES):
        history = rng.sample(range(CATALOG), because) if because else []
        explained.append([rng.choice(history) if history else -1 for _ in range(length)])
    templates = [
        tuple(
            RecItem(catalog[i], s, catalog[b] if b >= 0 else None)
            for i, s, b in zip(pick, scores, why, strict=True)
        )
        for pick, why in zip(picks, explained, strict=True)
    ]
    compact_lists = ItemTable(MODEL_VERSION, catalog).encode(
        np.array(picks, dtype=np.int64),
        np.array([scores] * TEMPLATES, dtype=np.float32),
        np.array(explained, dtype=np.int64),
        np.ones(TEMPLATES, dtype=bool),
        [now] * TEMPLATES,
        now,
    )
    order = order_token(now, MODEL_VERSION)

    def data(user: str | None, template: int) -> bytes:
        if compact and user is not None:
            stored = compact_lists[template]
            assert stored is not None
            return stored
        return encode(
            RecList(
                user=user,
                source="personal" if user else "popular",
                model_version=MODEL_VERSION,
                updated_at=now,
                written_at=now,
                items=templates[template],
            )
        )

    client.set(items_key(PREFIX, MODEL_VERSION), encode_items(catalog))
    client.hset(popular_key(PREFIX), mapping={DATA_FIELD: data(None, 0), ORDER_FIELD: order})
    before = int(client.info("memory")["used_memory"])
    pipe = client.pipeline(transaction=False)
    for n in range(users):
        user = USER_FORMAT.format(n)
        pipe.hset(
            user_key(PREFIX, user),
            mapping={DATA_FIELD: data(user, rng.randrange(TEMPLATES)), ORDER_FIELD: order},
        )
        if (n + 1) % LOAD_BATCH == 0:
            pipe.execute()
    pipe.execute()
    return (int(client.info("memory")["used_memory"]) - before) / max(1, users)


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        doc: dict[str, object] = json.loads(resp.read())
        return doc


def start_api(
    redis_url: str, port: int, workers: int, log: Path, bootstrap: str
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
    env.update(
        FRESHREC_REDIS_URL=redis_url,
        FRESHREC_KEY_PREFIX=PREFIX,
        FRESHREC_LOG_LEVEL="WARNING",
        FRESHREC_BOOTSTRAP_SERVERS=bootstrap,
        FRESHREC_TOPIC_WATCH=BENCH_TOPICS["topic_watch"],
        FRESHREC_TOPIC_RATE=BENCH_TOPICS["topic_rate"],
        FRESHREC_TOPIC_FORGET=BENCH_TOPICS["topic_forget"],
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli",
                "api",
                "--port",
                str(port),
                "--host",
                LOOPBACK,
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready() -> bool:
        if proc.poll() is not None:
            sys.exit(f"bench_api: the API exited at start:\n{log.read_text()}")
        return get_json(f"http://{LOOPBACK}:{port}/readyz")["ready"] is True

    wait_until(ready, 60, "freshrec api")
    return proc


#: The topics the events part produces to (created before the API starts producing).
BENCH_TOPICS = {
    "topic_watch": "bench-api-watch",
    "topic_rate": "bench-api-rate",
    "topic_forget": "bench-api-forget",
    "topic_dead_letter": "bench-api-dlq",
}


class RequestCounter:
    """Samples the API's ``freshrec_api_requests_total`` once a second: throughput over time."""

    def __init__(self, base: str) -> None:
        self.url = f"{base}/metrics"
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _count(self) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.url, timeout=5) as resp:
            text = resp.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "freshrec_api_requests"
            for sample in family.samples
            if sample.name.endswith("_total") and sample.labels.get("route") == "/recs/{user}"
        )

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((round(time.monotonic() - started, 3), self._count()))
            self._stop.wait(1.0)

    def __enter__(self) -> RequestCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def per_second(self) -> list[list[float]]:
        """[seconds since start, requests/s over the interval before] per sample."""
        out = []
        for (t0, c0), (t1, c1) in pairwise(self.samples):
            out.append([t1, round((c1 - c0) / max(t1 - t0, 1e-9), 1)])
        return out


def bench_events(
    base: str, settings: Settings, events: int, batch: int, connections: int
) -> dict[str, Any]:
    """events/s through ``POST /events`` and through the publisher, the same events each way."""
    import aiohttp
    import orjson

    from streams.publisher import Publisher
    from streams.topics import ensure_topics

    ensure_topics(settings)
    now = int(time.time() * 1000)
    docs = [
        {
            "type": "watch",
            "event_id": f"bench-{n}",
            "user_id": USER_FORMAT.format(n % 10_000),
            "item_id": f"item-{(n * 7919) % CATALOG}",
            "watched_s": 1200.0,
            "duration_s": 3600.0,
            "ts": now + n,
        }
        for n in range(events)
    ]
    bodies = [orjson.dumps(docs[i : i + batch]) for i in range(0, events, batch)]

    async def post_all() -> tuple[float, int]:
        queue = list(reversed(bodies))
        accepted = 0
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections)
        ) as session:
            # one warm-up request: the API's producer is made on the first POST
            async with session.post(f"{base}/events", data=bodies[0], headers=headers) as r:
                assert r.status == 200, await r.text()

            async def poster() -> None:
                nonlocal accepted
                while queue:
                    body = queue.pop()
                    async with session.post(f"{base}/events", data=body, headers=headers) as r:
                        answer = await r.json()
                        assert r.status == 200, answer
                        accepted += answer["accepted"]

            started = time.perf_counter()
            await asyncio.gather(*(poster() for _ in range(connections)))
            return time.perf_counter() - started, accepted

    post_s, accepted = asyncio.run(post_all())
    assert accepted == events, (accepted, events)

    with Publisher(settings) as publisher:
        publisher.publish_many(docs[:batch])  # the same warm-up: connect first
        started = time.perf_counter()
        report = publisher.publish_many(docs)
        publish_s = time.perf_counter() - started
    assert report.sent == events and not report.rejected
    return {
        "events_post_per_s": round(events / post_s),
        "publisher_events_per_s": round(events / publish_s),
        "events_post_ratio": round((events / post_s) / (events / publish_s), 3),
    }


def worker_pids(api: subprocess.Popen[bytes]) -> list[int]:
    """The API's worker processes (children running spawn_main, not the resource tracker)."""
    children = Path(f"/proc/{api.pid}/task/{api.pid}/children").read_text().split()
    return [
        int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far (Linux /proc)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def run_wrk(
    wrk: str, script: Path, url: str, connections: int, duration: int, threads: int
) -> dict[str, Any]:
    done = subprocess.run(
        [
            wrk,
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{duration}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    )
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            figures: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
            return figures
    sys.exit(f"bench_api: no figures in wrk's output:\n{done.stdout}\n{done.stderr}")


def run_redis_benchmark(tool: str, port: int, users: int, connections: int, count: int) -> float:
    key = user_key(PREFIX, "u__rand_int__")
    done = subprocess.run(
        [
            tool,
            "-h",
            LOOPBACK,
            "-p",
            str(port),
            "-c",
            str(connections),
            "-n",
            str(count),
            "-r",
            str(users),
            "--csv",
            "HGET",
            key,
            DATA_FIELD,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    rows = [line.split(",") for line in done.stdout.splitlines() if line.startswith('"HGET')]
    if not rows:
        sys.exit(f"bench_api: no figures in redis-benchmark's output:\n{done.stdout}")
    return float(rows[-1][1].strip('"'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--duration", type=int, default=30, help="seconds of wrk load")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--list-length", type=int, default=150)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--format",
        choices=("compact", "json"),
        default="compact",
        help="how the lists are stored: as the worker writes a model's lists, or as JSON",
    )
    parser.add_argument(
        "--because", type=int, default=0, help="history items each list's explanations name"
    )
    parser.add_argument(
        "--wrk-threads",
        type=int,
        default=1,
        help="wrk threads; one drives far more than the API serves, more only take its cores",
    )
    parser.add_argument(
        "--redis-requests", type=int, default=500_000, help="reads redis-benchmark makes"
    )
    parser.add_argument("--events", type=int, default=50_000, help="events sent each way")
    parser.add_argument("--batch", type=int, default=100, help="events per POST /events")
    parser.add_argument(
        "--post-connections", type=int, default=8, help="concurrent POST /events requests"
    )
    args = parser.parse_args()
    wrk = require("wrk", "apt-get install wrk")
    redis_benchmark = require("redis-benchmark", "apt-get install redis-tools")

    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp_name:
        tmp = Path(tmp_name)
        srv = RedisProcess(log_path=tmp / "redis.log")
        srv.start()
        broker = BrokerProcess(log_path=tmp / "broker.log")
        broker.start()
        api: subprocess.Popen[bytes] | None = None
        try:
            client = redis.Redis(host=srv.host, port=srv.port)
            started = time.perf_counter()
            bytes_per_user = load_lists(
                client,
                args.users,
                args.list_length,
                random.Random(42),
                args.format == "compact",
                args.because,
            )
            used = client.info("memory")["used_memory_human"]
            print(
                f"lists stored          {args.users:,} users x {args.list_length} items "
                f"({args.format}) in {time.perf_counter() - started:.1f}s (Redis uses {used}, "
                f"{bytes_per_user:,.0f} bytes per user)"
            )
            client.close()

            port = free_port()
            api = start_api(srv.url, port, args.workers, tmp / "api.log", broker.bootstrap_servers)
            base = f"http://{LOOPBACK}:{port}"
            probe = get_json(f"{base}/recs/{USER_FORMAT.format(args.users - 1)}?k={args.k}")
            assert probe["source"] == "personal", probe

            script = tmp / "recs.lua"
            script.write_text(WRK_SCRIPT % {"users": args.users, "k": args.k})
            threads = min(args.wrk_threads, args.connections)
            run_wrk(wrk, script, base, args.connections, min(2, args.duration), threads)  # warm-up
            workers = worker_pids(api) if args.workers > 1 else [api.pid]
            cpu_before = cpu_seconds(workers)
            with RequestCounter(base) as counter:
                figures = run_wrk(wrk, script, base, args.connections, args.duration, threads)
            cpu_us = (cpu_seconds(workers) - cpu_before) * 1e6 / max(1, figures["requests"])
            rps = figures["requests"] / (figures["duration_us"] / 1e6)
            p50_ms, p99_ms = figures["p50_us"] / 1000, figures["p99_us"] / 1000

            redis_rps = run_redis_benchmark(
                redis_benchmark, srv.port, args.users, args.connections, args.redis_requests
            )
            events = bench_events(
                base,
                Settings(bootstrap_servers=broker.bootstrap_servers).replace(**BENCH_TOPICS),
                args.events,
                args.batch,
                args.post_connections,
            )
        finally:
            if api is not None and api.poll() is None:
                api.send_signal(signal.SIGTERM)
                api.wait(60)
            srv.stop()
            broker.stop()

    print(
        f"API workers           {args.workers}, wrk {threads} thread(s) {args.connections} "
        f"connections for {args.duration}s, k={args.k}"
    )
    print(
        f"API                   {rps:12,.0f} req/s   p50 {p50_ms:.2f} ms   p99 {p99_ms:.2f} ms   "
        f"errors {figures['errors']}   CPU {cpu_us:.0f} us/request"
    )
    print(
        f"redis-benchmark HGET  {redis_rps:12,.0f} req/s   (ceiling, same keys, "
        f"{args.connections} connections)"
    )
    print(
        f"POST /events          {events['events_post_per_s']:12,.0f} events/s   (batches of "
        f"{args.batch}, {args.post_connections} connections, acknowledged by the broker)"
    )
    print(
        f"publisher             {events['publisher_events_per_s']:12,.0f} events/s   "
        f"(Publisher.publish_many, the same {args.events:,} events)"
    )
    SERIES.parent.mkdir(parents=True, exist_ok=True)
    SERIES.write_text(
        json.dumps(
            {
                "latency_percentiles": [i / 2 for i in range(1, 200)] + [99.9],
                "latency_us": figures["percentiles_us"],
                "requests_per_s_over_time": counter.per_second(),
            }
        )
    )
    print(
        json.dumps(
            {
                "bench": "api",
                "requests_per_s": round(rps),
                "p50_ms": round(p50_ms, 2),
                "p99_ms": round(p99_ms, 2),
                "redis_benchmark_gets_per_s": round(redis_rps),
                "ratio": round(rps / redis_rps, 3),
                "api_cpu_us_per_request": round(cpu_us),
                "redis_bytes_per_user": round(bytes_per_user),
                "list_format": args.format,
                **events,
            }
        )
    )


if __name__ == "__main__":
    main()
