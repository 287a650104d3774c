"""The catalog's costs on 20k items: the similar-items precompute, the new endpoints under load,
and the time from a takedown's publish to its item gone from every endpoint.

    python loadtests/bench_items.py [--items 20000] [--factors 64] [--similar 50]
                                    [--users 20000] [--connections 200] [--duration 10]
                                    [--workers CORES] [--k 10] [--takedowns 20]

1. Precompute (``models.similar.similar_items``) on random factors of
   ``--items`` x ``--factors``, against the matrix products alone (the same
   blocked products into one buffer, no top-k) in the same run:
   ``similar_ratio`` = items/s of the whole / items/s of the products (goal >= 0.5).
2. Starts redis-server, a broker, ``freshrec api --workers N`` and a worker (its
   catalog agent writes the item table), stores ``--users`` lists the way the
   worker does (``bench_api.load_lists``), the similar lists of the same items
   (``retrain.similar_lists``) and an item record with tags for every item, then
   runs ``wrk`` with ``--connections`` connections for ``--duration`` seconds each
   (in ``--rounds`` interleaved slices, so that the machine's other load weighs
   on all alike) on plain ``GET /recs`` (the baseline), ``GET /similar/<random
   item>`` and ``GET /recs`` filtered by ``?tags=`` (half of the catalog's tags):
   ``similar_req_ratio`` (goal >= 0.9) and ``filtered_req_ratio`` (goal >= 0.8),
   beside each one's API CPU time per request (``*_cpu_us_per_request``: hardly
   moved by the machine's other load, the figure to compare between changes).
3. ``--takedowns`` times: a long-lived ``Publisher`` publishes one item
   unavailable, and the time until the item is in none of the answers of
   ``GET /recs`` for a user holding it, the popular fallback, ``GET /similar`` of
   an item whose neighbour it is and ``POST /recs`` of that item (asked in turn,
   again and again) is one sample; then the item is made available again.
   ``takedown_p50_ms``, ``takedown_p99_ms`` (goal p99 <= 1,000 ms).

Last stdout line: one JSON object (docs/ENGINEERING.md, Benchmarks); the
takedown samples go to ``loadtests/results/items.series.json`` for the plot.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import redis
from bench_api import (
    CATALOG,
    LOOPBACK,
    MODEL_VERSION,
    PREFIX,
    USER_FORMAT,
    cpu_seconds,
    get_json,
    load_lists,
    require,
    run_wrk,
    start_api,
    worker_pids,
)

from freshrec.settings import Settings
from freshrec.stack import BrokerProcess, RedisProcess, free_port, wait_until
from models.ids import IdMap
from models.similar import similar_items, unit_rows
from models.topk import BLOCK_SCORES
from models.version import ModelVersion
from retrain.similar_lists import write_similar_lists
from schemas.items import ItemRecord, encode_record, items_hash_key
from streams.publisher import Publisher
from streams.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[1]
SERIES = ROOT / "loadtests" / "results" / "items.series.json"
TAGS = 20

WRK_SCRIPT = """
local n = %(n)d
local k = %(k)d
local path = "%(path)s"
local query = "%(query)s"
function setup(thread)
  thread:set("seed", math.random(1, 1000000))
end
function init(args)
  math.randomseed(seed)
end
function request()
  return wrk.format("GET", string.format(path, math.random(0, n - 1)) .. "?k=" .. k .. query)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"p50_us\\": %%d, " ..
    "\\"p99_us\\": %%d, \\"errors\\": %%d, \\"status_errors\\": %%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout, e.status))
