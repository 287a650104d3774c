"""HTTP load on ``GET /recs/<user>`` beside ``redis-benchmark`` on the same keys, in one run.

    python loadtests/bench_api.py [--users 100000] [--connections 200] [--duration 30]
                                  [--workers CORES] [--list-length 150] [--k 10]
                                  [--wrk-threads 1]

Starts its own redis-server and ``freshrec api --workers N`` on free loopback
ports, stores ``--users`` lists of ``--list-length`` items the way the worker
does (``schemas.recs.encode``), then:

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
compare between changes. Last stdout line: one JSON object
(docs/ENGINEERING.md, Benchmarks).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import redis

from freshrec.stack import LOOPBACK, RedisProcess, free_port, wait_until
from schemas.recs import DATA_FIELD, ORDER_FIELD, RecItem, RecList, encode, popular_key, user_key

PREFIX = "bench:"
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
  io.write(string.format(
    "WRK_JSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%d, " ..
    "\\"p99_us\\": %%d, \\"errors\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def require(tool: str, install: str) -> str:
    path = shutil.which(tool)
    if path is None:
        sys.exit(f"bench_api: '{tool}' is not installed; install it with: {install}")
    return path


def load_lists(client: redis.Redis, users: int, length: int, rng: random.Random) -> None:
    """Store one list per user and the popular fallback, as the worker writes them.

    Each user gets one of ``TEMPLATES`` random item lists (falling scores):
    distinct enough for a read benchmark, and quick to load.
    """
    now = int(time.time() * 1000)
    catalog = [f"item-{n}" for n in range(CATALOG)]
    scores = [round(1.0 - rank / length, 6) for rank in range(length)]
    templates = [
        tuple(RecItem(i, s) for i, s in zip(rng.sample(catalog, length), scores, strict=True))
        for _ in range(TEMPLATES)
    ]

    def recs(user: str | None) -> RecList:
        return RecList(
            user=user,
            source="personal" if user else "popular",
            model_version="bench",
            updated_at=now,
            written_at=now,
            items=templates[rng.randrange(TEMPLATES)],
        )

    pipe = client.pipeline(transaction=False)
    for n in range(users):
        user = USER_FORMAT.format(n)
        stored = recs(user)
        pipe.hset(
            user_key(PREFIX, user), mapping={DATA_FIELD: encode(stored), ORDER_FIELD: stored.order}
        )
        if (n + 1) % LOAD_BATCH == 0:
            pipe.execute()
    popular = recs(None)
    pipe.hset(
        popular_key(PREFIX), mapping={DATA_FIELD: encode(popular), ORDER_FIELD: popular.order}
    )
    pipe.execute()


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        doc: dict[str, object] = json.loads(resp.read())
        return doc


def start_api(redis_url: str, port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
    env.update(
        FRESHREC_REDIS_URL=redis_url, FRESHREC_KEY_PREFIX=PREFIX, FRESHREC_LOG_LEVEL="WARNING"
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
) -> dict[str, int]:
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
            figures: dict[str, int] = json.loads(line.removeprefix("WRK_JSON "))
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
        "--wrk-threads",
        type=int,
        default=1,
        help="wrk threads; one drives far more than the API serves, more only take its cores",
    )
    parser.add_argument(
        "--redis-requests", type=int, default=500_000, help="reads redis-benchmark makes"
    )
    args = parser.parse_args()
    wrk = require("wrk", "apt-get install wrk")
    redis_benchmark = require("redis-benchmark", "apt-get install redis-tools")

    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp_name:
        tmp = Path(tmp_name)
        srv = RedisProcess(log_path=tmp / "redis.log")
        srv.start()
        api: subprocess.Popen[bytes] | None = None
        try:
            client = redis.Redis(host=srv.host, port=srv.port)
            started = time.perf_counter()
            load_lists(client, args.users, args.list_length, random.Random(42))
            used = client.info("memory")["used_memory_human"]
            print(
                f"lists stored          {args.users:,} users x {args.list_length} items "
                f"in {time.perf_counter() - started:.1f}s (Redis uses {used})"
            )
            client.close()

            port = free_port()
            api = start_api(srv.url, port, args.workers, tmp / "api.log")
            base = f"http://{LOOPBACK}:{port}"
            probe = get_json(f"{base}/recs/{USER_FORMAT.format(args.users - 1)}?k={args.k}")
            assert probe["source"] == "personal", probe

            script = tmp / "recs.lua"
            script.write_text(WRK_SCRIPT % {"users": args.users, "k": args.k})
            threads = min(args.wrk_threads, args.connections)
            run_wrk(wrk, script, base, args.connections, min(2, args.duration), threads)  # warm-up
            workers = worker_pids(api) if args.workers > 1 else [api.pid]
            cpu_before = cpu_seconds(workers)
            figures = run_wrk(wrk, script, base, args.connections, args.duration, threads)
            cpu_us = (cpu_seconds(workers) - cpu_before) * 1e6 / max(1, figures["requests"])
            rps = figures["requests"] / (figures["duration_us"] / 1e6)
            p50_ms, p99_ms = figures["p50_us"] / 1000, figures["p99_us"] / 1000

            redis_rps = run_redis_benchmark(
                redis_benchmark, srv.port, args.users, args.connections, args.redis_requests
            )
        finally:
            if api is not None and api.poll() is None:
                api.send_signal(signal.SIGTERM)
                api.wait(60)
            srv.stop()

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
        json.dumps(
            {
                "bench": "api",
                "requests_per_s": round(rps),
                "p50_ms": round(p50_ms, 2),
                "p99_ms": round(p99_ms, 2),
                "redis_benchmark_gets_per_s": round(redis_rps),
                "ratio": round(rps / redis_rps, 3),
                "api_cpu_us_per_request": round(cpu_us),
            }
        )
    )


if __name__ == "__main__":
    main()