end
"""


def best_of(runs: int, work: Any) -> float:
    """The shortest of ``runs`` timings of ``work()``, in seconds."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def products_only(factors: np.ndarray) -> None:
    """The baseline: the blocked products :func:`models.topk.top_k` makes, and nothing else."""
    unit = unit_rows(factors)
    items_t = np.ascontiguousarray(unit.T)
    n = unit.shape[0]
    block = max(1, BLOCK_SCORES // n)
    buffer = np.empty((block, n), dtype=np.float32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        np.matmul(unit[start:stop], items_t, out=buffer[: stop - start])


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
    env.update(settings.as_env())
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def post_json(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def ids(body: Any) -> list[str]:
    return [i["item"] for i in body["items"]]


def holds_user(base: str, item: str, user: str) -> bool:
    return item in ids(get_json(f"{base}/recs/{user}?k=10"))


def holds(base: str, item: str, user: str, near: str) -> bool:
    """Whether any endpoint's answer still holds ``item``."""
    return any(
        item in ids(body)
        for body in (
            get_json(f"{base}/recs/{user}?k=10"),
            get_json(f"{base}/recs/nobody?k=10"),
            get_json(f"{base}/similar/{near}?k=10"),
            post_json(f"{base}/recs?k=10", {"items": [near]}),
        )
    )


def neighbour_of(base: str, item: str) -> str:
    """An item whose similar list (top 10) holds ``item``: among ``item``'s own neighbours,
    as cosine is symmetric (its first neighbour when none of them ranks it that high)."""
    mine = ids(get_json(f"{base}/similar/{item}?k=10"))
    for other in mine:
        if item in ids(get_json(f"{base}/similar/{other}?k=10")):
            return other
    return mine[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=CATALOG)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--similar", type=int, default=50, help="neighbours stored per item")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument(
        "--duration", type=int, default=12, help="seconds of wrk load per endpoint, in all"
    )
    parser.add_argument("--rounds", type=int, default=4, help="interleaved slices per endpoint")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--takedowns", type=int, default=20)
    args = parser.parse_args()
    if args.items != CATALOG:
        parser.error(f"--items must be {CATALOG}: the stored lists (bench_api) name that many")
    wrk = require("wrk", "apt-get install wrk")
    slice_s = max(1, args.duration // args.rounds)

    rng = np.random.default_rng(7)
    factors = rng.normal(size=(args.items, args.factors)).astype(np.float32)
    similar_s = best_of(2, lambda: similar_items(factors, args.similar))
    gemm_s = best_of(2, lambda: products_only(factors))
    similar_per_s, gemm_per_s = args.items / similar_s, args.items / gemm_s
    print(f"similar precompute    {similar_per_s:12,.0f} items/s ({similar_s:.2f} s)")
    print(f"products alone        {gemm_per_s:12,.0f} items/s ({gemm_s:.2f} s)")

    names = [f"item-{n}" for n in range(args.items)]
    version = ModelVersion(MODEL_VERSION, factors, IdMap(names), params={})
    with tempfile.TemporaryDirectory(prefix="bench-items-") as tmp_name:
        tmp = Path(tmp_name)
        srv = RedisProcess(log_path=tmp / "redis.log")
        srv.start()
        broker = BrokerProcess(log_path=tmp / "broker.log")
        broker.start()
        settings = Settings(
            bootstrap_servers=broker.bootstrap_servers,
            redis_url=srv.url,
            key_prefix=PREFIX,
            topic_partitions=2,
            worker_web_port=free_port(),
            model_store=str(tmp / "models"),
            data_dir=str(tmp / "worker"),
            batch_max_wait_s=0.02,
            log_level="WARNING",
        )
        ensure_topics(settings)
        api = worker = None
        try:
            client = redis.Redis(host=srv.host, port=srv.port)
            load_lists(client, args.users, 150, random.Random(42), True, 0)
            write_similar_lists(client, PREFIX, version, args.similar)
            with client.pipeline(transaction=False) as pipe:
                for n, item in enumerate(names):
                    record = ItemRecord(item, 1, f"Film {n}", (f"tag-{n % TAGS}",))
                    pipe.hset(items_hash_key(PREFIX), item, encode_record(record))
                pipe.execute()
            worker = start_worker(settings, tmp / "worker.log")
            port = free_port()
            api = start_api(srv.url, port, args.workers, tmp / "api.log", broker.bootstrap_servers)
            base = f"http://{LOOPBACK}:{port}"
            with Publisher(settings) as publisher:  # the catalog's revision: the API reads it
                publisher.publish(ItemRecord("warm-up", int(time.time() * 1000)))
                wait_until(
                    lambda: bool(get_json(f"{base}/recs/nobody?tags=tag-0")["items"]), 30, "tags"
                )

                tags = ",".join(f"tag-{n}" for n in range(0, TAGS, 2))
                runs = {
                    "recs": ("/recs/u%012d", args.users, ""),
                    "similar": ("/similar/item-%d", args.items, ""),
                    "filtered": ("/recs/u%012d", args.users, f"&tags={tags}"),
                }
                errors = 0  # wrk's: timeouts (5 s) on a machine short of CPU, non-2xx answers
                requests = dict.fromkeys(runs, 0)
                seconds = dict.fromkeys(runs, 0.0)
                cpu = dict.fromkeys(runs, 0.0)
                workers = worker_pids(api) if args.workers > 1 else [api.pid]
                scripts = {}
                for name, (path, n, query) in runs.items():
                    scripts[name] = tmp / f"{name}.lua"
                    scripts[name].write_text(
                        WRK_SCRIPT % {"n": n, "k": args.k, "path": path, "query": query}
                    )
                    run_wrk(wrk, scripts[name], base, args.connections, 2, 1)  # warm-up
                # Interleaved slices, so that the machine's other load drifting over the run
                # weighs on every endpoint alike.
                for _ in range(args.rounds):
                    for name in runs:
                        before = cpu_seconds(workers)
                        figures = run_wrk(wrk, scripts[name], base, args.connections, slice_s, 1)
                        cpu[name] += cpu_seconds(workers) - before
                        assert figures["status_errors"] == 0, figures  # not 2xx: a bug
                        errors += figures["errors"]
                        requests[name] += figures["requests"]
                        seconds[name] += figures["duration_us"] / 1e6
                rates = {name: requests[name] / seconds[name] for name in runs}
                cpu_us = {name: cpu[name] * 1e6 / max(1, requests[name]) for name in runs}
                for name in runs:
                    print(
                        f"GET {name:18s}{rates[name]:12,.0f} req/s   "
                        f"CPU {cpu_us[name]:.0f} us/request"
                    )

                samples = []
                user = USER_FORMAT.format(0)
                for round_ in range(args.takedowns):
                    item = ids(get_json(f"{base}/recs/{user}?k=10"))[round_ % 10]
                    near = neighbour_of(base, item)
                    started = time.perf_counter()
                    publisher.publish(ItemRecord(item, int(time.time() * 1000), available=False))
                    while holds(base, item, user, near):
                        pass
                    samples.append((time.perf_counter() - started) * 1000)
                    publisher.publish(ItemRecord(item, int(time.time() * 1000)))
                    wait_until(partial(holds_user, base, item, user), 10, "back")
        finally:
            for proc in (api, worker):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(60)
            srv.stop()
            broker.stop()

    p50, p99 = (float(np.percentile(samples, q)) for q in (50, 99))
    print(f"takedown              p50 {p50:.0f} ms   p99 {p99:.0f} ms ({len(samples)} samples)")
    SERIES.parent.mkdir(parents=True, exist_ok=True)
    SERIES.write_text(json.dumps({"takedown_ms": samples}) + "\n")
    print(
        json.dumps(
            {
                "bench": "items",
                "items": args.items,
                "similar_items_per_s": round(similar_per_s),
                "similar_gemm_items_per_s": round(gemm_per_s),
                "similar_ratio": round(similar_per_s / gemm_per_s, 3),
                "similar_req_per_s": round(rates["similar"]),
                "recs_req_per_s": round(rates["recs"]),
                "filtered_req_per_s": round(rates["filtered"]),
                "similar_req_ratio": round(rates["similar"] / rates["recs"], 3),
                "filtered_req_ratio": round(rates["filtered"] / rates["recs"], 3),
                "takedown_p50_ms": round(p50, 1),
                "takedown_p99_ms": round(p99, 1),
                "recs_cpu_us_per_request": round(cpu_us["recs"]),
                "similar_cpu_us_per_request": round(cpu_us["similar"]),
                "filtered_cpu_us_per_request": round(cpu_us["filtered"]),
                "http_errors": errors,
                "connections": args.connections,
                "api_workers": args.workers,
            }
        )
    )


if __name__ == "__main__":
    main()
